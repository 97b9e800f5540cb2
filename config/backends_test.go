package config

// Config validation asks the backend registry, which the backends fill in
// from their init: the tests link them all, as the binary does.
import (
	_ "github.com/cmesh/cmesh-run/atsched"
	_ "github.com/cmesh/cmesh-run/direct"
	_ "github.com/cmesh/cmesh-run/slurm"
	_ "github.com/cmesh/cmesh-run/spool"
	_ "github.com/cmesh/cmesh-run/systemd"
)
