package status

import (
	"bytes"
	"testing"
	"time"
)

// The record's MAC must change with every value the wrapper acts on, so
// that a wrapper handed a foreign argv or spec refuses it.
func TestSpecMACBindsEverything(t *testing.T) {
	base := Spec{Nonce: "n1", Key: "k1", Workdir: "/srv", Env: []string{"PATH=/bin", "A=1"}, Timeout: time.Minute, Retries: 1, Slots: 2}
	argv := []string{"/bin/echo", "hi"}
	mac := base.MAC(argv)
	if !base.MACMatches(argv, mac) {
		t.Fatal("the spec does not match its own MAC")
	}
	changed := map[string]func(Spec, []string) (Spec, []string){
		"argv":    func(s Spec, a []string) (Spec, []string) { return s, []string{"/bin/sh", "-c", "id"} },
		"arg":     func(s Spec, a []string) (Spec, []string) { return s, []string{"/bin/echo", "hi "} },
		"workdir": func(s Spec, a []string) (Spec, []string) { s.Workdir = "/"; return s, a },
		"env":     func(s Spec, a []string) (Spec, []string) { s.Env = []string{"PATH=/tmp", "A=1"}; return s, a },
		"env+": func(s Spec, a []string) (Spec, []string) {
			s.Env = append([]string{}, append(s.Env, "LD_PRELOAD=/x.so")...)
			return s, a
		},
		"timeout":  func(s Spec, a []string) (Spec, []string) { s.Timeout = 0; return s, a },
		"retries":  func(s Spec, a []string) (Spec, []string) { s.Retries = 9; return s, a },
		"slots":    func(s Spec, a []string) (Spec, []string) { s.Slots = 0; return s, a },
		"nonce":    func(s Spec, a []string) (Spec, []string) { s.Nonce = "n2"; return s, a },
		"key":      func(s Spec, a []string) (Spec, []string) { s.Key = "k2"; return s, a },
		"no key":   func(s Spec, a []string) (Spec, []string) { s.Key = ""; return s, a },
		"nice":     func(s Spec, a []string) (Spec, []string) { s.Nice = 5; return s, a },
		"split":    func(s Spec, a []string) (Spec, []string) { return s, []string{"/bin/echo hi"} },
		"rlimit":   func(s Spec, a []string) (Spec, []string) { s.Limits = []Rlimit{{"nofile", 10}}; return s, a },
		"no argv":  func(s Spec, a []string) (Spec, []string) { return s, nil },
		"env kept": func(s Spec, a []string) (Spec, []string) { s.Env = []string{"A=1", "PATH=/bin"}; return s, a },
	}
	for name, f := range changed {
		s, a := f(base, argv)
		if s.MACMatches(a, mac) {
			t.Errorf("%s changed, yet the MAC matches", name)
		}
	}
	// The key travels in the script: it must survive Encode and DecodeSpec.
	dec, err := DecodeSpec(bytes.NewReader(base.Encode()))
	if err != nil || !dec.MACMatches(argv, mac) {
		t.Errorf("decoded spec does not match (%v): %+v", err, dec)
	}
}
