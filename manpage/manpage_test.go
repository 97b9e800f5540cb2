package manpage

import (
	"bytes"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// headings are the page's top-level sections, in order; a section may be
// added, but none may go missing.
var headings = []string{
	"NAME", "SYNOPSIS", "DESCRIPTION", "GLOBAL OPTIONS", "COMMANDS",
	"THE JOB OBJECT", "STATES", "JOB CONTROL", "QUEUES, DEPENDENCIES AND SCHEDULES", "HOOKS AND PROGRESS", "BACKENDS", "SPOOL REQUESTS",
	"MARKERS", "THE JOB'S ENVIRONMENT", "CONFIG", "SECURITY", "ENVIRONMENT",
	"FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO",
}

var sectionName = regexp.MustCompile(`^[0-9]{3}-[a-z0-9-]+\.roff$`)

func TestSectionFiles(t *testing.T) {
	files, err := fs.ReadDir(sections, "sections")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		name := f.Name()
		if !sectionName.MatchString(name) {
			t.Errorf("%s: a section file is named NNN-name.roff", name)
		}
		b, err := sections.ReadFile("sections/" + name)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		head, body, _ := strings.Cut(text, "\n")
		if !strings.HasPrefix(head, ".SH ") {
			t.Errorf("%s: does not start with a .SH line", name)
			continue
		}
		got = append(got, strings.TrimPrefix(head, ".SH "))
		if strings.TrimSpace(body) == "" && generated[name] == nil {
			t.Errorf("%s: the section is empty", name)
		}
		if !strings.HasSuffix(text, "\n") {
			t.Errorf("%s: does not end with a newline", name)
		}
		if strings.Contains(body, "\n.SH ") || strings.HasPrefix(body, ".SH ") {
			t.Errorf("%s: holds more than one section", name)
		}
	}
	for _, h := range missing(headings, got) {
		t.Errorf("no section file for %s", h)
	}
}

func TestPageSections(t *testing.T) {
	app := &cli.App{
		Usage: "run jobs",
		Flags: []cli.Flag{&cli.StringFlag{Name: "config", Usage: "read `FILE`"}},
		Commands: []*cli.Command{
			{Name: "status", ArgsUsage: "[ID]", Usage: "show a job"},
			{Name: "_hidden", Hidden: true, Usage: "not on the page"},
		},
	}
	var buf bytes.Buffer
	if err := Write(&buf, app); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	var got []string
	for _, line := range strings.Split(page, "\n") {
		if h, ok := strings.CutPrefix(line, ".SH "); ok {
			got = append(got, strings.Trim(h, `"`))
		}
	}
	for _, h := range missing(headings, got) {
		t.Errorf("the page has no section %s", h)
	}
	for i := 1; i < len(got); i++ {
		if slices.Index(headings, got[i-1]) > slices.Index(headings, got[i]) {
			t.Errorf("section %s comes after %s", got[i], got[i-1])
		}
	}
	for _, want := range []string{
		".TH CMESH\\-RUN 1 " + Date + " ",
		".SH NAME\ncmesh\\-run \\- run jobs\n",
		".TP\n\\fB\\-\\-config\\fR \\fIFILE\\fR\nread FILE\n",
		".SS \"status [ID]\"\nShow a job.\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "_hidden") {
		t.Error("the page shows a hidden command")
	}
}

func missing(want, got []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	return out
}
