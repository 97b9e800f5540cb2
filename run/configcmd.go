package run

import (
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
)

func (a *app) newConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "show the effective config, or check a config file",
		Subcommands: []*cli.Command{
			{
				Name:        "show",
				Usage:       "print the effective config (file plus defaults) as TOML",
				Description: "EXAMPLE:\n   cmesh-run config show",
				Action: func(c *cli.Context) error {
					if err := a.setup(c); err != nil {
						return err
					}
					src := a.svc.Cfg.File
					if src == "" {
						src = "none, defaults only"
					}
					fmt.Fprintf(a.stdout, "# config: %s\n# state dir: %s\n", src, a.svc.StateDir)
					return toml.NewEncoder(a.stdout).Encode(a.svc.Cfg)
				},
			},
			{
				Name:        "check",
				Usage:       "validate a config file (default: the one in use); exit 2 with file, line and key when it is wrong",
				ArgsUsage:   "[FILE]",
				Description: "EXAMPLE:\n   cmesh-run config check /etc/cmesh-run/config.toml.new",
				Action: func(c *cli.Context) error {
					path := c.Args().First()
					if path == "" {
						path = c.String("config")
					}
					if path == "" {
						path = config.DefaultPath
					}
					if c.NArg() > 1 {
						return errs.Errorf(errs.Usage, "config check takes one file").WithHint("cmesh-run config check FILE")
					}
					cfg, err := config.Load(path, true)
					if err != nil {
						return err
					}
					for _, w := range dashWarnings(cfg) {
						fmt.Fprintf(a.stderr, "cmesh-run: warning: %s: %s\n", path, w)
					}
					_, err = fmt.Fprintf(a.stdout, "%s: ok\n", path)
					return err
				},
			},
		},
	}
}

// dashWarnings says, for each profile argument whose pattern lets a value
// start with '-', what that allows and how to close it.
func dashWarnings(cfg *config.Config) []string {
	var out []string
	for _, pa := range cfg.LeadingDash() {
		prof, arg, _ := strings.Cut(pa, ".")
		out = append(out, fmt.Sprintf("profile %s: the pattern of argument %s (%s) accepts a value starting with '-', which the program may read as an option; begin the pattern with a class without '-', e.g. [a-z0-9][a-z0-9-]*",
			prof, arg, cfg.Profiles[prof].Args[arg]))
	}
	return out
}
