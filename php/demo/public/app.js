// The demo page's behaviour: start a build, follow it, show how it ended. Plain JS, no build
// step. The server side is start.php, poll.php and cancel.php; every answer is JSON, and an
// error is {"error": {"code", "message"}} with an HTTP error status.
'use strict';

(function () {
  const POLL_MS = 300;     // how often poll.php is asked for more output
  const TAIL_LINES = 10;   // lines shown under a build that did not succeed

  const $ = (id) => document.getElementById(id);
  const ui = {
    build: $('build'), buildFail: $('build-fail'), cancel: $('cancel'), steps: $('steps'),
    error: $('error'), jobId: $('job-id'), state: $('state'), elapsed: $('elapsed'),
    lines: $('lines'), log: $('log'),
    progress: $('progress'), progressBar: $('progress-bar'), progressText: $('progress-text'),
    result: $('result'), resultTitle: $('result-title'), resultState: $('result-state'),
    resultExit: $('result-exit'), resultDuration: $('result-duration'),
    resultTail: $('result-tail'), tail: $('tail'),
  };

  const encoder = new TextEncoder();

  // The job this page follows, or null: its ID, the offset to read from next (bytes of the
  // output file, which also holds cmesh-run's markers), the output so far (text and UTF-8
  // bytes), the number of answered polls, the next poll's timer, whether polls are failing.
  let current = null;

  // --- Talking to the endpoints ------------------------------------------------------------

  async function call(url, options) {
    const res = await fetch(url, Object.assign({ cache: 'no-store' }, options));
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      throw new Error(`the web server answered HTTP ${res.status} ${res.statusText} for ${url.split('?')[0]}`);
    }
    if (!res.ok || body.error) {
      const err = new Error(body.error ? body.error.message : `HTTP ${res.status} for ${url.split('?')[0]}`);
      err.code = body.error ? body.error.code : 'http';
      throw err;
    }
    return body;
  }

  function post(url, fields) {
    return call(url, { method: 'POST', body: new URLSearchParams(fields) });
  }

  // --- Actions -----------------------------------------------------------------------------

  async function startBuild(outcome) {
    hideError();
    if (current) clearTimeout(current.timer); // stop following the previous build
    current = null;
    setRunning(true);
    try {
      const body = await post('start.php', { outcome: outcome, steps: ui.steps.value });
      if (body.reused) {
        showError('A build is already running: following it instead of starting another.');
      }
      follow(body.job);
    } catch (e) {
      showError(e.message);
      setRunning(false);
    }
  }

  async function cancelBuild() {
    if (!current) return;
    ui.cancel.disabled = true;
    ui.cancel.textContent = 'Canceling…';
    try {
      await post('cancel.php', { id: current.id });
      // Nothing else to do: the polling loop sees the job end and shows it.
    } catch (e) {
      showError(e.message);
      ui.cancel.disabled = false;
    } finally {
      ui.cancel.textContent = 'Cancel';
    }
  }

  // --- Following a job ---------------------------------------------------------------------

  function follow(job) {
    if (current) clearTimeout(current.timer);
    current = { id: job.id, offset: 0, text: '', bytes: 0, polls: 0, timer: null, failing: false };
    history.replaceState(null, '', '#job=' + encodeURIComponent(job.id));
    ui.log.textContent = '';
    ui.log.dataset.polls = '0';
    showProgress(null);
    ui.result.hidden = true;
    ui.jobId.textContent = job.id;
    showJob(job);
    poll();
  }

  async function poll() {
    const job = current;
    if (!job) return;
    try {
      const url = `poll.php?id=${encodeURIComponent(job.id)}&offset=${job.offset}`;
      const body = await call(url);
      if (job !== current) return; // another build was started meanwhile
      if (job.failing) { // the server answers again (php-fpm restarted, ...)
        job.failing = false;
        hideError();
      }
      job.polls += 1;
      job.offset = body.next_offset;
      appendOutput(body.data);
      showProgress(body.progress);
      ui.log.dataset.polls = String(job.polls);
      showJob(body.job);
      if (body.done) {
        showResult(body.job);
        return;
      }
    } catch (e) {
      if (job !== current) return;
      if (e.code === 'not_found' || e.code === 'usage') { // pruned, or a bad #job= in the URL
        showError(e.message);
        setRunning(false);
        return;
      }
      // Anything else (php-fpm restarting, ...): the job goes on without us; keep trying.
      job.failing = true;
      showError(`Cannot reach the job right now (${e.message}); trying again every ${POLL_MS} ms.`);
    }
    job.timer = setTimeout(poll, POLL_MS);
  }

  // --- Showing it --------------------------------------------------------------------------

  function appendOutput(data) {
    if (!data) return;
    const log = ui.log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
    current.text += data;
    current.bytes += encoder.encode(data).length;
    log.appendChild(document.createTextNode(data)); // text, never HTML
    if (atBottom) log.scrollTop = log.scrollHeight;
    const lines = lineCount(current.text);
    ui.lines.textContent = `${lines} line${lines === 1 ? '' : 's'}, ${formatBytes(current.bytes)}`;
  }

  // The bar, when the job reports how far it has got; hidden for a job that reports nothing.
  function showProgress(p) {
    if (!p || !(p.total > 0)) {
      ui.progress.hidden = true;
      return;
    }
    const percent = Math.min(100, Math.floor((p.done * 100) / p.total));
    ui.progressBar.value = percent;
    ui.progressBar.dataset.percent = String(percent);
    ui.progressText.textContent = `${p.done}/${p.total} ${p.message || ''}`.trim(); // text, never HTML
    ui.progress.hidden = false;
  }

  function showJob(job) {
    ui.state.textContent = job.state.replace('_', ' ');
    ui.state.dataset.state = job.state;
    if (job.seconds !== null) {
      ui.elapsed.textContent = job.finished ? `${job.seconds.toFixed(1)} s` : `running for ${job.seconds.toFixed(1)} s`;
    } else {
      ui.elapsed.textContent = 'not started yet';
    }
    setRunning(!job.finished);
  }

  function showResult(job) {
    const titles = {
      succeeded: 'Build succeeded', failed: 'Build failed', canceled: 'Build canceled',
      timed_out: 'Build timed out', lost: 'Build lost (its processes vanished)',
    };
    ui.result.dataset.state = job.state;
    ui.resultTitle.textContent = titles[job.state] || `Build ${job.state}`;
    ui.resultState.textContent = job.state.replace('_', ' ');
    ui.resultExit.textContent = job.exit_code === null ? 'none'
      : String(job.exit_code) + (job.signal ? ` (${job.signal})` : '');
    ui.resultDuration.textContent = job.seconds === null ? '–' : `${job.seconds.toFixed(1)} s`;
    const failed = job.state !== 'succeeded';
    ui.tail.textContent = failed ? lastLines(current.text, TAIL_LINES) : '';
    ui.resultTail.hidden = !failed;
    ui.result.hidden = false;
    setRunning(false);
  }

  function setRunning(running) {
    ui.build.disabled = running;
    ui.buildFail.disabled = running;
    ui.cancel.disabled = !running || !current;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function hideError() {
    ui.error.hidden = true;
    ui.error.textContent = '';
  }

  function lineCount(text) {
    if (text === '') return 0;
    const n = text.split('\n').length;
    return text.endsWith('\n') ? n - 1 : n;
  }

  function lastLines(text, n) {
    const lines = text.replace(/\n$/, '').split('\n');
    return lines.slice(-n).join('\n');
  }

  function formatBytes(n) {
    return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
  }

  // --- Wiring --------------------------------------------------------------------------------

  ui.build.addEventListener('click', () => startBuild(ui.build.dataset.outcome));
  ui.buildFail.addEventListener('click', () => startBuild(ui.buildFail.dataset.outcome));
  ui.cancel.addEventListener('click', cancelBuild);

  // A reload (or a shared link) keeps following the same job: #job=ID.
  const m = location.hash.match(/^#job=([A-Za-z0-9._-]+)$/);
  if (m) {
    follow({ id: m[1], state: 'queued', finished: false, seconds: null });
  }
})();
