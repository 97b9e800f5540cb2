<?php
/*
 * POST cancel.php  id=ID
 *
 * Cancels the job: SIGTERM to its whole process tree, SIGKILL after 2 s. cmesh-run returns
 * once the job has ended; the page's polling then shows it "canceled" with its last lines.
 */

declare(strict_types=1);

use Cmesh\Run\CmeshRunException;

require __DIR__ . '/../bootstrap.php';

require_post();
$id = (string) ($_POST['id'] ?? '');

try {
    $client = demo_client();
    $client->cancel($id, 2);
    $job = $client->status($id);
} catch (CmeshRunException $e) {
    send_cmesh_error($e);
}

send_json(200, ['job' => job_summary($job)]);
