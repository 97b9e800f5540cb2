package run

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/setup"
	"github.com/cmesh/cmesh-run/systemd"
)

func (a *app) newSetupCommand() *cli.Command {
	return &cli.Command{
		Name:  "setup",
		Usage: "print (or, with --write, install) what PHP needs to run jobs through sudo as another user",
		Description: "Prints, as commented shell commands, each step still missing: the run-as user, the binary\n" +
			"at the path the sudo rule names, the sudoers file (checked with visudo -cf), at.allow/at.deny,\n" +
			"the state dir (owner RUN_AS, group of WEB_USER, mode 2750) and a commented sample config.\n" +
			"With --write it carries them out (as root). Run again: it prints nothing left to do.\n\n" +
			"EXAMPLE:\n   cmesh-run setup --web-user www-data --run-as cmesh\n" +
			"   sudo cmesh-run setup --web-user www-data --run-as cmesh --write",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "web-user", Value: "www-data", Usage: "the PHP-FPM pool's `USER`"},
			&cli.StringFlag{Name: "run-as", Value: "cmesh", Usage: "the `USER` jobs run as"},
			&cli.StringFlag{Name: "binary", Value: "/usr/local/bin/cmesh-run", Usage: "where the sudo rule finds cmesh-run (`PATH`)"},
			&cli.StringFlag{Name: "supervisor", Usage: "also write the spool worker's supervisor program to `FILE` (e.g. /etc/supervisor/conf.d/cmesh-run-worker.conf)"},
			&cli.BoolFlag{Name: "systemd-template", Usage: "also install systemd's template unit " + systemd.TemplatePath + ": --backend systemd then starts each job as cmesh-run@ID.service instead of a transient unit"},
			&cli.BoolFlag{Name: "write", Usage: "carry the steps out"},
		},
		Action: a.runSetup,
	}
}

func (a *app) runSetup(c *cli.Context) error {
	if err := a.setup(c); err != nil {
		return err
	}
	if a.mode.Sudo && c.Bool("write") && os.Getenv("SUDO_USER") != "" && os.Geteuid() != 0 {
		return errs.Errorf(errs.Denied, "setup --write needs root").WithHint("sudo cmesh-run setup --write ...")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := a.svc.StateDir
	if !c.IsSet("state-dir") && a.svc.Cfg.StateDir == "" && os.Getenv("CMESH_RUN_STATE_DIR") == "" {
		dir = "/var/lib/cmesh-run"
	}
	o := setup.Options{
		WebUser: c.String("web-user"), RunAs: c.String("run-as"), Binary: c.String("binary"),
		StateDir: dir, Config: config.DefaultPath, Sudoers: config.SudoersPath,
		AtAllow: "/etc/at.allow", AtDeny: "/etc/at.deny", Self: self,
		Supervisor: c.String("supervisor"),
	}
	if c.Bool("systemd-template") {
		o.SystemdTemplate = systemd.TemplatePath
	}
	for _, u := range []string{o.WebUser, o.RunAs} {
		if !validUser(u) {
			return errs.Errorf(errs.Usage, "bad user name %q", u).WithHint("a login name: letters, digits, _ . -")
		}
	}
	steps := setup.Plan(o)
	if !c.Bool("write") {
		setup.Print(a.stdout, steps)
		return nil
	}
	if os.Geteuid() != 0 {
		return errs.Errorf(errs.Denied, "setup --write needs root").WithHint("sudo cmesh-run setup --write ...")
	}
	if err := setup.Apply(a.stdout, steps); err != nil {
		return errs.Errorf(errs.Internal, "setup: %v", err).WithHint("fix the cause and run setup --write again; it resumes")
	}
	return nil
}

func validUser(u string) bool {
	if u == "" || len(u) > 32 || u[0] == '-' {
		return false
	}
	for _, r := range u {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
