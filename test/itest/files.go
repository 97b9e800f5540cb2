//go:build integration

package itest

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------------------------
// Files

// CopyFile copies src to dst with exactly mode: os.WriteFile's mode is filtered by the umask
// and leaves an existing file's mode alone, hence the Chmod.
func CopyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	Must(t, err)
	Must(t, os.WriteFile(dst, data, mode))
	Must(t, os.Chmod(dst, mode))
}

// CopyTree copies a directory of regular files: directories 0755, files 0644 (0755 when
// executable), all owned by root, so that www-data can read but not change them.
func CopyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		CopyFile(t, path, target, mode)
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// CopyPHPClient copies the PHP client (php/src) to root/php/src, where the suites' pages
// require it from.
func CopyPHPClient(t *testing.T, root string) {
	t.Helper()
	if m, _ := filepath.Glob("../../php/src/*.php"); len(m) == 0 {
		t.Fatalf("PHP client not found in ../../php/src")
	}
	CopyTree(t, "../../php/src", filepath.Join(root, "php", "src"))
}

// WriteInPlace rewrites an existing file's bytes through its own inode, so that its owner,
// mode and links stay those the machine gave it (the suites rewrite /etc/at.deny this way),
// and syncs them before it returns.
func WriteInPlace(path string, data []byte) error {
	return syncedWrite(path, os.O_WRONLY|os.O_TRUNC, 0, data)
}

// WriteSynced creates or truncates path with mode and syncs data before it returns: the
// suites write this way the backups and manifests a later run repairs the machine from when
// this one is killed, and files they then rename into place.
func WriteSynced(path string, data []byte, mode os.FileMode) error {
	return syncedWrite(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode, data)
}

func syncedWrite(path string, flag int, perm os.FileMode, data []byte) error {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SyncDir syncs a directory, so that a rename or removal in it survives a crash.
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ---------------------------------------------------------------------------------------------
// Text

// PHPString returns s as a PHP single-quoted string, for putting Go values into generated PHP
// source: between single quotes PHP interpolates nothing, and only \ and ' need escaping.
func PHPString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Clip shortens s for a failure message: its first and last 300 bytes.
func Clip(s string) string {
	if len(s) > 600 {
		return s[:300] + " ... " + s[len(s)-300:]
	}
	return s
}
