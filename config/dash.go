package config

import (
	"regexp/syntax"
	"slices"
)

// LeadingDash lists, as "PROFILE.ARG", every profile argument whose
// pattern accepts a value that starts with '-': substituted into a
// program's argv, such a value is read as an option of that program
// (--output=/etc/..., -e CMD). config check and doctor warn about each.
func (c *Config) LeadingDash() []string {
	var out []string
	for name, p := range c.Profiles {
		for arg, pat := range p.Args {
			if CanStartWithDash(pat) {
				out = append(out, name+"."+arg)
			}
		}
	}
	slices.Sort(out)
	return out
}

// CanStartWithDash tells whether pattern, matched in full as Pattern
// does, accepts some value whose first byte is '-'. It runs the compiled
// program on '-' and asks whether a match can still be reached: zero-width
// assertions are taken as passable, so the answer errs towards yes.
func CanStartWithDash(pattern string) bool {
	re, err := syntax.Parse(`^(?:`+pattern+`)$`, syntax.Perl)
	if err != nil {
		return false
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return false
	}
	// States reachable without input from pc, then after reading '-'.
	var closure func(pc uint32, seen map[uint32]bool)
	closure = func(pc uint32, seen map[uint32]bool) {
		if seen[pc] {
			return
		}
		seen[pc] = true
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			closure(in.Out, seen)
			closure(in.Arg, seen)
		case syntax.InstCapture, syntax.InstNop, syntax.InstEmptyWidth:
			closure(in.Out, seen)
		}
	}
	start := map[uint32]bool{}
	closure(uint32(prog.Start), start)
	after := map[uint32]bool{}
	for pc := range start {
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
			if in.MatchRune('-') {
				closure(in.Out, after)
			}
		}
	}
	// From there, can any path reach a match? Every rune instruction
	// accepts some rune, so reachability is the question.
	stack := make([]uint32, 0, len(after))
	seen := map[uint32]bool{}
	for pc := range after {
		stack = append(stack, pc)
	}
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstMatch:
			return true
		case syntax.InstFail:
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, in.Out, in.Arg)
		default:
			stack = append(stack, in.Out)
		}
	}
	return false
}
