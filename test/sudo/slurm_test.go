//go:build integration

package sudo

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// testSlurmUnderSudo: a PHP-FPM request schedules a profile job through sudo that a real Slurm
// cluster runs on one of its nodes; the page follows it with status and log through the PHP
// client, from the submit side. The config names the cluster; the caller cannot.
func testSlurmUnderSudo(t *testing.T, w *world) {
	if err := (itest.Needs{Tools: itest.SlurmTools, Install: strings.Join(itest.SlurmPackages, " ")}).Check(); err != nil {
		itest.Unavailable(t, "sudo: slurm", err.Error())
	}
	c := itest.StartCluster(t)
	installConfig(t, strings.Replace(w.config(), `backend = "at"`, `backend = "slurm"`, 1)+fmt.Sprintf("\n[slurm]\nconf = %q\n", c.Conf))
	t.Cleanup(func() { installConfig(t, w.config()) })

	p := w.pool
	var j job
	r := p.client(t, map[string]any{"op": "schedule", "options": map[string]any{
		"profile": "build", "args": map[string]string{"org": "venus", "name": "slurm"},
	}}, &j)
	if !r.OK {
		t.Fatalf("schedule --profile build through sudo to Slurm: %+v", r.Error)
	}
	if j.Backend != "slurm" || j.BackendRef == nil || !strings.HasSuffix(*j.BackendRef, "@"+c.Name) {
		t.Errorf("backend %q ref %v: want a Slurm job of cluster %s", j.Backend, j.BackendRef, c.Name)
	}
	var final struct {
		job
		Host *string `json:"host"`
	}
	itest.Poll(t, 60*time.Second, "the Slurm job to finish", func() (bool, string) {
		if r := p.client(t, map[string]any{"op": "status", "id": j.ID}, &final); !r.OK {
			t.Fatalf("status through sudo: %+v", r.Error)
		}
		return itest.Finished(final.State), final.State
	})
	if final.State != "succeeded" || final.User != runAs || final.RequestedBy != itest.WebUser {
		t.Errorf("the Slurm job ended %v", final.job)
	}
	if final.Host == nil || c.Node(*final.Host) == nil {
		t.Errorf("host %v: want one of the cluster's nodes", final.Host)
	}
	var chunk struct {
		Data string `json:"data"`
		Done bool   `json:"done"`
	}
	if r := p.client(t, map[string]any{"op": "log", "id": j.ID}, &chunk); !r.OK || !chunk.Done {
		t.Fatalf("log through sudo: %+v done=%v", r.Error, chunk.Done)
	}
	if !strings.HasPrefix(chunk.Data, "build venus slurm\n"+runAs+"\n") {
		t.Errorf("the job's output does not start with \"build venus slurm\\n%s\\n\":\n%s", runAs, chunk.Data)
	}
	for _, line := range strings.Split(chunk.Data, "\n") {
		if strings.HasPrefix(line, "SLURM") {
			t.Errorf("Slurm's variable %q reached the job", line)
		}
	}
	var waited int
	if r := p.client(t, map[string]any{"op": "wait", "id": j.ID, "timeout": 10}, &waited); !r.OK || waited != 0 {
		t.Errorf("wait through sudo: %+v, exit %d; want the job's 0", r.Error, waited)
	}
}
