package jobs

import (
	"encoding/json"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
)

// SpoolRequest is a request file: what a caller that cannot exec (PHP with
// exec and proc_open disabled) writes into STATE_DIR/spool/incoming as
// REQUEST_ID.json, under a temporary name starting with "." first, then
// renamed. The worker or drain answers in spool/results/REQUEST_ID.json
// with the job object, or {"error":{"code","message","hint"}}.
type SpoolRequest struct {
	RequestID string            `json:"request_id"`
	Profile   string            `json:"profile,omitempty"`
	Args      map[string]string `json:"args,omitempty"`
	Argv      []string          `json:"argv,omitempty"`
	Name      string            `json:"name,omitempty"`
	Unique    bool              `json:"unique,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Workdir   string            `json:"workdir,omitempty"`
	Timeout   string            `json:"timeout,omitempty"`
	Retries   *int              `json:"retries,omitempty"`
	Queue     string            `json:"queue,omitempty"`
	After     []string          `json:"after,omitempty"`
	AfterAny  bool              `json:"after_any,omitempty"`
	At        string            `json:"at,omitempty"` // as --at
	In        string            `json:"in,omitempty"` // as --in
	// Rerun names a job to schedule again, as cmesh-run rerun does; the
	// request then holds nothing else.
	Rerun string `json:"rerun,omitempty"`
}

// maxRequest bounds a request file.
const maxRequest = 64 << 10

// Decode turns the request into the one typed request policy.Check takes:
// from the spool, for the spool backend, asked by asker.
func (q SpoolRequest) Decode(asker string) (policy.Request, error) {
	r := policy.Request{From: policy.Spool, Asker: asker, Argv: q.Argv, Unique: q.Unique, Retries: q.Retries, Backend: "spool"}
	if q.Profile != "" {
		r.Profile = &q.Profile
	}
	if len(q.Args) > 0 {
		r.Args = pairs(q.Args)
	}
	if q.Name != "" {
		r.Name = &q.Name
	}
	if q.Workdir != "" {
		r.Workdir = &q.Workdir
	}
	if len(q.Env) > 0 {
		r.Env = pairs(q.Env)
	}
	if q.Queue != "" {
		r.Queue = &q.Queue
	}
	r.After, r.AfterAny = q.After, q.AfterAny
	if q.At != "" {
		t, err := ParseStartTime(q.At, time.Now())
		if err != nil {
			return r, err
		}
		r.NotBefore = &t
	}
	if q.In != "" {
		d, err := config.ParseDuration(q.In)
		if err != nil {
			return r, errs.Errorf(errs.Usage, "in: %v", err).WithHint("e.g. \"in\": \"15m\"")
		}
		r.In = &d
	}
	if q.Timeout != "" {
		d, err := config.ParseDuration(q.Timeout)
		if err != nil {
			return r, errs.Errorf(errs.Usage, "--timeout: %v", err).WithHint("e.g. --timeout 15m")
		}
		r.Timeout = &d
	}
	return r, nil
}

// decode is Decode, and for a rerun request the rerun's request.
func (s *Service) decode(q SpoolRequest, asker string) (policy.Request, error) {
	if q.Rerun == "" {
		return q.Decode(asker)
	}
	if other := (SpoolRequest{RequestID: q.RequestID, Rerun: q.Rerun}); !reflect.DeepEqual(q, other) {
		return policy.Request{}, errs.Errorf(errs.Usage, "request %s: rerun goes alone", q.RequestID).
			WithHint(`{"request_id":"...","rerun":"JOB_ID"}`)
	}
	if err := policy.CheckJobID(q.Rerun, policy.Mode{Sudo: true}); err != nil {
		return policy.Request{}, err
	}
	r, err := s.RerunRequest(q.Rerun, policy.Spool)
	r.Asker, r.Backend = asker, "spool"
	return r, err
}

// pairs renders m as KEY=VALUE, sorted by key.
func pairs(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return out
}

// TakeRequests turns every request in spool/incoming into a queued spool
// job, or a recorded refusal. Requests are untrusted, whoever wrote them:
// they get exactly the rules of sudo mode (policy.Spool). Whatever an
// entry is (a FIFO, a symlink, a directory, a huge file), it is opened so
// that it cannot block the worker, and it leaves incoming once: taken, or
// moved to spool/rejected with one audit line and one answer.
func (s *Service) TakeRequests(sp *spool.Spool) {
	for _, n := range sp.Incoming() {
		s.takeRequest(sp, sp.IncomingPath(n))
	}
}

func (s *Service) takeRequest(sp *spool.Spool, path string) {
	reqID := strings.TrimSuffix(filepath.Base(path), ".json")
	if status.CheckID(reqID) != nil {
		reqID = "invalid-" + strconv.FormatInt(int64(len(path)), 10) + "-" + status.NewNonce()[:8]
	}
	owner, data, err := readRequest(path)
	asker := "spool:" + owner
	var rec *status.Record
	var reused bool
	if err == nil {
		var q SpoolRequest
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		if err = dec.Decode(&q); err != nil {
			err = errs.Errorf(errs.Usage, "request %s: %v", filepath.Base(path), err).WithHint("see the request format in man cmesh-run, SPOOL")
		} else if q.RequestID != reqID {
			err = errs.Errorf(errs.Usage, "request file %s says request_id %q", filepath.Base(path), q.RequestID).
				WithHint("name the file REQUEST_ID.json")
		} else {
			var r policy.Request
			var sub policy.Submission
			if r, err = s.decode(q, asker); err == nil {
				if sub, err = policy.Check(r, s.Cfg); err == nil {
					rec, reused, err = s.Submit(sub)
				}
			}
		}
	}
	if err != nil {
		// Out of incoming first: should anything below fail, the entry
		// is still never refused (and audited) twice.
		if rerr := sp.Reject(filepath.Base(path)); rerr != nil {
			s.Log.Warnf("request %s: cannot move it out of incoming: %v", reqID, rerr)
		}
		s.Log.WithFields(logrus.Fields{"request": reqID, "requested_by": asker}).Warnf("request refused: %v", err)
		s.Audit.Line(logrus.Fields{"request": reqID, "requested_by": asker, "outcome": "refused", "error": err.Error()}, "request refused", "cmesh-run refused")
		// A refusal's answer is written without fsync: losing it in a
		// crash costs the caller a retry, and a flood of bad requests
		// must not cost a disk flush each.
		s.writeResult(sp, reqID, map[string]any{"request_id": reqID, "error": map[string]string{"code": errs.Code(err), "message": err.Error(), "hint": errs.HintOf(err)}}, false)
		return
	}
	_ = os.Remove(path)
	j := rec.Public()
	j.Reused = status.Ptr(reused)
	s.writeResult(sp, reqID, struct {
		RequestID string `json:"request_id"`
		status.Job
	}{reqID, j}, true)
}

// readRequest reads a request file without following a planted link,
// without blocking on a FIFO or a device (O_NONBLOCK), and only when it is
// a regular file within the size bound; it returns the name of its owner.
func readRequest(path string) (string, []byte, error) {
	base := filepath.Base(path)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		owner := "?"
		if st, lerr := os.Lstat(path); lerr == nil {
			owner = ownerName(st)
			if st.Mode()&os.ModeSymlink != 0 {
				return owner, nil, errs.Errorf(errs.Usage, "request %s is a symlink", base).WithHint("write the request itself, then rename it into incoming")
			}
		}
		return owner, nil, errs.Errorf(errs.Usage, "request %s: %v", base, unwrapPathErr(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "?", nil, err
	}
	owner := ownerName(st)
	switch {
	case !st.Mode().IsRegular():
		return owner, nil, errs.Errorf(errs.Usage, "request %s is not a regular file (%s)", base, st.Mode().Type()).
			WithHint("write the request as a file, then rename it into incoming")
	case st.Size() > maxRequest:
		return owner, nil, errs.Errorf(errs.Usage, "request %s is over %d bytes", base, maxRequest)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRequest+1))
	if err != nil {
		return owner, nil, err
	}
	if len(data) > maxRequest {
		return owner, nil, errs.Errorf(errs.Usage, "request %s is over %d bytes", base, maxRequest)
	}
	return owner, data, nil
}

func ownerName(st os.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "?"
	}
	owner := strconv.Itoa(int(sys.Uid))
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	return owner
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (s *Service) writeResult(sp *spool.Spool, reqID string, v any, durable bool) {
	b, err := json.Marshal(v)
	write := status.WriteFile
	if !durable {
		write = status.WriteFileUnsynced
	}
	if err == nil {
		err = write(sp.ResultPath(reqID), append(b, '\n'), 0o640)
	}
	if err != nil {
		s.Log.Warnf("result of request %s: %v", reqID, err)
	}
}
