package run

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

func (a *app) newVersionCommand() *cli.Command {
	return &cli.Command{
		Name:        "version",
		Usage:       "print cmesh-run's version",
		Description: "EXAMPLE:\n   cmesh-run version",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintf(a.stdout, "cmesh-run %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
