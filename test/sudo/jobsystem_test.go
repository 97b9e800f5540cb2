//go:build integration

package sudo

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cmesh/cmesh-run/test/itest"
)

// putConfig replaces the root config atomically, root:root 0644.
func putConfig(t *testing.T, text string) {
	t.Helper()
	tmp := confFile + ".test-tmp"
	itest.Must(t, itest.WriteSynced(tmp, []byte(text), 0o644))
	itest.Must(t, os.Chown(tmp, 0, 0))
	itest.Must(t, os.Chmod(tmp, 0o644))
	itest.Must(t, os.Rename(tmp, confFile))
}

// Through sudo a profile job may be rerun, checked again against today's
// config: a pattern tightened since, or the profile gone, refuses it. Queue
// pause and resume are refused unless the config allows them.
func testJobSystemUnderSudo(t *testing.T, w *world, first job) {
	p := w.pool
	r := p.sudo(t, "rerun", "--json", first.ID)
	var j struct {
		ID      string  `json:"id"`
		RerunOf *string `json:"rerun_of"`
		Command []string
	}
	if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &j) != nil || j.RerunOf == nil || *j.RerunOf != first.ID {
		t.Fatalf("rerun of the profile job through sudo: exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}
	if strings.Join(j.Command, " ") != strings.Join(first.Command, " ") {
		t.Errorf("the rerun runs %q, the job ran %q", j.Command, first.Command)
	}

	orig := w.config()
	defer putConfig(t, orig)
	quoted := strconv.Quote(argPattern)
	tightened := strings.Replace(orig, "org = "+quoted, "org = "+strconv.Quote("x[0-9]+"), 1)
	if tightened == orig {
		t.Fatalf("the config has no org pattern to tighten:\n%s", orig)
	}
	putConfig(t, tightened)
	expectDenied(t, w, itest.WebUser, true, func() result { return p.sudo(t, "rerun", "--json", first.ID).result })

	gone := strings.Replace(orig, "[profiles.build]", "[profiles.renamed]", 1)
	putConfig(t, gone)
	expectDenied(t, w, itest.WebUser, true, func() result { return p.sudo(t, "rerun", "--json", first.ID).result })

	putConfig(t, orig)
	expectDenied(t, w, itest.WebUser, false, func() result { return p.sudo(t, "queue", "pause", "default").result })
	// A top-level key after a table belongs to the table: put it first.
	putConfig(t, "allow_queue_control = true\n"+orig)
	if r := p.sudo(t, "queue", "pause", "default"); r.Exit != 0 {
		t.Errorf("queue pause with allow_queue_control: exit %d: %s", r.Exit, r.Stderr)
	}
	if r := p.sudo(t, "queue", "resume", "default"); r.Exit != 0 {
		t.Errorf("queue resume with allow_queue_control: exit %d: %s", r.Exit, r.Stderr)
	}
}
