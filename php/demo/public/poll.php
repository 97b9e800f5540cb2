<?php
/*
 * GET poll.php?id=ID&offset=N
 *
 * The next piece of the job's output from byte N of its output file, and the job as it is
 * now. The page calls it every 300 ms with the next_offset of the previous answer, until
 * "done": then the job has finished and every byte of its output has been sent.
 */

declare(strict_types=1);

use Cmesh\Run\CmeshRunException;

require __DIR__ . '/../bootstrap.php';

$id = (string) ($_GET['id'] ?? '');
$offset = filter_var($_GET['offset'] ?? 0, FILTER_VALIDATE_INT, ['options' => ['min_range' => 0]]);
if ($offset === false) {
    send_error(400, 'usage', 'offset must be a whole number >= 0');
}

try {
    $client = demo_client();
    $chunk = $client->log($id, $offset, 64 * 1024); // data, next_offset, done
    $job = $client->status($id);                    // read after the log: "done" implies finished
} catch (CmeshRunException $e) {
    send_cmesh_error($e);
}

send_json(200, [
    'data' => $chunk['data'],
    'next_offset' => $chunk['next_offset'],
    'done' => $chunk['done'],
    'progress' => $chunk['progress'] ?? null, // {done, total, message}, or null: no bar
    'job' => job_summary($job),
]);
