// Package config reads cmesh-run's TOML config file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/cmesh/cmesh-run/status"
)

// DefaultPath is where the config lives when nobody says otherwise.
const DefaultPath = "/etc/cmesh-run/config.toml"

// DefaultJobPath is the PATH of every job unless the config sets one.
const DefaultJobPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config is the file's content. Keys are documented in the man page.
type Config struct {
	Backend           string             `toml:"backend"`
	Workdir           string             `toml:"workdir"`
	Path              string             `toml:"path"`
	Lang              string             `toml:"lang"`
	StateDir          string             `toml:"state_dir"`
	AllowFreeCommands *bool              `toml:"allow_free_commands"`
	MaxRunning        int                `toml:"max_running"`
	Env               map[string]string  `toml:"env"`
	Profiles          map[string]Profile `toml:"profiles"`

	File string `toml:"-"` // where it was read from, "" for none
}

// Profile is a named, pre-approved command.
type Profile struct {
	Command []string          `toml:"command"`
	Args    map[string]string `toml:"args"`
	Name    string            `toml:"name"`
	Unique  bool              `toml:"unique"`
	Timeout string            `toml:"timeout"`
	Workdir string            `toml:"workdir"`
	Env     map[string]string `toml:"env"`
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Load reads path. A missing file is an error only when required.
func Load(path string, required bool) (*Config, error) {
	c := &Config{}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !required {
			return c.withDefaults(), nil
		}
		return nil, status.Errorf(status.Usage, "config %s: %v", path, unwrap(err)).
			WithHint("pass an existing --config file, or none")
	}
	if err := Parse(data, c); err != nil {
		return nil, status.Errorf(status.Usage, "config %s: %v", path, err).
			WithHint("fix the file; cmesh-run config check %s validates it", path)
	}
	c.File = path
	return c.withDefaults(), nil
}

// Parse decodes data strictly: unknown keys and bad values are errors
// that name the line and the key.
func Parse(data []byte, c *Config) error {
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		key := und[0].String()
		return fmt.Errorf("line %d: unknown key %q", lineOf(data, und[0][len(und[0])-1]), key)
	}
	switch c.Backend {
	case "", "at":
	default:
		return fmt.Errorf("line %d: key \"backend\": %q is not a backend this build has (at)", lineOf(data, "backend"), c.Backend)
	}
	if c.MaxRunning < 0 {
		return fmt.Errorf("line %d: key \"max_running\": must be 0 or more", lineOf(data, "max_running"))
	}
	for k := range c.Env {
		if !envName.MatchString(k) {
			return fmt.Errorf("line %d: key \"env.%s\": not a valid variable name", lineOf(data, k), k)
		}
	}
	for _, p := range []struct{ key, v string }{{"workdir", c.Workdir}, {"state_dir", c.StateDir}} {
		if p.v != "" && !strings.HasPrefix(p.v, "/") {
			return fmt.Errorf("line %d: key %q: must be an absolute path", lineOf(data, p.key), p.key)
		}
	}
	return nil
}

// lineOf finds the first line that sets key, for error messages.
func lineOf(data []byte, key string) int {
	for i, line := range bytes.Split(data, []byte("\n")) {
		l := strings.TrimSpace(string(line))
		if strings.HasPrefix(l, key) || strings.HasPrefix(l, `"`+key+`"`) || strings.Contains(l, "."+key) || strings.Contains(l, "["+key) {
			return i + 1
		}
	}
	return 0
}

func (c *Config) withDefaults() *Config {
	if c.Backend == "" {
		c.Backend = "at"
	}
	if c.Path == "" {
		c.Path = DefaultJobPath
	}
	if c.Lang == "" {
		c.Lang = "C.UTF-8"
	}
	return c
}

func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// EnvName reports whether name can be an environment variable's name.
func EnvName(name string) bool { return envName.MatchString(name) }
