package jobs

// The backends: each folder registers itself (backend.Register) from its
// init. A new backend is a new folder and one line here.
import (
	_ "github.com/cmesh/cmesh-run/atsched"
	_ "github.com/cmesh/cmesh-run/direct"
	_ "github.com/cmesh/cmesh-run/slurm"
	_ "github.com/cmesh/cmesh-run/spool"
	_ "github.com/cmesh/cmesh-run/systemd"
)
