package config

import "testing"

func TestCanStartWithDash(t *testing.T) {
	for pat, want := range map[string]bool{
		`^[a-z0-9-]+$`:         true,
		`[a-z0-9-]+`:           true,
		`.*`:                   true,
		`-?[0-9]+`:             true,
		`(a|-b)`:               true,
		`[^a-z]+`:              true,
		`[a-z0-9][a-z0-9-]*`:   false,
		`^[a-z0-9][a-z0-9-]*$`: false,
		`[a-z]+`:               false,
		`[0-9]{1,5}`:           false,
		`a-b`:                  false,
		`(x|y)-`:               false,
		`-`:                    true,
		`\w+`:                  false,
		`[[:alnum:]_.-]+`:      true,
		`x*-`:                  true,
	} {
		if got := CanStartWithDash(pat); got != want {
			t.Errorf("CanStartWithDash(%q) = %v, want %v", pat, got, want)
		}
	}
}
