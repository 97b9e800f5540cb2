package run

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/policy"
)

// guard applies policy.CheckCommand once the command line is parsed; Main
// has applied it to the raw arguments already (guardArgs), before any
// flag of the command was looked at. Both, because a refusal must not
// depend on how well a pre-parse guesses what urfave/cli will run.
func (a *app) guard(c *cli.Context) error {
	m := policy.Detect()
	if !m.Sudo {
		return nil
	}
	name := c.Command.FullName()
	files := name == "config check" && c.Args().Present() || name == "doctor" && c.IsSet("fpm-conf")
	if err := policy.CheckCommand(name, files, m); err != nil {
		a.command = name
		return a.refuseEarly(err)
	}
	return nil
}

// guardArgs is guard for the raw command line: args[0] is the program.
func (a *app) guardArgs(args []string) error {
	m := policy.Detect()
	if !m.Sudo {
		return nil
	}
	name, files := commandOf(args)
	if err := policy.CheckCommand(name, files, m); err != nil {
		a.command = name
		return a.refuseEarly(err)
	}
	return nil
}

// globalValueFlags are the global flags that take a value.
var globalValueFlags = map[string]bool{"state-dir": true, "config": true, "log-level": true, "log-format": true}

// commandOf finds the command that urfave/cli will run ("config check"
// for a subcommand) and whether it was given a file to read: a file
// argument of config check, or doctor's --fpm-conf.
func commandOf(args []string) (name string, files bool) {
	i := 1
	for ; i < len(args); i++ {
		s := args[i]
		if s == "--" {
			return "", false
		}
		if !strings.HasPrefix(s, "-") || s == "-" {
			break
		}
		f := strings.TrimLeft(s, "-")
		if !strings.Contains(f, "=") && globalValueFlags[f] {
			i++
		}
	}
	if i >= len(args) {
		return "", false
	}
	name = args[i]
	rest := args[i+1:]
	switch name {
	case "config":
		for j, s := range rest {
			if !strings.HasPrefix(s, "-") {
				name += " " + s
				rest = rest[j+1:]
				break
			}
		}
		if name == "config check" {
			for _, s := range rest {
				if s != "--help" && s != "-h" && s != "-help" && s != "--" {
					files = true
				}
			}
		}
	case "doctor":
		for _, s := range rest {
			if s == "--" {
				break
			}
			f := strings.TrimLeft(s, "-")
			if strings.HasPrefix(s, "-") && (f == "fpm-conf" || strings.HasPrefix(f, "fpm-conf=")) {
				files = true
			}
		}
	}
	return name, files
}
