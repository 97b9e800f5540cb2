package main

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/cmesh/cmesh-run/run"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"cmesh-run": func() { os.Exit(run.Main(os.Args, os.Stdout, os.Stderr)) },
	})
}

// TestCLI runs the txtar scripts in testdata/script: the command line's
// contract (output, errors, exit statuses) on hand-made state dirs, with no
// backend involved. The suites under test/ run real jobs.
func TestCLI(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// exits N PROG ARGS...: run PROG and require exit status N.
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 {
					ts.Fatalf("usage: exits N PROG [ARGS...]")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("exits: %v", err)
				}
				got := 0
				if err := ts.Exec(args[1], args[2:]...); err != nil {
					var ee *exec.ExitError
					if !errors.As(err, &ee) {
						ts.Fatalf("exits: %v", err)
					}
					got = ee.ExitCode()
				}
				if (got == want) == neg {
					ts.Fatalf("exit status %d, want %d", got, want)
				}
			},
		},
		Setup: func(env *testscript.Env) error {
			env.Setenv("CMESH_RUN_STATE_DIR", env.WorkDir+"/state")
			return nil
		},
	})
}
