<?php
/*
 * POST start.php  outcome=succeed|fail  steps=N
 *
 * Schedules the build through cmesh-run (at now) and answers at once with the job: the build
 * goes on after this request, whatever happens to this PHP-FPM worker. Only one build at a
 * time: a click while one is live joins it ("reused": true).
 */

declare(strict_types=1);

use Cmesh\Run\CmeshRunException;

require __DIR__ . '/../bootstrap.php';

require_post();
$steps = filter_var($_POST['steps'] ?? 24, FILTER_VALIDATE_INT, ['options' => ['min_range' => 1, 'max_range' => 600]]);
if ($steps === false) {
    send_error(400, 'usage', 'steps must be a whole number from 1 to 600');
}
$outcome = $_POST['outcome'] ?? 'succeed';
if ($outcome !== 'succeed' && $outcome !== 'fail') {
    send_error(400, 'usage', 'outcome must be "succeed" or "fail"');
}
$failAt = $outcome === 'fail' ? max(1, intdiv($steps * 2, 5)) : 0;

try {
    $job = demo_client()->schedule(demo_build_command($steps, $failAt), [
        'name' => DEMO_JOB_NAME,
        'unique' => true,
        'workdir' => demo_config()['workdir'],
        'timeout' => '10m',
    ]);
} catch (CmeshRunException $e) {
    send_cmesh_error($e);
}

send_json(200, ['job' => job_summary($job), 'reused' => !empty($job['reused'])]);
