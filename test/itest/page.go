//go:build integration

package itest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// APIPage runs one method of the PHP client (php/src), given as JSON in ?req=: "op" schedule
// (with "argv" and "options"), status, log ("offset", "limit"), wait ("timeout"), cancel
// ("grace"), result ("request_id") or probe (none), "id" the job's. It answers with JSON: the
// result or the CmeshRunException, and what the worker knows of itself (its PID, its
// descriptors, which exec functions the pool disabled, the pool's DB_PASSWORD, the request's
// X-Secret header). config.php beside it returns the client's settings (binary, state_dir,
// env, mode, spool_timeout). "leaky" hands cmesh-run the worker's whole environment and the
// request's headers, as a careless caller would; "note" writes the answer to a file before
// "sleep" seconds of sleep, for a request that is to be cut short.
const APIPage = `<?php
declare(strict_types=1);

require __DIR__ . '/../php/src/CmeshRunException.php';
require __DIR__ . '/../php/src/Client.php';

use Cmesh\Run\Client;
use Cmesh\Run\CmeshRunException;

$cfg = require __DIR__ . '/config.php';
$req = json_decode($_GET['req'] ?? '{}', true, 64, JSON_THROW_ON_ERROR);
$t0 = microtime(true);

$fds = [];
foreach (glob('/proc/self/fd/*') ?: [] as $fd) {
    $fds[basename($fd)] = (string) @readlink($fd);
}
$disabled = [];
foreach (['exec', 'shell_exec', 'system', 'passthru', 'proc_open', 'popen'] as $f) {
    $disabled[$f] = !function_exists($f);
}
$out = [
    'pid' => getmypid(),
    'fds' => $fds,
    'disabled' => $disabled,
    'pool_secret' => getenv('DB_PASSWORD'),
    'request_secret' => $_SERVER['HTTP_X_SECRET'] ?? null,
];

$clientEnv = $cfg['env'] ?? [];
if (!empty($req['leaky'])) {
    $clientEnv = getenv();
    foreach ($_SERVER as $k => $v) {
        if (is_string($v) && str_starts_with($k, 'HTTP_')) {
            $clientEnv[$k] = $v;
        }
    }
}
try {
    $client = new Client(
        binary: $cfg['binary'] ?? '/usr/local/bin/cmesh-run',
        stateDir: $cfg['state_dir'],
        env: $clientEnv,
        mode: $cfg['mode'] ?? 'exec',
        spoolTimeout: (float) ($req['spool_timeout'] ?? $cfg['spool_timeout'] ?? 10),
    );
    $id = (string) ($req['id'] ?? '');
    $out['result'] = match ($req['op'] ?? '') {
        'schedule' => $client->schedule($req['argv'] ?? [], $req['options'] ?? []),
        'status' => $client->status($id),
        'log' => $client->log($id, (int) ($req['offset'] ?? 0), (int) ($req['limit'] ?? 1048576)),
        'wait' => $client->wait($id, isset($req['timeout']) ? (float) $req['timeout'] : null),
        'cancel' => $client->cancel($id, isset($req['grace']) ? (float) $req['grace'] : null),
        'result' => $client->result((string) ($req['request_id'] ?? '')),
        'probe' => null,
    };
    $out['ok'] = true;
} catch (CmeshRunException $e) {
    $out['ok'] = false;
    $out['error'] = ['code' => $e->getErrorCode(), 'exit_status' => $e->getExitStatus(), 'message' => $e->getMessage(), 'hint' => $e->getHint()];
}
$out['seconds'] = microtime(true) - $t0;

if (isset($req['note'])) {
    file_put_contents($req['note'] . '.tmp', json_encode($out));
    rename($req['note'] . '.tmp', $req['note']);
}
if (isset($req['sleep'])) {
    sleep((int) $req['sleep']);
}
header('Content-Type: application/json');
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
`

// APIError is a CmeshRunException as a page reports it.
type APIError struct {
	Code       string `json:"code"`
	ExitStatus int    `json:"exit_status"`
	Message    string `json:"message"`
	Hint       string `json:"hint"`
}

// APIResult is APIPage's answer.
type APIResult struct {
	OK            bool              `json:"ok"`
	PID           int               `json:"pid"`
	FDs           map[string]string `json:"fds"`
	Disabled      map[string]bool   `json:"disabled"`
	PoolSecret    any               `json:"pool_secret"`
	RequestSecret any               `json:"request_secret"`
	Result        json.RawMessage   `json:"result"`
	Error         *APIError         `json:"error"`
	Seconds       float64           `json:"seconds"`

	Raw     []byte        `json:"-"` // the answer as it came
	Elapsed time.Duration `json:"-"` // the request's, as the web server saw it
}

// WriteAPIPage writes APIPage to www/api.php, www made 0755 if need be.
func WriteAPIPage(t *testing.T, www string) {
	t.Helper()
	Must(t, os.MkdirAll(www, 0o755))
	Must(t, os.WriteFile(filepath.Join(www, "api.php"), []byte(APIPage), 0o644))
}

// WriteAPIConfig writes www/config.php: how api.php builds its client (binary, state_dir,
// env, mode, spool_timeout).
func WriteAPIConfig(t *testing.T, www string, cfg map[string]any) {
	t.Helper()
	b, err := json.Marshal(cfg)
	Must(t, err)
	php := "<?php\nreturn json_decode(" + PHPString(string(b)) + ", true);\n"
	Must(t, os.WriteFile(filepath.Join(www, "config.php"), []byte(php), 0o644))
}

// Site is a pool with the pages it serves from WWW (APIPage as api.php, among them).
type Site struct {
	*Pool
	WWW     string
	Vars    []string      // CGI variables every request carries (request headers)
	Timeout time.Duration // of each API call: 30 s unless set
}

// Request sends one FastCGI request for page, req (when not nil) as JSON in ?req=.
func (s *Site) Request(t *testing.T, page string, req map[string]any, timeout time.Duration) Response {
	t.Helper()
	q := ""
	if req != nil {
		b, err := json.Marshal(req)
		Must(t, err)
		q = url.Values{"req": {string(b)}}.Encode()
	}
	return s.Pool.Request(Request{Script: filepath.Join(s.WWW, page), Query: q, Vars: s.Vars}, timeout)
}

// API sends req to api.php and decodes its answer; OK may be false (a CmeshRunException), but
// the page must have answered.
func (s *Site) API(t *testing.T, req map[string]any) APIResult {
	t.Helper()
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	r := s.Request(t, "api.php", req, timeout)
	if r.Err != nil || r.Status != 200 {
		t.Fatalf("request %v: status %d, err %v, body %q", req, r.Status, r.Err, r.Body)
	}
	var a APIResult
	if err := json.Unmarshal(r.Body, &a); err != nil {
		t.Fatalf("request %v: bad JSON %q: %v", req, r.Body, err)
	}
	a.Raw, a.Elapsed = r.Body, r.Elapsed
	return a
}

// Call is API for a call that must succeed; it decodes the result into out (when not nil).
func (s *Site) Call(t *testing.T, req map[string]any, out any) APIResult {
	t.Helper()
	a := s.API(t, req)
	if !a.OK {
		t.Fatalf("request %v failed: %s", req, a.Raw)
	}
	if out != nil {
		if err := json.Unmarshal(a.Result, out); err != nil {
			t.Fatalf("request %v: result %s: %v", req, a.Result, err)
		}
	}
	return a
}

// Collect follows job id through api.php as a web page polling it would, until log says done:
// each round asks status, then log from the last next_offset, limit bytes at a time. maxData
// is the most one answer's data may hold (limit, or more where invalid UTF-8 comes back as
// U+FFFD). It returns the output, the job as status then says, and the states seen.
func (s *Site) Collect(t *testing.T, id string, limit, maxData int, timeout time.Duration) (string, Job, []string) {
	t.Helper()
	status := func() Job {
		t.Helper()
		var j Job
		s.Call(t, map[string]any{"op": "status", "id": id}, &j)
		if j.ID != id {
			t.Fatalf("status %s: got job %v", id, j)
		}
		return j
	}
	var out strings.Builder
	var offset int64
	var states []string
	PollEvery(t, 100*time.Millisecond, timeout, "job "+id+" to finish with all its output read", func() (bool, string) {
		j := status()
		if len(states) == 0 || states[len(states)-1] != j.State {
			states = append(states, j.State)
		}
		for {
			var c LogChunk
			s.Call(t, map[string]any{"op": "log", "id": id, "offset": offset, "limit": limit}, &c)
			if len(c.Data) > maxData {
				t.Fatalf("log limit %d returned %d bytes", limit, len(c.Data))
			}
			if c.NextOffset < offset {
				t.Fatalf("log: next_offset %d went back from %d", c.NextOffset, offset)
			}
			out.WriteString(c.Data)
			offset = c.NextOffset
			if c.Done {
				return true, ""
			}
			if c.Data == "" { // caught up: ask again on the next round
				return false, fmt.Sprintf("state %s (log %s), %d bytes so far", j.State, c.State, out.Len())
			}
		}
	})
	j := status()
	if !Finished(j.State) {
		t.Errorf("log said done but status says %v", j)
	}
	return out.String(), j, states
}
