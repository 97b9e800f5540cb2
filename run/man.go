package run

import (
	"github.com/cmesh/cmesh-run/manpage"
	"github.com/urfave/cli/v2"
)

func (a *app) newManCommand() *cli.Command {
	return &cli.Command{
		Name:   "_man",
		Hidden: true,
		Usage:  "print the man page (roff)",
		Action: func(c *cli.Context) error { return manpage.Write(a.stdout, c.App) },
	}
}
