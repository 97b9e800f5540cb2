// Package manpage writes cmesh-run(1). The page is generated from the
// command line itself (commands, flags, help texts) plus the hand-written
// sections in sections/, so that it cannot drift from what the binary
// accepts; `make man` writes man/cmesh-run.1 and the tests fail when the
// committed page is stale.
//
// Each file of sections/ is one top-level section of the page, in roff,
// starting with its .SH line; the files come in the order of their names.
package manpage

import (
	"embed"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/urfave/cli/v2"
)

// Date is the page's date; bump it with the page's content.
const Date = "2026-12-04"

//go:embed sections/*.roff
var sections embed.FS

// generated appends, after a section's hand-written text, what the
// command line says: the usage line, the flags, the commands.
var generated = map[string]func(io.Writer, *cli.App){
	"010-name.roff": func(w io.Writer, app *cli.App) {
		fmt.Fprintf(w, "cmesh\\-run \\- %s\n", roff(fill(app.Usage)))
	},
	"040-global-options.roff": func(w io.Writer, app *cli.App) { writeFlags(w, app.Flags) },
	"050-commands.roff":       writeCommands,
}

// Write writes the page for app.
func Write(w io.Writer, app *cli.App) error {
	files, err := fs.ReadDir(sections, "sections")
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	fmt.Fprintf(w, ".TH CMESH\\-RUN 1 %s \"cmesh\\-run\" \"User Commands\"\n", Date)
	for _, f := range files {
		text, err := sections.ReadFile("sections/" + f.Name())
		if err != nil {
			return err
		}
		if _, err := w.Write(text); err != nil {
			return err
		}
		if gen := generated[f.Name()]; gen != nil {
			gen(w, app)
			seen[f.Name()] = true
		}
	}
	// A renamed section file would otherwise drop the generated part silently.
	for name := range generated {
		if !seen[name] {
			return fmt.Errorf("man page: section file %s is missing", name)
		}
	}
	return nil
}

func writeCommands(w io.Writer, app *cli.App) {
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		fmt.Fprintf(w, ".SS \"%s %s\"\n", roff(c.Name), roff(c.ArgsUsage))
		fmt.Fprintf(w, "%s.\n", roff(fill(upperFirst(c.Usage))))
		desc, example, _ := strings.Cut(c.Description, "EXAMPLE:\n")
		if d := strings.TrimSpace(desc); d != "" {
			fmt.Fprintf(w, ".PP\n%s\n", roff(fill(d)))
		}
		writeFlags(w, c.Flags)
		if ex := strings.TrimSpace(example); ex != "" {
			fmt.Fprintf(w, ".PP\nExample:\n.PP\n.RS 4\n.nf\n")
			for _, l := range strings.Split(ex, "\n") {
				fmt.Fprintln(w, roff(strings.TrimSpace(l)))
			}
			fmt.Fprintf(w, ".fi\n.RE\n")
		}
	}
}

func writeFlags(w io.Writer, flags []cli.Flag) {
	for _, f := range flags {
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		var names []string
		for _, n := range f.Names() {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			names = append(names, `\fB`+roff(dash+n)+`\fR`)
		}
		ph, usage := placeholder(df.GetUsage())
		head := strings.Join(names, ", ")
		if df.TakesValue() {
			if ph == "" {
				ph = "VALUE"
			}
			head += ` \fI` + roff(ph) + `\fR`
		}
		text := usage
		if d := df.GetDefaultText(); d != "" {
			text += " (default: " + d + ")"
		} else if v := df.GetValue(); df.TakesValue() && v != "" && v != "0" && v != "false" {
			text += " (default: " + v + ")"
		}
		if ef, ok := f.(interface{ GetEnvVars() []string }); ok && len(ef.GetEnvVars()) > 0 {
			text += " (environment: " + strings.Join(ef.GetEnvVars(), ", ") + ")"
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", head, roff(fill(text)))
	}
}

// fill breaks text at spaces so that no input line is longer than 78 bytes
// (roff refills it anyway).
func fill(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for len(line) > 78 {
			i := strings.LastIndexByte(line[:78], ' ')
			if i <= 0 {
				break
			}
			out = append(out, line[:i])
			line = line[i+1:]
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// roff escapes text for a roff body line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var b strings.Builder
	for i, line := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			b.WriteString(`\&`)
		}
		b.WriteString(line)
	}
	return b.String()
}

// placeholder splits a usage text into its `PLACEHOLDER` and plain text.
func placeholder(usage string) (string, string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	name := usage[i+1 : i+1+j]
	return name, usage[:i] + name + usage[i+2+j:]
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
