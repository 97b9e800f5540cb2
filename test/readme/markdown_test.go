//go:build integration

package readme

import (
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// block is one fenced code block of README.md.
type block struct {
	lang    string // what follows the opening fence: sh, php, or "" for a diagram
	heading string // the nearest heading above it
	n       int    // its number among the blocks of its language under that heading, from 1
	line    int    // the line of its opening fence
	text    string
}

// key names a block in blockSpecs and phpSpecs: `sh "Use" #1`.
func (b block) key() string { return fmt.Sprintf("%s %q #%d", b.lang, b.heading, b.n) }

// span is one inline code span, whitespace collapsed as Markdown renders it.
type span struct {
	text string
	line int
}

type readme struct {
	blocks []block
	spans  []span
	// sections maps a heading to its text up to the next heading of any level.
	sections map[string]string
}

var (
	fenceOpen  = regexp.MustCompile("^```([A-Za-z0-9_-]*)\\s*$")
	fenceClose = regexp.MustCompile("^```\\s*$")
	headingRe  = regexp.MustCompile(`^#{1,6}\s+(.*\S)\s*$`)
	spanRe     = regexp.MustCompile("`([^`]+)`")
)

func parseReadme(t *testing.T) readme {
	t.Helper()
	src := readFile(t, filepath.Join(repoRoot, "README.md"))
	r := readme{sections: map[string]string{}}
	heading := ""
	count := map[string]int{}
	var cur *block
	var body []string
	var prose strings.Builder
	proseLine := []int{} // prose's line i is README line proseLine[i]
	for i, l := range strings.Split(src, "\n") {
		if cur != nil {
			if fenceClose.MatchString(l) {
				cur.text = strings.Join(body, "\n") + "\n"
				r.blocks = append(r.blocks, *cur)
				cur, body = nil, nil
			} else {
				body = append(body, l)
			}
			r.sections[heading] += l + "\n"
			continue
		}
		if m := fenceOpen.FindStringSubmatch(l); m != nil {
			count[m[1]+"\x00"+heading]++
			cur = &block{lang: m[1], heading: heading, n: count[m[1]+"\x00"+heading], line: i + 1}
			continue
		}
		if m := headingRe.FindStringSubmatch(l); m != nil {
			heading = m[1]
			prose.WriteString("\n")
			proseLine = append(proseLine, i+1)
			continue
		}
		r.sections[heading] += l + "\n"
		prose.WriteString(l + "\n")
		proseLine = append(proseLine, i+1)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: fenced block never closed", cur.line)
	}
	text := prose.String()
	for _, m := range spanRe.FindAllStringSubmatchIndex(text, -1) {
		line := proseLine[strings.Count(text[:m[0]], "\n")]
		r.spans = append(r.spans, span{strings.Join(strings.Fields(text[m[2]:m[3]]), " "), line})
	}
	return r
}

// programs are the first words of a span that make it a command, when it has arguments.
var programs = map[string]bool{
	"cmesh-run": true, "make": true, "sudo": true, "sed": true, "systemctl": true, "man": true,
	"at": true, "atq": true, "atrm": true, "atd": true, "visudo": true, "sh": true, "bash": true,
	"php": true, "composer": true, "apt-get": true, "apt": true, "git": true, "go": true,
	"crontab": true, "supervisorctl": true, "service": true, "install": true, "chmod": true,
	"chown": true, "useradd": true, "userdel": true, "curl": true, "grep": true, "env": true,
	"nginx": true, "mandoc": true, "groff": true, "kill": true, "rm": true, "mkdir": true,
	"echo": true, "cat": true, "tail": true,
}

var (
	envAssign = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=\S*$`)
	cronField = regexp.MustCompile(`^[0-9*/,-]+$`)
	sbinPath  = regexp.MustCompile(`^/(usr/)?(local/)?sbin/[^/\s]+$`)
	shellOps  = map[string]bool{">": true, ">>": true, "<": true, "|": true, "||": true, "&": true, "&&": true, ";": true, "2>&1": true}
)

// isCommand tells a span that is a command (something a reader would type or a program
// would run) from one that names a thing: a command has arguments and starts with a
// program or a cmesh-run subcommand, or uses shell operators, or is a crontab line; a bare
// path under an sbin dir is a daemon started by its name.
func isCommand(s string, subcommands map[string]bool) bool {
	w := strings.Fields(s)
	if len(w) >= 7 && isCronTimes(w[:5]) {
		return true
	}
	for len(w) > 1 && envAssign.MatchString(w[0]) {
		w = w[1:]
	}
	if len(w) == 0 {
		return false
	}
	if len(w) == 1 {
		return sbinPath.MatchString(w[0])
	}
	if programs[path.Base(w[0])] || subcommands[w[0]] || strings.HasPrefix(w[0], "/") && strings.Contains(w[0], "bin/") {
		return true
	}
	for _, x := range w {
		if shellOps[x] {
			return true
		}
	}
	return false
}

func isCronTimes(w []string) bool {
	for _, f := range w {
		if !cronField.MatchString(f) {
			return false
		}
	}
	return true
}

// commandSpans returns each distinct command span of the README with the line it first
// appears on.
func (r readme) commandSpans(subcommands map[string]bool) map[string]int {
	out := map[string]int{}
	for _, s := range r.spans {
		if _, seen := out[s.text]; !seen && isCommand(s.text, subcommands) {
			out[s.text] = s.line
		}
	}
	return out
}

// blockLine is one command line of a fenced sh block, and its key in a spec: the line
// without its trailing comment.
type blockLine struct {
	n    int // its number among the block's command lines, from 1
	text string
	key  string
}

var trailingComment = regexp.MustCompile(`\s+#(\s.*)?$`)

// commandLines returns the lines of a sh block that start a command (not blank, not a
// comment, not the continuation of a line ending in \).
func commandLines(src string) []blockLine {
	var out []blockLine
	cont := false
	for _, l := range strings.Split(strings.TrimRight(src, "\n"), "\n") {
		tl := strings.TrimSpace(l)
		wasCont := cont
		cont = strings.HasSuffix(tl, `\`)
		if wasCont || tl == "" || strings.HasPrefix(tl, "#") {
			continue
		}
		out = append(out, blockLine{len(out) + 1, l, strings.TrimSpace(trailingComment.ReplaceAllString(l, ""))})
	}
	return out
}
