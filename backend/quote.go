package backend

import (
	"strings"

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
