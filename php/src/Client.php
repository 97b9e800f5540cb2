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
 *
 * Spool mode (`mode: 'spool'`) is for pools where exec, shell_exec, system, passthru, proc_open and
 * popen are all disabled: nothing is executed. schedule() writes a request file into the state
 * dir's spool/incoming and waits for the answer of a `cmesh-run worker` (or `cmesh-run drain`);
 * status(), log() and wait() read the job's record and output file directly. See README.md.
 */
final class Client
{
    /** A job ID as SPEC.md defines it. */
    public const ID_PATTERN = '/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/D';

    /** A queue name, as the config's [queues.NAME] must spell it. */
    public const QUEUE_PATTERN = '/^[a-z0-9][a-z0-9_-]{0,63}$/D';

    /** Exit status to error code, for when cmesh-run printed no JSON error. */
    private const CODES = [1 => 'internal', 2 => 'usage', 3 => 'not_found', 4 => 'backend_unavailable', 5 => 'denied'];

    /** Error code to exit status, as cmesh-run would have exited (spool mode reads codes only). */
    private const STATUSES = ['internal' => 1, 'usage' => 2, 'not_found' => 3, 'backend_unavailable' => 4, 'denied' => 5];

    /** The longest marker the wrapper writes; readers look that far around a range (status.MaxMarkerLen). */
    private const MAX_MARKER_LEN = 256;

    /** Record fields that are cmesh-run's own business, never part of the job object. */
    private const PRIVATE_FIELDS = ['nonce', 'spec_mac', 'wrapper_pid', 'wrapper_start', 'pid_start', 'boot_id', 'start_offset', 'cancel',
        'waiting_for', 'profile_name', 'profile_args', 'env', 'unique'];

    /** @var array<string, string> */
    private readonly array $env;

    private readonly bool $spool;

    /**
     * @param string                $binary       absolute path of cmesh-run (PHP-FPM with clear_env has no PATH)
     * @param string|null           $stateDir     passed as --state-dir (refused by cmesh-run under sudo);
     *                                            required in spool mode: the state dir the worker serves
     * @param string|null           $sudoUser     run `/usr/bin/sudo -n -u USER BINARY ...` (needs a sudoers rule)
     * @param array<string, string> $env          environment of the cmesh-run process itself, e.g.
     *                                            ['CMESH_RUN_CONFIG' => '/etc/x.toml']; the job's own
     *                                            variables go in schedule()'s `env` option
     * @param string                $mode         'exec' (run the binary with proc_open) or 'spool' (run
     *                                            nothing: request files for a worker, direct reads)
     * @param float                 $spoolTimeout spool mode: how long schedule() waits for the worker's
     *                                            answer, in seconds (a worker under supervisor answers
     *                                            within about a second; a drain from cron within a minute)
     */
    public function __construct(
        private readonly string $binary = '/usr/local/bin/cmesh-run',
        private readonly ?string $stateDir = null,
        private readonly ?string $sudoUser = null,
        array $env = [],
        string $mode = 'exec',
        private readonly float $spoolTimeout = 10.0,
    ) {
        if ($mode !== 'exec' && $mode !== 'spool') {
            throw self::usage("mode must be 'exec' or 'spool', got \"" . self::excerpt($mode) . '"');
        }
        $this->spool = $mode === 'spool';
        if (!str_starts_with($binary, '/')) {
            throw self::usage("cmesh-run binary must be an absolute path, got \"$binary\"");
        }
        $clean = [];
        foreach ($env as $key => $value) {
            $clean[self::envKey($key)] = self::arg($value, "env[$key]");
        }
        $this->env = $clean;
        if (!$this->spool) {
            return;
        }
        if ($stateDir === null || !str_starts_with($stateDir, '/') || str_contains($stateDir, "\0")) {
            throw self::usage('spool mode needs stateDir: the absolute path of the state dir the worker serves');
        }
        if ($sudoUser !== null) {
            throw self::usage('spool mode runs nothing, so no sudo: drop sudoUser (the worker runs as the jobs\' user)');
        }
        if ($clean !== []) {
            throw self::usage('spool mode starts no cmesh-run process, so env has nothing to apply to; give the job\'s variables in schedule()\'s env option');
        }
        if (!is_finite($spoolTimeout) || $spoolTimeout < 0) {
            throw self::usage('spoolTimeout must be a number of seconds >= 0');
        }
    }

    /**
     * Starts a job and returns at once with its job object (id, state, command, output_path, ...).
     *
     * @param list<string>         $argv    the program and its arguments, run as is (no shell);
     *                                      leave empty when using a profile
     * @param array<string, mixed> $options name (string), unique (bool), workdir (string),
     *                                      env (array<string, string>), timeout (seconds or "15m"),
     *                                      retries (int), backend (string),
     *                                      profile (string) with args (array<string, string>),
     *                                      queue (string), after (a job ID or a list of them),
     *                                      afterAny (bool), at (a DateTimeInterface, or a string
     *                                      such as "2026-12-24T03:00:00Z" or "03:00"), in (seconds
     *                                      or "15m"); spool mode also: request_id (string,
     *                                      default random), and backend may only be "spool"
     *
     * @return array<string, mixed> the job object; "reused" is true when `unique` found a live job
     *
     * @throws CmeshRunException e.g. code backend_unavailable when at refuses the pool's user; in
     *                           spool mode the worker's refusal (code denied, usage, ...), or
     *                           backend_unavailable when no worker answered within spoolTimeout
     */
    public function schedule(array $argv = [], array $options = []): array
    {
        if ($this->spool) {
            return $this->spoolSchedule($argv, $options);
        }
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
                case 'in':
                    array_push($args, "--$key", self::duration($value, $key));
                    break;
                case 'queue':
                    array_push($args, '--queue', self::queue($value));
                    break;
                case 'after':
                    $ids = self::after($value);
                    if ($ids !== []) {
                        array_push($args, '--after', implode(',', $ids));
                    }
                    break;
                case 'afterAny':
                    if (self::flag($value, $key)) {
                        $args[] = '--after-any';
                    }
                    break;
                case 'at':
                    array_push($args, '--at', self::startTime($value));
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
        self::checkStart($options);
        if (!self::checkCommandOrProfile($argv, $options)) {
            $args[] = '--';
            foreach ($argv as $i => $word) {
                $args[] = self::arg($word, "argv[$i]");
            }
        }
        return $this->json($args);
    }

    /**
     * Returns the job object: id, name, state, exit_code, command, workdir, backend, backend_ref,
     * user, pid, attempt, created_at, started_at, finished_at, output_path, queue, after (IDs or
     * null; after_any is true when given), not_before, rerun_of, reason (why it waits, or why it
     * ended without running; else null), host (where it runs), and once there is one: progress
     * (done, total, message, updated_at: what the job last reported) and hook (program,
     * started_at, exit_code, finished_at: its on_finish or on_failure hook).
     *
     * @return array<string, mixed>
     *
     * @throws CmeshRunException code not_found for an unknown job, usage for a malformed ID
     */
    public function status(string $id): array
    {
        if ($this->spool) {
            return $this->withProgress(self::publicJob($this->derive($this->loadRecord(self::id($id)))));
        }
        return $this->json(['status', '--json', self::id($id)]);
    }

    /**
     * Returns up to $limit bytes of what the job printed, starting at byte $offset, as
     * ['data' => string, 'next_offset' => int, 'done' => bool, 'state' => string, ...], and
     * 'progress' when the job reports it, so that one poll gets the bytes and the bar.
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
        if ($this->spool) {
            // The binary answers at most 4 MiB at a time; so does the direct read.
            return $this->spoolLog(self::id($id), $offset, min($limit, 4194304));
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
        if ($this->spool) {
            return $this->spoolWait(self::id($id), $timeoutSeconds);
        }
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
     * @throws CmeshRunException in spool mode always (code usage): stopping a job means signalling
     *                           its processes, which PHP cannot do without exec
     */
    public function cancel(string $id, ?float $graceSeconds = null): void
    {
        if ($this->spool) {
            throw self::usage('cancel is not possible in spool mode: stopping a job means signalling its processes, '
                . 'which needs exec; run `cmesh-run cancel ' . self::id($id) . '` as the jobs\' user (or root) '
                . 'from a shell or a cron script, or use exec mode from a pool that allows proc_open');
        }
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
     * Schedules job $id again as it was recorded (argv or profile and arguments, workdir, name,
     * queue, timeout, retries, env, unique) and returns the new job object, whose rerun_of is
     * $id; "reused" is true when the job was unique and one of its name is still live.
     *
     * @return array<string, mixed>
     *
     * @throws CmeshRunException code not_found for an unknown job, denied when the profile no
     *                           longer allows it (under sudo only profile jobs can be rerun); in
     *                           spool mode always (code usage)
     */
    public function rerun(string $id): array
    {
        if ($this->spool) {
            // A request that names the job to repeat: the worker checks it as it checks every request.
            return $this->spoolSend(null, ['rerun' => self::id($id)]);
        }
        return $this->json(['rerun', '--json', self::id($id)]);
    }

    /**
     * The queues: the default one first, then the config's, each as ['name' => string,
     * 'max_running' => int (0: no limit), 'running' => int, 'waiting' => int, 'paused' => bool].
     *
     * @return list<array<string, mixed>>
     *
     * @throws CmeshRunException in spool mode always (code usage): the slots are in the config,
     *                           which only cmesh-run reads
     */
    public function queues(): array
    {
        if ($this->spool) {
            throw self::usage('queues() is not possible in spool mode: the queues and their slots are in cmesh-run\'s '
                . 'config, which the pool does not read; run `cmesh-run queue list` from a shell, or use exec mode');
        }
        return $this->json(['queue', 'list', '--json']);
    }

    /**
     * Spool mode: the answer to request $requestId, for a caller whose schedule() gave up waiting
     * (code backend_unavailable) while the request stayed in the spool. Returns null while no
     * worker or drain has taken the request yet.
     *
     * @return array<string, mixed>|null the job object, with request_id
     *
     * @throws CmeshRunException the worker's refusal, as schedule() would have thrown it
     */
    public function result(string $requestId): ?array
    {
        if (!$this->spool) {
            throw self::usage('result() belongs to spool mode; in exec mode schedule() returns the job itself');
        }
        return $this->spoolResult(self::requestId($requestId));
    }

    // -----------------------------------------------------------------------------------------
    // Spool mode: request files for the worker, records and output files read directly.

    /**
     * Writes a request file (temp name starting with ".", flushed and fsync'ed, renamed) into
     * spool/incoming and waits up to spoolTimeout seconds for spool/results/REQUEST_ID.json.
     *
     * @param list<string>         $argv
     * @param array<string, mixed> $options
     *
     * @return array<string, mixed>
     */
    private function spoolSchedule(array $argv, array $options): array
    {
        $req = [];
        $requestId = null;
        foreach ($options as $key => $value) {
            switch ($key) {
                case 'name':
                case 'workdir':
                case 'profile':
                    $req[$key] = self::arg($value, $key);
                    break;
                case 'backend':
                    if (self::arg($value, $key) !== 'spool') {
                        throw self::usage("backend \"$value\" is not possible in spool mode: the spool worker starts every job (its backend is spool)");
                    }
                    break;
                case 'unique':
                    if ($value) {
                        $req['unique'] = true;
                    }
                    break;
                case 'timeout':
                case 'in':
                    $req[$key] = self::duration($value, $key);
                    break;
                case 'queue':
                    $req['queue'] = self::queue($value);
                    break;
                case 'after':
                    $ids = self::after($value);
                    if ($ids !== []) {
                        $req['after'] = $ids;
                    }
                    break;
                case 'afterAny':
                    if (self::flag($value, $key)) {
                        $req['after_any'] = true;
                    }
                    break;
                case 'at':
                    $req['at'] = self::startTime($value);
                    break;
                case 'retries':
                    if (!is_int($value) || $value < 0) {
                        throw self::usage('option retries must be a non-negative int');
                    }
                    if ($value > 0) {
                        $req['retries'] = $value; // 0 is the request format's "not set": the config's default
                    }
                    break;
                case 'env':
                case 'args':
                    if (!is_array($value)) {
                        throw self::usage("option $key must be an array of KEY => value");
                    }
                    $map = [];
                    foreach ($value as $k => $v) {
                        $map[self::envKey($k)] = self::arg($v, "{$key}[$k]");
                    }
                    if ($map !== []) {
                        $req[$key] = (object) $map; // an object even for keys such as "0"
                    }
                    break;
                case 'request_id':
                    $requestId = self::requestId(self::arg($value, $key));
                    break;
                default:
                    throw self::usage("unknown schedule option \"$key\"");
            }
        }
        self::checkStart($options);
        if (!self::checkCommandOrProfile($argv, $options)) {
            $req['argv'] = [];
            foreach ($argv as $i => $word) {
                $req['argv'][] = self::arg($word, "argv[$i]");
            }
        }
        return $this->spoolSend($requestId, $req);
    }

    /**
     * Writes request $req (with its request_id, a new one when null) into spool/incoming and
     * waits for the worker's answer.
     *
     * @param array<string, mixed> $req
     *
     * @return array<string, mixed>
     */
    private function spoolSend(?string $requestId, array $req): array
    {
        $requestId ??= gmdate('Ymd-His') . '-' . bin2hex(random_bytes(8));
        try {
            $body = json_encode(['request_id' => $requestId] + $req, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR) . "\n";
        } catch (\JsonException $e) {
            throw new CmeshRunException('usage', 2, 'spool mode sends requests as JSON: every value must be valid UTF-8 (' . $e->getMessage() . ')', $e);
        }

        $incoming = $this->stateDir . '/spool/incoming';
        if (!is_dir($incoming)) {
            throw new CmeshRunException('backend_unavailable', 4, "no spool at $incoming: no worker has served this state dir yet", null,
                'start `cmesh-run --state-dir ' . $this->stateDir . ' worker` (under supervisor: cmesh-run setup --supervisor FILE), or run `cmesh-run drain` once as its user');
        }
        $final = "$incoming/$requestId.json";
        if (file_exists($final) || file_exists($this->resultPath($requestId))) {
            throw self::usage("request_id $requestId was used before: give each request its own");
        }
        $tmp = "$incoming/.$requestId.tmp";
        $fh = @fopen($tmp, 'xb');
        if ($fh === false) {
            throw new CmeshRunException('backend_unavailable', 4, "cannot write a request into $incoming: " . self::lastError(), null,
                "the pool's user must be able to write spool/incoming: make the state dir's group the pool's group (cmesh-run setup)");
        }
        // The worker may run as another user than the pool: let it read the file. Nobody else can
        // reach it: the state dir is 2750 and spool/incoming 0770.
        @chmod($tmp, 0644);
        $ok = fwrite($fh, $body) === strlen($body) && fflush($fh) && (!function_exists('fsync') || fsync($fh));
        $error = $ok ? '' : self::lastError();
        if (!fclose($fh) || !$ok || !@rename($tmp, $final)) {
            $error = $error !== '' ? $error : self::lastError();
            @unlink($tmp);
            throw new CmeshRunException('internal', 1, "cannot write the request $final: $error", null, 'check the free space of the state dir\'s disk');
        }

        $deadline = microtime(true) + $this->spoolTimeout;
        $pause = 10_000;
        while (true) {
            $job = $this->spoolResult($requestId);
            if ($job !== null) {
                return $job;
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                throw new CmeshRunException('backend_unavailable', 4, sprintf(
                    'no cmesh-run worker answered request %s within %.1f s; it stays in %s and runs once a worker or drain takes it',
                    $requestId, $this->spoolTimeout, $incoming,
                ), null, "is `cmesh-run worker` running (supervisorctl status), or `cmesh-run drain` in cron? Ask again with result('$requestId')");
            }
            usleep((int) min($pause, $left * 1e6));
            $pause = min($pause * 2, 200_000);
        }
    }

    private function resultPath(string $requestId): string
    {
        return $this->stateDir . "/spool/results/$requestId.json";
    }

    /**
     * The worker's answer to a request: the job object, null when there is none yet; a refusal
     * is thrown.
     *
     * @return array<string, mixed>|null
     */
    private function spoolResult(string $requestId): ?array
    {
        $path = $this->resultPath($requestId);
        $raw = @file_get_contents($path);
        if ($raw === false) {
            if (!file_exists($path)) {
                return null;
            }
            throw new CmeshRunException('internal', 1, "cannot read $path: " . self::lastError(), null,
                "the pool's user must be able to read the state dir: its group (cmesh-run setup)");
        }
        $data = json_decode($raw, true);
        if (!is_array($data)) {
            throw new CmeshRunException('internal', 1, "$path holds no JSON object: " . self::excerpt($raw));
        }
        if (is_array($data['error'] ?? null)) {
            $code = is_string($data['error']['code'] ?? null) ? $data['error']['code'] : 'internal';
            throw new CmeshRunException($code, self::STATUSES[$code] ?? 1, (string) ($data['error']['message'] ?? ''), null, (string) ($data['error']['hint'] ?? ''));
        }
        if (!is_string($data['id'] ?? null)) {
            throw new CmeshRunException('internal', 1, "$path holds no job: " . self::excerpt($raw));
        }
        return $data;
    }

    /**
     * Reads the record STATE_DIR/jobs/ID.json.
     *
     * @return array<string, mixed>
     */
    private function loadRecord(string $id): array
    {
        $path = $this->stateDir . "/jobs/$id.json";
        $raw = @file_get_contents($path);
        if ($raw === false) {
            if (!file_exists($path)) {
                throw new CmeshRunException('not_found', 3, "no job $id", null, 'list the jobs with: cmesh-run list');
            }
            throw new CmeshRunException('internal', 1, "cannot read $path: " . self::lastError(), null,
                "the pool's user must be able to read the state dir: its group (cmesh-run setup)");
        }
        $rec = json_decode($raw, true);
        if (!is_array($rec) || ($rec['id'] ?? null) !== $id) {
            throw new CmeshRunException('internal', 1, "corrupt record $path");
        }
        return $rec;
    }

    /**
     * The job as it stands now, as `cmesh-run status` derives it: a record that says running or
     * waiting while neither the wrapper nor the job's process lives (PID and start time compared
     * in /proc, so a recycled PID does not count) ends as its end marker says, else "lost". A
     * queued job stays as recorded (PHP cannot ask the backend). When /proc cannot be read
     * (open_basedir, hidepid), or the job runs on another host (a Slurm node: this machine's
     * /proc knows nothing of its PIDs), the record is believed as it is, and its end marker.
     *
     * @param array<string, mixed> $rec
     *
     * @return array<string, mixed> the record, corrected
     */
    private function derive(array $rec, int $depth = 0): array
    {
        $state = $rec['state'] ?? '';
        if (($state !== 'running' && $state !== 'waiting') || !@is_readable('/proc/self/stat')) {
            return $rec;
        }
        $host = $rec['host'] ?? null;
        if (is_string($host) && $host !== '' && $host !== self::hostname()) {
            $end = $this->findEnd($rec);
            return $end === null ? $rec : self::applyEnd($rec, $end);
        }
        $boot = (string) ($rec['boot_id'] ?? '');
        if (self::alive($rec['wrapper_pid'] ?? 0, $rec['wrapper_start'] ?? 0, $boot)
            || self::alive($rec['pid'] ?? 0, $rec['pid_start'] ?? 0, $boot)) {
            return $rec;
        }
        // Both gone. The wrapper may have written its end marker and updated the record since.
        if ($depth < 3) {
            $fresh = $this->loadRecord((string) $rec['id']);
            if (($fresh['state'] ?? '') !== $state) {
                return $this->derive($fresh, $depth + 1);
            }
        }
        $end = $this->findEnd($rec);
        if ($end === null) {
            $rec['state'] = 'lost';
            return $rec;
        }
        return self::applyEnd($rec, $end);
    }

    /** This machine's name as cmesh-run records it (characters other than [A-Za-z0-9._-] as _). */
    private static function hostname(): string
    {
        $h = (string) gethostname();
        return substr((string) preg_replace('/[^A-Za-z0-9._-]/', '_', $h), 0, 64);
    }

    /**
     * The record with what its end marker decides.
     *
     * @param array<string, mixed> $rec
     * @param array<string, mixed> $end
     *
     * @return array<string, mixed>
     */
    private static function applyEnd(array $rec, array $end): array
    {
        $rec['exit_code'] = $end['exit'];
        unset($rec['signal']);
        if ($end['signal'] !== '') {
            $rec['signal'] = $end['signal'];
        }
        $rec['finished_at'] = $end['time'];
        $rec['state'] = match (true) {
            $end['reason'] === 'canceled' => 'canceled',
            $end['reason'] === 'timeout' => 'timed_out',
            $end['exit'] === 0 && $end['signal'] === '' => 'succeeded',
            default => 'failed',
        };
        return $rec;
    }

    /** Whether process $pid, started at $start (clock ticks since boot) during boot $boot, still runs. */
    private static function alive(mixed $pid, mixed $start, string $boot): bool
    {
        if (!is_int($pid) || $pid <= 0) {
            return false;
        }
        if ($boot !== '' && $boot !== trim((string) @file_get_contents('/proc/sys/kernel/random/boot_id'))) {
            return false;
        }
        $stat = @file_get_contents("/proc/$pid/stat");
        $close = $stat === false ? false : strrpos($stat, ')');
        if ($close === false) {
            return false;
        }
        // Fields after the command name: state is field 3, the start time field 22.
        $fields = preg_split('/\s+/', trim(substr($stat, $close + 1)));
        if (count($fields) < 20 || $fields[0] === 'Z' || $fields[0] === 'X') {
            return false;
        }
        return $fields[19] === (string) $start;
    }

    /**
     * The end marker of the record's current attempt, scanning the output from where the
     * attempt started.
     *
     * @param array<string, mixed> $rec
     *
     * @return array<string, mixed>|null
     */
    private function findEnd(array $rec): ?array
    {
        $fh = @fopen($this->stateDir . '/jobs/' . $rec['id'] . '.out', 'rb');
        if ($fh === false) {
            return null;
        }
        try {
            $size = fstat($fh)['size'];
            $pos = (int) ($rec['start_offset'] ?? 0);
            while ($pos < $size) {
                [, $markers, $end] = self::readRange($fh, (string) ($rec['nonce'] ?? ''), $pos, min($size, $pos + 1048576), $size);
                foreach ($markers as $m) {
                    if ($m['kind'] === 'end' && $m['attempt'] === (int) ($rec['attempt'] ?? 1)) {
                        return $m;
                    }
                }
                if ($end <= $pos) {
                    break;
                }
                $pos = $end;
            }
            return null;
        } finally {
            fclose($fh);
        }
    }

    /**
     * Spool mode's log(): what `cmesh-run log --json --offset --limit` prints, read directly.
     *
     * @return array<string, mixed>
     */
    private function spoolLog(string $id, int $offset, int $limit): array
    {
        $rec = $this->loadRecord($id);
        // State first, bytes second: once a finished job is seen, the read that follows has all
        // of its output.
        $job = $this->derive($rec);
        $path = $this->stateDir . "/jobs/$id.out";
        $fh = @fopen($path, 'rb');
        if ($fh === false) {
            throw new CmeshRunException('internal', 1, "cannot read $path: " . self::lastError());
        }
        try {
            $size = fstat($fh)['size'];
            [$data, $markers, $next] = self::readRange($fh, (string) ($rec['nonce'] ?? ''), $offset, $offset + $limit, $size);
        } finally {
            fclose($fh);
        }
        $finished = !in_array($job['state'] ?? '', ['queued', 'waiting', 'running'], true);
        // Hold back a character cut in half by the limit or by a write still in progress: the next
        // poll returns it whole. A marker after the data means the bytes are final.
        $last = end($markers);
        $endsInData = $last === false || $last['offset'] + $last['len'] < $next;
        $k = self::partialRune($data);
        $more = $next < $size && $k < strlen($data);
        $pending = $next >= $size && !$finished;
        if ($k > 0 && $endsInData && ($more || $pending)) {
            $data = substr($data, 0, -$k);
            $next -= $k;
        }
        $chunk = [
            'id' => $id,
            'state' => $job['state'] ?? '',
            'offset' => $offset,
            'next_offset' => $next,
            'data' => self::validUtf8($data),
            'done' => $finished && $next >= $size,
        ];
        $progress = $this->withProgress($job)['progress'] ?? null;
        if ($progress !== null) {
            $chunk['progress'] = $progress;
        }
        return $chunk;
    }

    /**
     * The job with what it last reported of its progress (`DONE/TOTAL message` lines in
     * $CMESH_RUN_PROGRESS), as cmesh-run reads it: the last well-formed line of the file's last
     * 4 KiB; nothing for a queued job, a file that is not a regular one, or no such line.
     *
     * @param array<string, mixed> $job
     *
     * @return array<string, mixed>
     */
    private function withProgress(array $job): array
    {
        unset($job['progress']);
        if (($job['state'] ?? 'queued') === 'queued') {
            return $job;
        }
        $path = $this->stateDir . '/jobs/' . $job['id'] . '.progress';
        if (is_link($path)) {
            return $job;
        }
        $fh = @fopen($path, 'rb');
        if ($fh === false) {
            return $job;
        }
        try {
            $st = fstat($fh);
            if ($st === false || ($st['mode'] & 0170000) !== 0100000 || $st['size'] === 0) {
                return $job;
            }
            $from = max(0, $st['size'] - 4096);
            fseek($fh, $from);
            $lines = explode("\n", (string) fread($fh, $st['size'] - $from));
            if ($from > 0) {
                array_shift($lines);
            }
            foreach (array_reverse($lines) as $line) {
                $p = self::parseProgress($line);
                if ($p !== null) {
                    $job['progress'] = $p + ['updated_at' => gmdate('Y-m-d\TH:i:s\Z', $st['mtime'])];
                    break;
                }
            }
        } finally {
            fclose($fh);
        }
        return $job;
    }

    /** @return array{done: int, total: int, message: string}|null one `DONE/TOTAL message` line */
    private static function parseProgress(string $line): ?array
    {
        $line = rtrim($line, "\r");
        $parts = explode(' ', $line, 2);
        if (preg_match('/^([0-9]{1,18})\/([0-9]{1,18})$/D', $parts[0], $m) !== 1) {
            return null;
        }
        [$done, $total] = [(int) $m[1], (int) $m[2]];
        $msg = trim($parts[1] ?? '', " \t\n\v\f\r");
        if ($total <= 0 || $done > $total || preg_match('//u', $msg) !== 1) {
            return null;
        }
        if (strlen($msg) > 200) {
            $cut = 200;
            while ($cut > 0 && (ord($msg[$cut]) & 0xC0) === 0x80) {
                $cut--;
            }
            $msg = substr($msg, 0, $cut);
        }
        if (preg_match('/[\x00-\x1f\x7f]/', $msg) === 1) {
            return null;
        }
        return ['done' => $done, 'total' => $total, 'message' => $msg];
    }

    /**
     * The job's bytes in [$from, $to) of its output file, markers removed. A marker that starts
     * before $from is skipped; one that runs past $to is consumed whole (the end moves past it), so
     * no part of a marker is ever returned. Reads at most a marker's length around the range.
     *
     * @param resource $fh
     *
     * @return array{string, list<array<string, mixed>>, int} data, markers in the range, where
     *                                                        the next read continues
     */
    private static function readRange($fh, string $nonce, int $from, int $to, int $size): array
    {
        $from = max(0, min($from, $size));
        $to = max($from, min($to, $size));
        $lo = max(0, $from - self::MAX_MARKER_LEN);
        $hi = min($size, $to + self::MAX_MARKER_LEN);
        $buf = '';
        if ($hi > $lo && fseek($fh, $lo) === 0) {
            $buf = (string) stream_get_contents($fh, $hi - $lo);
        }
        $to = min($to, $lo + strlen($buf));
        $relTo = $to - $lo;
        $pos = $from - $lo;
        $end = $to;
        $data = '';
        $markers = [];
        foreach (self::findMarkers($buf, $nonce, $lo) as [$start, $stop, $marker]) {
            if ($stop <= $pos) {
                continue;
            }
            if ($start >= $relTo) {
                break;
            }
            if ($start > $pos) {
                $data .= substr($buf, $pos, $start - $pos);
            }
            $pos = $stop;
            $markers[] = $marker;
            $end = max($end, $lo + $stop);
        }
        if ($pos < $relTo) {
            $data .= substr($buf, $pos, $relTo - $pos);
        }
        return [$data, $markers, $end];
    }

    /**
     * The markers of the job with $nonce in $buf: "\n[cmesh-run:NONCE start|end k=v ...]\n".
     *
     * @return list<array{int, int, array<string, mixed>}> start and end in $buf, the marker
     */
    private static function findMarkers(string $buf, string $nonce, int $base): array
    {
        $prefix = "\n[cmesh-run:$nonce ";
        $plen = strlen($prefix);
        $n = strlen($buf);
        $out = [];
        for ($i = 0; $i < $n;) {
            $start = strpos($buf, $prefix, $i);
            if ($start === false) {
                break;
            }
            $limit = min($n, $start + self::MAX_MARKER_LEN);
            $k = $limit > $start + $plen ? strpos(substr($buf, $start + $plen, $limit - $start - $plen), "]\n") : false;
            $marker = $k === false ? null : self::parseMarker(substr($buf, $start + $plen, $k));
            if ($marker === null) {
                $i = $start + 1;
                continue;
            }
            $stop = $start + $plen + $k + 2;
            $marker['offset'] = $base + $start;
            $marker['len'] = $stop - $start;
            $out[] = [$start, $stop, $marker];
            $i = $stop;
        }
        return $out;
    }

    /** @return array<string, mixed>|null the marker's fields, null when $body is no marker */
    private static function parseMarker(string $body): ?array
    {
        $fields = preg_split('/[ \t\n\v\f\r]+/', trim($body, " \t\n\v\f\r"));
        if ($fields === false || ($fields[0] !== 'start' && $fields[0] !== 'end')) {
            return null;
        }
        $m = ['kind' => $fields[0], 'attempt' => 0, 'pid' => 0, 'exit' => null, 'signal' => '', 'reason' => '', 'time' => null];
        foreach (array_slice($fields, 1) as $field) {
            $kv = explode('=', $field, 2);
            if (count($kv) !== 2) {
                return null;
            }
            [$key, $value] = $kv;
            $int = preg_match('/^[+-]?[0-9]{1,18}$/D', $value) === 1;
            switch ($key) {
                case 'attempt':
                case 'pid':
                case 'exit':
                    if (!$int) {
                        return null;
                    }
                    $m[$key] = (int) $value;
                    break;
                case 'signal':
                case 'reason':
                    $m[$key] = $value;
                    break;
                case 'time':
                    if (preg_match('/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/D', $value) !== 1) {
                        return null;
                    }
                    $m['time'] = $value;
                    break;
            }
        }
        return $m['attempt'] >= 1 ? $m : null;
    }

    /** How many bytes at the end of $s begin a UTF-8 sequence that is not complete yet. */
    private static function partialRune(string $s): int
    {
        $n = strlen($s);
        for ($k = 1; $k <= 3 && $k <= $n; $k++) {
            $c = ord($s[$n - $k]);
            if (($c & 0xC0) !== 0x80) { // a rune start
                return $c >= 0xC0 && !self::fullRune(substr($s, $n - $k)) ? $k : 0;
            }
        }
        return 0;
    }

    /** Go's utf8.FullRune: $p begins with a whole rune, or with bytes that can never become one. */
    private static function fullRune(string $p): bool
    {
        $c = ord($p[0]);
        [$size, $lo, $hi] = self::utf8Lead($c);
        $n = strlen($p);
        if ($n >= $size) {
            return true;
        }
        if ($n > 1) {
            $c1 = ord($p[1]);
            if ($c1 < $lo || $c1 > $hi) {
                return true;
            }
        }
        if ($n > 2) {
            $c2 = ord($p[2]);
            if ($c2 < 0x80 || $c2 > 0xBF) {
                return true;
            }
        }
        return false;
    }

    /**
     * A lead byte's sequence length and the range of the byte after it (1 for ASCII and for
     * bytes that start no valid sequence).
     *
     * @return array{int, int, int}
     */
    private static function utf8Lead(int $c): array
    {
        return match (true) {
            $c >= 0xC2 && $c <= 0xDF => [2, 0x80, 0xBF],
            $c === 0xE0 => [3, 0xA0, 0xBF],
            $c === 0xED => [3, 0x80, 0x9F],
            $c >= 0xE1 && $c <= 0xEF => [3, 0x80, 0xBF],
            $c === 0xF0 => [4, 0x90, 0xBF],
            $c >= 0xF1 && $c <= 0xF3 => [4, 0x80, 0xBF],
            $c === 0xF4 => [4, 0x80, 0x8F],
            default => [1, 0x80, 0xBF],
        };
    }

    /** $s with each run of bytes that are not UTF-8 replaced by one U+FFFD (Go's strings.ToValidUTF8). */
    private static function validUtf8(string $s): string
    {
        if (preg_match('//u', $s) === 1) {
            return $s;
        }
        $out = '';
        $n = strlen($s);
        $bad = false;
        for ($i = 0; $i < $n;) {
            $ascii = strspn($s, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
                . "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"
                . " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\x7f", $i);
            if ($ascii > 0) {
                $out .= substr($s, $i, $ascii);
                $i += $ascii;
                $bad = false;
                continue;
            }
            [$size, $lo, $hi] = self::utf8Lead(ord($s[$i]));
            $ok = $size > 1 && $i + $size <= $n;
            for ($j = 1; $ok && $j < $size; $j++) {
                $c = ord($s[$i + $j]);
                $ok = $j === 1 ? $c >= $lo && $c <= $hi : $c >= 0x80 && $c <= 0xBF;
            }
            if ($ok) {
                $out .= substr($s, $i, $size);
                $i += $size;
                $bad = false;
            } else {
                if (!$bad) {
                    $out .= "\u{FFFD}";
                }
                $bad = true;
                $i++;
            }
        }
        return $out;
    }

    /** Spool mode's wait(): polls the record as `cmesh-run wait` does. */
    private function spoolWait(string $id, ?float $timeoutSeconds): int
    {
        if ($timeoutSeconds !== null && (!is_finite($timeoutSeconds) || $timeoutSeconds < 0)) {
            throw self::usage('timeout must be a number of seconds >= 0');
        }
        $deadline = $timeoutSeconds === null ? null : microtime(true) + $timeoutSeconds;
        $pause = 20_000;
        while (true) {
            $job = $this->status($id);
            if (!in_array($job['state'] ?? '', ['queued', 'waiting', 'running'], true)) {
                $code = $job['exit_code'] ?? null;
                return in_array($job['state'], ['canceled', 'lost'], true) || !is_int($code) ? 125 : $code;
            }
            $left = $deadline === null ? INF : $deadline - microtime(true);
            if ($left <= 0) {
                return 124;
            }
            usleep((int) min($pause, $left * 1e6));
            $pause = min($pause * 2, 500_000);
        }
    }

    /**
     * The record as a job object: without the fields only cmesh-run uses.
     *
     * @param array<string, mixed> $rec
     *
     * @return array<string, mixed>
     */
    private static function publicJob(array $rec): array
    {
        foreach (self::PRIVATE_FIELDS as $field) {
            unset($rec[$field]);
        }
        // Records from before queues lack these; cmesh-run shows such a job in the default queue.
        if (!is_string($rec['queue'] ?? null) || $rec['queue'] === '') {
            $rec['queue'] = 'default';
        }
        return $rec + ['after' => null, 'not_before' => null, 'rerun_of' => null, 'reason' => null];
    }

    private static function requestId(string $id): string
    {
        if (preg_match(self::ID_PATTERN, $id) !== 1) {
            throw self::usage('invalid request ID "' . self::excerpt($id) . '" (want ' . self::ID_PATTERN . ')');
        }
        return $id;
    }

    private static function lastError(): string
    {
        $e = error_get_last();
        return $e === null ? 'unknown error' : preg_replace('/^\w+\([^)]*\): /', '', $e['message']);
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

    private static function queue(mixed $value): string
    {
        if (!is_string($value)) {
            throw self::usage('option queue must be a string');
        }
        if (preg_match(self::QUEUE_PATTERN, $value) !== 1) {
            throw self::usage('invalid queue name "' . self::excerpt($value) . '" (want ' . self::QUEUE_PATTERN . ')');
        }
        return $value;
    }

    /**
     * One job ID, IDs joined by commas as on the command line, or a list of IDs; an empty list
     * waits for nothing, as `--after ''` does.
     *
     * @return list<string>
     */
    private static function after(mixed $value): array
    {
        if (is_string($value)) {
            $value = explode(',', $value);
        }
        if (!is_array($value) || !array_is_list($value)) {
            throw self::usage('option after must be a job ID or a list of job IDs');
        }
        $ids = [];
        foreach ($value as $i => $id) {
            if (!is_string($id)) {
                throw self::usage("after[$i] must be a job ID string");
            }
            $ids[] = self::id($id);
        }
        return $ids;
    }

    private static function flag(mixed $value, string $what): bool
    {
        if (!is_bool($value)) {
            throw self::usage("option $what must be a bool");
        }
        return $value;
    }

    /**
     * A DateTimeInterface becomes RFC 3339 in UTC, its fraction kept so the job never starts
     * early; a string (RFC 3339 or HH:MM) is passed as it is, for cmesh-run to judge.
     */
    private static function startTime(mixed $value): string
    {
        if ($value instanceof \DateTimeInterface) {
            $utc = \DateTimeImmutable::createFromInterface($value)->setTimezone(new \DateTimeZone('UTC'));
            return $utc->format($utc->format('u') === '000000' ? 'Y-m-d\TH:i:s\Z' : 'Y-m-d\TH:i:s.u\Z');
        }
        if (!is_string($value) || $value === '') {
            throw self::usage('option at must be a DateTimeInterface or a time such as "2026-12-24T03:00:00Z" or "03:00"');
        }
        return self::arg($value, 'at');
    }

    /**
     * Refuses what cmesh-run and the worker would refuse anyway, with the same words in
     * both modes.
     *
     * @param array<string, mixed> $options
     */
    private static function checkStart(array $options): void
    {
        if (isset($options['at'], $options['in'])) {
            throw self::usage('give either at or in, not both');
        }
        if (($options['afterAny'] ?? false) === true && self::after($options['after'] ?? []) === []) {
            throw self::usage('option afterAny goes with after: the jobs to wait for');
        }
    }

    /**
     * Checks that the call names either a profile or a command, and says
     * which: true for a profile.
     */
    private static function checkCommandOrProfile(array $argv, array $options): bool
    {
        if (isset($options['profile'])) {
            if ($argv !== []) {
                throw self::usage('give either a command or a profile, not both');
            }
            return true;
        }
        if (isset($options['args'])) {
            throw self::usage('option args needs a profile');
        }
        if ($argv === [] || !array_is_list($argv)) {
            throw self::usage('nothing to run: give the program and its arguments as a list');
        }
        return false;
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
