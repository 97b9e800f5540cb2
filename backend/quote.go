package backend

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kballard/go-shellquote"
)

// Quote renders argv as sh words that sh splits back into exactly argv.
//
// shellquote.Join leaves two holes that matter here: a word that starts
// with '#' comes out bare and sh reads it as a comment, and a bare
// NAME=value in command position is an assignment, not argv[0]. Scripts
// therefore always put "exec" before the words, and words that begin with
// '#' or hold '=' or '~' anywhere (bash outside POSIX mode expands a '~'
// after '=' or ':') are single-quoted whole.
func Quote(argv ...string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		if strings.HasPrefix(a, "#") || strings.ContainsAny(a, "=~") {
			words[i] = singleQuote(a)
		} else {
			words[i] = shellquote.Join(a)
		}
	}
	return strings.Join(words, " ")
}

func singleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Text output is for a terminal: a job's argv, workdir or anything else a
// caller chose must not reach it raw. A control character could move the
// cursor, recolour the screen or print a fake "state: succeeded" line;
// JSON output stays exact.

// unsafeRune tells whether r must not reach a terminal: C0 and C1
// controls, DEL, and format characters (bidirectional overrides among
// them), which reorder or hide what is shown.
func unsafeRune(r rune) bool {
	return r == utf8.RuneError || unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r)
}

func needsEscape(s string) bool {
	for i, r := range s {
		if unsafeRune(r) && !(r == utf8.RuneError && strings.HasPrefix(s[i:], "\uFFFD")) {
			return true
		}
	}
	return false
}

// SafeText escapes what unsafeRune refuses, and invalid bytes, as \xHH
// (\n, \r, \t by name) or \u{HHHH}.
func SafeText(s string) string {
	if !needsEscape(s) {
		return s
	}
	return escapeRunes(s, false)
}

func escapeRunes(s string, quoting bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\\' && quoting:
			b.WriteString(`\\`)
		case r == '\'' && quoting:
			b.WriteString(`\'`)
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unsafeRune(r) && r != utf8.RuneError:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Display quotes argv for sh as Quote does, but a word with a
// character a terminal must not get is written in bash's $'...' form,
// which says every byte and which bash reads back as the same word.
func Display(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		if needsEscape(a) {
			words[i] = "$'" + escapeRunes(a, true) + "'"
		} else {
			words[i] = Quote(a)
		}
	}
	return strings.Join(words, " ")
}
