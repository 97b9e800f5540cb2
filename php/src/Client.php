<?php

declare(strict_types=1);

namespace Cmesh\Run;

/**
 * Runs the cmesh-run binary for PHP code, typically a PHP-FPM request that must start a long job
 * and return at once.
 *
 * The binary is run with proc_open() and an argv array: no shell, nothing to quote. Its
 * environment is only the `env` given to the constructor, so nothing of the request or the
 * pool (clear_env, env[...] secrets, HTTP_* variables) reaches cmesh-run or the job; PATH is
 * not needed because the binary is named by absolute path.
 */
final class Client
{
    /** A job ID as SPEC.md defines it. */
    public const ID_PATTERN = '/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/D';

    /** Exit status to error code, for when cmesh-run printed no JSON error. */
    private const CODES = [1 => 'internal', 2 => 'usage', 3 => 'not_found', 4 => 'backend_unavailable', 5 => 'denied'];

    /** @var array<string, string> */
    private readonly array $env;

    /**
     * @param string                $binary   absolute path of cmesh-run (PHP-FPM with clear_env has no PATH)
     * @param string|null           $stateDir passed as --state-dir (refused by cmesh-run under sudo)
     * @param string|null           $sudoUser run `/usr/bin/sudo -n -u USER BINARY ...` (needs a sudoers rule)
     * @param array<string, string> $env      environment of the cmesh-run process itself, e.g.
     *                                        ['CMESH_RUN_CONFIG' => '/etc/x.toml']; the job's own
     *                                        variables go in schedule()'s `env` option
     */
    public function __construct(
        private readonly string $binary = '/usr/local/bin/cmesh-run',
        private readonly ?string $stateDir = null,
        private readonly ?string $sudoUser = null,
        array $env = [],
    ) {
        if (!str_starts_with($binary, '/')) {
            throw self::usage("cmesh-run binary must be an absolute path, got \"$binary\"");
        }
        $clean = [];
        foreach ($env as $key => $value) {
            $clean[self::envKey($key)] = self::arg($value, "env[$key]");
        }
        $this->env = $clean;
    }

    /**
     * Starts a job and returns at once with its job object (id, state, command, output_path, ...).
     *
     * @param list<string>         $argv    the program and its arguments, run as is (no shell);
     *                                      leave empty when using a profile
     * @param array<string, mixed> $options name (string), unique (bool), workdir (string),
     *                                      env (array<string, string>), timeout (seconds or "15m"),
     *                                      retries (int), backend (string),
     *                                      profile (string) with args (array<string, string>)
     *
     * @return array<string, mixed> the job object; "reused" is true when `unique` found a live job
     *
     * @throws CmeshRunException e.g. code backend_unavailable when at refuses the pool's user
     */
    public function schedule(array $argv = [], array $options = []): array
    {
        $args = ['schedule', '--json'];
        foreach ($options as $key => $value) {
            switch ($key) {
                case 'name':
                case 'workdir':
                case 'backend':
                case 'profile':
                    array_push($args, "--$key", self::arg($value, $key));
                    break;
                case 'unique':
                    if ($value) {
                        $args[] = '--unique';
                    }
                    break;
                case 'timeout':
                    array_push($args, '--timeout', self::duration($value, $key));
                    break;
                case 'retries':
                    if (!is_int($value) || $value < 0) {
                        throw self::usage('option retries must be a non-negative int');
                    }
                    array_push($args, '--retries', (string) $value);
                    break;
                case 'env':
                case 'args':
                    if (!is_array($value)) {
                        throw self::usage("option $key must be an array of KEY => value");
                    }
                    foreach ($value as $k => $v) {
                        $flag = $key === 'env' ? '--env' : '--arg';
                        array_push($args, $flag, self::envKey($k) . '=' . self::arg($v, "{$key}[$k]"));
                    }
                    break;
                default:
                    throw self::usage("unknown schedule option \"$key\"");
            }
        }
        if (isset($options['profile'])) {
            if ($argv !== []) {
                throw self::usage('give either a command or a profile, not both');
            }
        } else {
            if (isset($options['args'])) {
                throw self::usage('option args needs a profile');
            }
            if ($argv === [] || !array_is_list($argv)) {
                throw self::usage('nothing to run: give the program and its arguments as a list');
            }
            $args[] = '--';
            foreach ($argv as $i => $word) {
                $args[] = self::arg($word, "argv[$i]");
            }
        }
        return $this->json($args);
    }

    /**
     * Returns the job object: id, name, state, exit_code, command, workdir, backend, backend_ref,
     * user, pid, attempt, created_at, started_at, finished_at, output_path.
     *
     * @return array<string, mixed>
     *
     * @throws CmeshRunException code not_found for an unknown job, usage for a malformed ID
     */
    public function status(string $id): array
    {
        return $this->json(['status', '--json', self::id($id)]);
    }

    /**
     * Returns up to $limit bytes of what the job printed, starting at byte $offset, as
     * ['data' => string, 'next_offset' => int, 'done' => bool, 'state' => string, ...].
     * Poll with next_offset until done is true: then nothing more will ever come.
     *
     * @return array<string, mixed>
     *
     * @throws CmeshRunException
     */
    public function log(string $id, int $offset = 0, int $limit = 1048576): array
    {
        if ($offset < 0 || $limit < 1) {
            throw self::usage('log offset must be >= 0 and limit >= 1');
        }
        return $this->json(['log', '--json', '--offset', (string) $offset, '--limit', (string) $limit, self::id($id)]);
    }

    /**
     * Blocks until the job has finished and returns its exit code; 124 when $timeoutSeconds
     * passed first, 125 when the job was lost or canceled without one. Keep the timeout below
     * the pool's request_terminate_timeout when calling this from a request.
     *
     * @throws CmeshRunException
     */
    public function wait(string $id, ?float $timeoutSeconds = null): int
    {
        $args = ['wait'];
        if ($timeoutSeconds !== null) {
            array_push($args, '--timeout', self::duration($timeoutSeconds, 'timeout'));
        }
        $args[] = self::id($id);
        [$status, $stdout, $stderr] = $this->run($args);
        if ($status === 0 || $status > 5) {
            return $status;
        }
        // 1-5 are also cmesh-run's error statuses: believe the job's record, not the number.
        $job = $this->status($id);
        $ended = !in_array($job['state'] ?? null, ['queued', 'waiting', 'running'], true);
        if ($ended && ($job['exit_code'] ?? null) === $status) {
            return $status;
        }
        throw self::failure($status, $stdout, $stderr);
    }

    /**
     * Cancels a job: a queued one is removed from its backend, a running one gets SIGTERM (its
     * whole process tree), then SIGKILL after $graceSeconds (cmesh-run's default: 10). A
     * finished job is left as it is.
     *
     * @throws CmeshRunException
     */
    public function cancel(string $id, ?float $graceSeconds = null): void
    {
        $args = ['cancel'];
        if ($graceSeconds !== null) {
            array_push($args, '--grace', self::duration($graceSeconds, 'grace'));
        }
        $args[] = self::id($id);
        [$status, $stdout, $stderr] = $this->run($args);
        if ($status !== 0) {
            throw self::failure($status, $stdout, $stderr);
        }
    }

    /**
     * Runs cmesh-run and decodes the JSON object it printed.
     *
     * @param list<string> $args
     *
     * @return array<string, mixed>
     */
    private function json(array $args): array
    {
        [$status, $stdout, $stderr] = $this->run($args);
        if ($status !== 0) {
            throw self::failure($status, $stdout, $stderr);
        }
        $data = json_decode($stdout, true);
        if (!is_array($data)) {
            throw new CmeshRunException('internal', $status, 'cmesh-run printed no JSON object: ' . self::excerpt($stdout . $stderr));
        }
        return $data;
    }

    /**
     * Runs cmesh-run with $args and returns [exit status, stdout, stderr].
     *
     * @param list<string> $args
     *
     * @return array{int, string, string}
     */
    private function run(array $args): array
    {
        $cmd = $this->sudoUser === null ? [$this->binary] : ['/usr/bin/sudo', '-n', '-u', $this->sudoUser, $this->binary];
        if ($this->stateDir !== null) {
            array_push($cmd, '--state-dir', $this->stateDir);
        }
        $cmd = [...$cmd, ...$args];

        $spec = [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']];
        $proc = proc_open($cmd, $spec, $pipes, null, $this->env);
        if (!is_resource($proc)) {
            throw new CmeshRunException('internal', 1, "cannot start {$cmd[0]}");
        }

        // Read both pipes as data comes, so that neither can fill up and block the other.
        $buf = [1 => '', 2 => ''];
        $open = [1 => $pipes[1], 2 => $pipes[2]];
        foreach ($open as $pipe) {
            stream_set_blocking($pipe, false);
        }
        while ($open !== []) {
            $read = array_values($open);
            $write = $except = null;
            if (@stream_select($read, $write, $except, 60) === false) {
                usleep(10000); // interrupted by a signal: try again
            }
            foreach ($open as $i => $pipe) {
                $chunk = fread($pipe, 65536);
                if ($chunk !== false) {
                    $buf[$i] .= $chunk;
                }
                if (feof($pipe)) {
                    fclose($pipe);
                    unset($open[$i]);
                }
            }
        }
        $status = proc_close($proc);
        if ($status === 127 && $buf[1] === '') {
            throw new CmeshRunException('internal', 127, "cannot execute {$cmd[0]}: " . self::excerpt($buf[2]));
        }
        return [$status, $buf[1], $buf[2]];
    }

    /** Builds the exception for a failed run from the JSON error on stdout, else from stderr. */
    private static function failure(int $status, string $stdout, string $stderr): CmeshRunException
    {
        $lines = preg_split('/\R/', trim($stdout));
        $data = json_decode((string) end($lines), true);
        $error = is_array($data) && is_array($data['error'] ?? null) ? $data['error'] : null;
        if ($error !== null && is_string($error['code'] ?? null)) {
            return new CmeshRunException($error['code'], $status, (string) ($error['message'] ?? ''));
        }
        $message = trim($stderr) !== '' ? trim($stderr) : "cmesh-run exited with status $status";
        return new CmeshRunException(self::CODES[$status] ?? 'internal', $status, $message);
    }

    private static function id(string $id): string
    {
        if (preg_match(self::ID_PATTERN, $id) !== 1) {
            throw self::usage('invalid job ID "' . self::excerpt($id) . '"');
        }
        return $id;
    }

    private static function envKey(mixed $key): string
    {
        if (!is_string($key) || preg_match('/^[^=\0]+$/D', $key) !== 1) {
            throw self::usage('invalid variable or argument name "' . self::excerpt((string) $key) . '"');
        }
        return $key;
    }

    /** A command-line word: a string (or number) without NUL bytes, which argv cannot carry. */
    private static function arg(mixed $value, string $what): string
    {
        if (is_int($value) || is_float($value)) {
            $value = (string) $value;
        }
        if (!is_string($value) || str_contains($value, "\0")) {
            throw self::usage("$what must be a string without NUL bytes");
        }
        return $value;
    }

    /** Seconds (int or float) become "12.5s"; strings such as "15m" are passed as they are. */
    private static function duration(mixed $value, string $what): string
    {
        if (is_string($value) && $value !== '') {
            return self::arg($value, $what);
        }
        if ((!is_int($value) && !is_float($value)) || $value < 0 || !is_finite((float) $value)) {
            throw self::usage("$what must be a number of seconds >= 0 or a duration such as \"15m\"");
        }
        return rtrim(rtrim(sprintf('%.3F', $value), '0'), '.') . 's';
    }

    private static function usage(string $message): CmeshRunException
    {
        return new CmeshRunException('usage', 2, $message);
    }

    private static function excerpt(string $s): string
    {
        $s = trim($s);
        return strlen($s) > 200 ? substr($s, 0, 200) . '...' : $s;
    }
}
