package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cmesh/cmesh-run/atsched"
)

func TestParseFPM(t *testing.T) {
	p := filepath.Join(t.TempDir(), "www.conf")
	os.WriteFile(p, []byte(`; comment
[global]
pid = /run/php.pid
[www]
user = www-data
clear_env = no ; trailing comment
php_admin_value[disable_functions] = "exec,system"
[api]
user=api
user=api2
`), 0o644)
	pools, err := parseFPM(p)
	if err != nil || len(pools) != 2 {
		t.Fatalf("parseFPM = %+v, %v", pools, err)
	}
	if v := pools[0].values; v["user"] != "www-data" || v["clear_env"] != "no" || v["php_admin_value[disable_functions]"] != "exec,system" {
		t.Errorf("www = %v", v)
	}
	if pools[1].values["user"] != "api2" {
		t.Errorf("the last value wins, as in php-fpm: %v", pools[1].values)
	}
}

func TestStateDirModes(t *testing.T) {
	dir := t.TempDir()
	env := Env{At: atsched.New("tester", os.Getuid()), StateDir: dir}
	for mode, want := range map[os.FileMode]string{0o750: OK, 0o755: Warn, 0o777: Fail} {
		os.Chmod(dir, mode)
		var got []Check
		checkStateDir(env, func(c Check) { got = append(got, c) })
		if got[0].Status != want {
			t.Errorf("mode %o: %+v, want %s", mode, got[0], want)
		}
	}
	env.StateDir = "/var/www/state"
	var got []Check
	checkStateDir(env, func(c Check) { got = append(got, c) })
	last := got[len(got)-1]
	if last.Status != Warn || !strings.Contains(last.Message, "under /var/www") {
		t.Errorf("state dir under the web root: %+v", last)
	}
}
