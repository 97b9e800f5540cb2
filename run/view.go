package run

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

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
		{"command", backend.Display(j.Command)},
		{"workdir", j.Workdir},
		{"backend", j.Backend},
		{"backend_ref", fmtRef(j.BackendRef)},
		{"user", j.User},
		{"requested_by", orDash(j.RequestedBy)},
		{"pid", fmtInt(j.PID)},
		{"host", fmtRef(j.Host)},
		{"attempt", strconv.Itoa(j.Attempt)},
		{"created_at", fmtTime(&j.CreatedAt)},
		{"started_at", fmtTime(j.StartedAt)},
		{"finished_at", fmtTime(j.FinishedAt)},
		{"duration", duration(j)},
		{"output_path", j.OutputPath},
		{"queue", j.QueueName()},
	}
	if len(j.After) > 0 {
		after := strings.Join(j.After, ",")
		if j.AfterAny {
			after += " (whatever they end as)"
		}
		lines = append(lines, [2]string{"after", after})
	}
	if j.NotBefore != nil {
		nb := fmtTime(j.NotBefore)
		if j.State == status.Queued {
			nb += " (starts in " + time.Until(*j.NotBefore).Round(time.Second).String() + ")"
		}
		lines = append(lines, [2]string{"not_before", nb})
	}
	if j.RerunOf != nil {
		lines = append(lines, [2]string{"rerun_of", *j.RerunOf})
	}
	if j.Reason != nil {
		lines = append(lines, [2]string{"reason", *j.Reason})
	}
	if p := j.Progress; p != nil {
		v := fmt.Sprintf("%d/%d (%d%%)", p.Done, p.Total, p.Done*100/p.Total)
		if p.Message != "" {
			v += " " + p.Message
		}
		lines = append(lines, [2]string{"progress", v})
	}
	if h := j.Hook; h != nil {
		v := h.Argv0 + " started " + fmtTime(&h.StartedAt)
		if h.FinishedAt != nil {
			v = h.Argv0 + " exit " + fmtInt(h.ExitCode)
			if h.TimedOut {
				v += " (timed out, killed)"
			}
			v += " at " + fmtTime(h.FinishedAt)
		}
		lines = append(lines, [2]string{"hook", v})
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s: %s\n", l[0], backend.SafeText(l[1]))
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

// printTable writes jobs as an aligned table, one line each, with times
// relative to now; states are coloured on a terminal unless NO_COLOR is
// set.
func printTable(w io.Writer, jobs []status.Job) error {
	color := useColor(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\tEXIT\tNAME\tCREATED\tDURATION\tCOMMAND\n", paint("STATE", "", color))
	now := time.Now()
	for _, j := range jobs {
		cmd := backend.Display(j.Command)
		if len(cmd) > 60 {
			cmd = cmd[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, paint(string(j.State), j.State, color), fmtInt(j.ExitCode),
			backend.SafeText(orDash(j.NameOrEmpty())), ago(now, j.CreatedAt), duration(j), cmd)
	}
	return tw.Flush()
}

// ago renders t relative to now: "12s ago", "5m ago", "3h ago", "2d ago".
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// useColor: a terminal, and NO_COLOR unset (https://no-color.org).
func useColor(w io.Writer) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// paint colours a state. The escape codes are zero-width for the eye but
// not for tabwriter, so every cell of the column, header included, gets
// escape codes of the same length (two-digit codes).
func paint(s string, st status.State, color bool) string {
	if !color {
		return s
	}
	code := "39"
	switch st {
	case status.Succeeded:
		code = "32"
	case status.Failed, status.Lost, status.TimedOut:
		code = "31"
	case status.Running, status.Waiting:
		code = "33"
	case status.Queued, status.Canceled:
		code = "02"
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}
