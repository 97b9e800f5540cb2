package run

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/status"
)

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// jobList is a JSON array that is [] when empty, never null.
func jobList(jobs []status.Job) []status.Job {
	if jobs == nil {
		return []status.Job{}
	}
	return jobs
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtInt(p *int) string {
	if p == nil {
		return "-"
	}
	return strconv.Itoa(*p)
}

func fmtRef(p *string) string {
	if p == nil {
		return "-"
	}
	return *p
}

// printJob writes one job as `key: value` lines.
func printJob(w io.Writer, j status.Job) error {
	exit := fmtInt(j.ExitCode)
	if j.Signal != "" {
		exit += " (signal " + j.Signal + ")"
	}
	lines := [][2]string{
		{"id", j.ID},
		{"name", orDash(j.NameOrEmpty())},
		{"state", string(j.State)},
		{"exit_code", exit},
		{"command", backend.Quote(j.Command...)},
		{"workdir", j.Workdir},
		{"backend", j.Backend},
		{"backend_ref", fmtRef(j.BackendRef)},
		{"user", j.User},
		{"requested_by", orDash(j.RequestedBy)},
		{"pid", fmtInt(j.PID)},
		{"attempt", strconv.Itoa(j.Attempt)},
		{"created_at", fmtTime(&j.CreatedAt)},
		{"started_at", fmtTime(j.StartedAt)},
		{"finished_at", fmtTime(j.FinishedAt)},
		{"duration", duration(j)},
		{"output_path", j.OutputPath},
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s: %s\n", l[0], l[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func duration(j status.Job) string {
	if j.StartedAt == nil {
		return "-"
	}
	end := time.Now()
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	return end.Sub(*j.StartedAt).Round(time.Millisecond).String()
}

// printTable writes jobs as an aligned table, one line each.
func printTable(w io.Writer, jobs []status.Job) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tEXIT\tNAME\tCREATED\tDURATION\tCOMMAND")
	for _, j := range jobs {
		cmd := backend.Quote(j.Command...)
		if len(cmd) > 60 {
			cmd = cmd[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, fmtInt(j.ExitCode),
			orDash(j.NameOrEmpty()), fmtTime(&j.CreatedAt), duration(j), strings.ReplaceAll(cmd, "\n", `\n`))
	}
	return tw.Flush()
}
