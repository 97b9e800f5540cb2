package status

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// newestAll collects every ID Newest yields.
func newestAll(t *testing.T, s *Store) []string {
	t.Helper()
	var got []string
	if err := s.Newest(func(id string) bool { got = append(got, id); return true }); err != nil {
		t.Fatal(err)
	}
	return got
}

// makeJob makes a job the way schedule does: index entry, then record.
func makeJob(t *testing.T, s *Store, id string, indexed bool) {
	t.Helper()
	if indexed {
		if err := s.AddRecent(id); err != nil {
			t.Fatal(err)
		}
	}
	r := &Record{Job: Job{ID: id, State: Succeeded, CreatedAt: time.Now().UTC()}}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
}

// Newest walks every job exactly once, newest first, whether it is found
// in the index or only in the jobs folder (jobs from before the index),
// and however much of the index was trimmed.
func TestNewestCoversEveryJobOnce(t *testing.T) {
	s, err := Open(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n := recentKeep + 300
	for i := range n {
		// The last digit decides who trims: cycle through all 16.
		id := fmt.Sprintf("%s-abcde%x", base.Add(time.Duration(i)*time.Millisecond).Format("20060102-150405.000000"), i%16)
		makeJob(t, s, id, i >= 100) // the first 100 predate the index
		want = append(want, id)
	}
	slices.Reverse(want)
	if got := newestAll(t, s); !slices.Equal(got, want) {
		t.Fatalf("Newest yielded %d IDs, want %d in order (first %v)", len(got), len(want), got[:3])
	}
	entries, _ := os.ReadDir(s.recentDir())
	if len(entries) > recentKeep+16 || len(entries) < recentKeep {
		t.Errorf("index holds %d entries, want about %d", len(entries), recentKeep)
	}
	// A pruned job leaves a hole in the index; the walk skips nothing else.
	if err := s.Remove(want[5]); err != nil {
		t.Fatal(err)
	}
	var loaded []string
	s.Newest(func(id string) bool {
		if _, err := s.Load(id); err == nil {
			loaded = append(loaded, id)
		}
		return true
	})
	if len(loaded) != n-1 || slices.Contains(loaded, want[5]) {
		t.Errorf("after removing one job: %d loaded, want %d", len(loaded), n-1)
	}
	// Stopping early reads only what it needs.
	var first []string
	s.Newest(func(id string) bool { first = append(first, id); return len(first) < 3 })
	if !slices.Equal(first, []string{want[0], want[1], want[2]}) {
		t.Errorf("first three: %v", first)
	}
	// A state dir from before the index: a reader opens it and walks jobs/.
	if err := os.RemoveAll(s.recentDir()); err != nil {
		t.Fatal(err)
	}
	r, err := Open(s.Dir, false)
	if err != nil {
		t.Fatalf("Open without recent/: %v", err)
	}
	if got := newestAll(t, r); len(got) != n-1 || got[0] != want[0] {
		t.Errorf("without the index: %d IDs, first %v", len(got), got[:1])
	}
}

// A symlink planted as the index is never followed: schedule refuses to
// write through it, and readers fall back to the jobs folder.
func TestRecentIndexSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	// Planted after Open (which refuses a state dir whose folders were
	// replaced), for both index folders.
	elsewhere := t.TempDir()
	for _, index := range []string{"recent", "active"} {
		if err := os.Remove(filepath.Join(dir, index)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(elsewhere, filepath.Join(dir, index)); err != nil {
			t.Fatal(err)
		}
	}
	id := NewID(time.Now())
	if err := s.AddRecent(id); err == nil {
		t.Error("AddRecent wrote through a symlink")
	}
	if err := s.SetActive(id, true); err == nil {
		t.Error("SetActive wrote through a symlink")
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) > 0 {
		t.Errorf("files appeared behind the symlink: %v", entries)
	}
	makeJob(t, s, id, false)
	if got := newestAll(t, s); !slices.Equal(got, []string{id}) {
		t.Errorf("Newest with a planted index: %v", got)
	}
	if _, err := Open(dir, true); err == nil {
		t.Error("Open took a state dir whose recent/ is a symlink")
	}
}

// Index entries are hard links to the state dir's one empty entry file
// (no inode of their own), and still plain empty files where a link is
// refused; ending a job removes its name and nothing else.
func TestIndexEntriesAreLinks(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	inode := func(p string) (uint64, os.FileInfo) {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino, fi
	}
	a, b := NewID(time.Now()), NewID(time.Now().Add(time.Second))
	for _, id := range []string{a, b} {
		if err := s.SetActive(id, true); err != nil {
			t.Fatal(err)
		}
		if err := s.AddRecent(id); err != nil {
			t.Fatal(err)
		}
	}
	entry, fi := inode(filepath.Join(dir, "entry"))
	if !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Fatalf("entry: %v, %d bytes", fi.Mode(), fi.Size())
	}
	for _, p := range []string{"active/" + a, "active/" + b, "recent/" + a, "recent/" + b} {
		if ino, _ := inode(filepath.Join(dir, p)); ino != entry {
			t.Errorf("%s is inode %d, not a link to entry (%d)", p, ino, entry)
		}
	}
	// Marking twice is fine; unmarking removes the name only.
	if err := s.SetActive(a, true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetActive(a, false); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.ActiveIDs(); !slices.Equal(ids, []string{b}) {
		t.Errorf("active after ending %s: %v", a, ids)
	}
	if _, fi := inode(filepath.Join(dir, "entry")); fi.Sys().(*syscall.Stat_t).Nlink != 4 {
		t.Errorf("entry has %d links, want 4 (itself, active/b, recent/a, recent/b)", fi.Sys().(*syscall.Stat_t).Nlink)
	}

	// A link refused (here: entry replaced by a folder): an empty file.
	if err := os.Remove(filepath.Join(dir, "entry")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "entry"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := NewID(time.Now().Add(2 * time.Second))
	if err := s.SetActive(c, true); err != nil {
		t.Fatal(err)
	}
	if _, fi := inode(filepath.Join(dir, "active", c)); !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("fallback entry: %v, %d bytes", fi.Mode(), fi.Size())
	}
}
