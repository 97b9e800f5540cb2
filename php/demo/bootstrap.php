<?php
/*
 * Shared by the endpoints in public/: the settings, the client, and JSON answers.
 * Lives outside the document root, like config.php and build.sh.
 */

declare(strict_types=1);

use Cmesh\Run\Client;
use Cmesh\Run\CmeshRunException;

const DEMO_JOB_NAME = 'demo-build';
const DEMO_STATES_FINISHED = ['succeeded', 'failed', 'canceled', 'timed_out', 'lost'];

function demo_config(): array
{
    static $config = null;
    return $config ??= require __DIR__ . '/config.php';
}

$demoConfig = demo_config();
require $demoConfig['client_src'] . '/CmeshRunException.php';
require $demoConfig['client_src'] . '/Client.php';

function demo_client(): Client
{
    $c = demo_config();
    return new Client(binary: $c['binary'], stateDir: $c['state_dir'], env: $c['env']);
}

/** The build's command: the shell runs build.sh; no PATH needed, everything absolute. */
function demo_build_command(int $steps, int $failAt): array
{
    return ['/bin/sh', __DIR__ . '/build.sh', (string) $steps, (string) $failAt];
}

/** What the page needs of a job object, plus how long it ran (or has been running). */
function job_summary(array $job): array
{
    $seconds = null;
    if (is_string($job['started_at'] ?? null)) {
        $start = (float) (new DateTimeImmutable($job['started_at']))->format('U.u');
        $end = is_string($job['finished_at'] ?? null)
            ? (float) (new DateTimeImmutable($job['finished_at']))->format('U.u')
            : microtime(true);
        $seconds = round(max(0.0, $end - $start), 1);
    }
    return [
        'id' => $job['id'],
        'state' => $job['state'],
        'finished' => in_array($job['state'], DEMO_STATES_FINISHED, true),
        'exit_code' => $job['exit_code'] ?? null,
        'signal' => $job['signal'] ?? null,
        'started_at' => $job['started_at'] ?? null,
        'finished_at' => $job['finished_at'] ?? null,
        'seconds' => $seconds,
    ];
}

function send_json(int $status, array $body): never
{
    http_response_code($status);
    header('Content-Type: application/json; charset=utf-8');
    header('Cache-Control: no-store');
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
    exit;
}

function send_error(int $status, string $code, string $message): never
{
    send_json($status, ['error' => ['code' => $code, 'message' => $message]]);
}

/** A refusal or failure of cmesh-run, with the HTTP status that fits its code. */
function send_cmesh_error(CmeshRunException $e): never
{
    $status = match ($e->getErrorCode()) {
        'usage' => 400,
        'denied' => 403,
        'not_found' => 404,
        'backend_unavailable' => 503,
        default => 500,
    };
    send_error($status, $e->getErrorCode(), $e->getMessage());
}

function require_post(): void
{
    if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
        header('Allow: POST');
        send_error(405, 'usage', 'use POST');
    }
}

set_exception_handler(function (Throwable $e): void {
    error_log('cmesh-run demo: ' . $e);
    send_error(500, 'internal', 'internal error: ' . $e->getMessage());
});
