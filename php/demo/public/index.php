<?php
/*
 * The demo page. Everything it does happens in app.js, through three small endpoints:
 * start.php (schedule the build), poll.php (its state and the next piece of its log) and
 * cancel.php. ?steps=N sets the build's length (24 steps of 0.15 s by default).
 */

declare(strict_types=1);

$config = require __DIR__ . '/../config.php';
$steps = filter_var($_GET['steps'] ?? 24, FILTER_VALIDATE_INT, ['options' => ['min_range' => 1, 'max_range' => 600]]) ?: 24;
$h = fn (string $s): string => htmlspecialchars($s, ENT_QUOTES);
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cmesh-run demo: a build outside PHP-FPM</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="style.css">
</head>
<body>
<header>
  <h1>cmesh-run demo</h1>
  <p>The <b>Build</b> button asks <code>cmesh-run</code> to start a build with <code>at now</code>:
  the request returns at once, the build runs outside PHP-FPM, and this page follows its
  state and output every 300&nbsp;ms.</p>
</header>

<main>
  <section class="controls" aria-label="Build controls">
    <button type="button" id="build" data-outcome="succeed">Build</button>
    <button type="button" id="build-fail" class="secondary" data-outcome="fail">Build (will fail)</button>
    <button type="button" id="cancel" class="danger" disabled>Cancel</button>
    <label class="steps">Steps <input type="number" id="steps" min="1" max="600" value="<?= $steps ?>"></label>
  </section>

  <p id="error" class="error" role="alert" hidden></p>

  <section class="status" aria-label="Job status">
    <div><span class="label">Job</span> <code id="job-id">none yet</code></div>
    <div><span class="label">State</span> <span id="state" class="badge" data-state="idle">idle</span></div>
    <div><span class="label">Time</span> <span id="elapsed">–</span></div>
    <div><span class="label">Output</span> <span id="lines">0 lines</span></div>
    <div id="progress" class="progress" hidden><span class="label">Progress</span>
      <progress id="progress-bar" max="100" value="0" data-percent="0"></progress>
      <span id="progress-text"></span></div>
  </section>

  <pre id="log" class="log" data-polls="0" aria-label="Build output" aria-live="polite"></pre>

  <section id="result" class="result" hidden aria-label="Result">
    <h2 id="result-title">Result</h2>
    <p>State <b id="result-state"></b> · exit code <b id="result-exit"></b> · took <b id="result-duration"></b></p>
    <div id="result-tail" hidden>
      <h3>Last lines</h3>
      <pre id="tail" class="log tail"></pre>
    </div>
  </section>
</main>

<footer>
  Binary <code><?= $h($config['binary']) ?></code> · state dir <code><?= $h($config['state_dir']) ?></code> ·
  <code>cmesh-run --state-dir <?= $h($config['state_dir']) ?> status</code> shows the same jobs from a shell.
</footer>

<script src="app.js"></script>
</body>
</html>
