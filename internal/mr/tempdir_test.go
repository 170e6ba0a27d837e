package mr

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CleanTemp removes the task directories no process holds (a task's whose
// process died) once they are a minute old, with what they hold, and
// leaves a running task's, a new one and anything not a task's.
func TestCleanTempRemovesOnlyWhatNoTaskHolds(t *testing.T) {
	parent := t.TempDir()
	old := time.Now().Add(-2 * staleAfter)
	mk := func(name string, size int, age time.Time) string {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "run-0"), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dir, age, age); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dead := mk("mrcluster-spill-1", 1000, old)
	deadReduce := mk("mrcluster-reduce-2", 500, old)
	fresh := mk("mrcluster-spill-3", 10, time.Now())
	other := mk("someone-else", 10, old)
	held, release, err := taskDir(parent, "mrcluster-spill-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(held, old, old); err != nil {
		t.Fatal(err)
	}

	n, bytes, err := CleanTemp(parent)
	if err != nil || n != 2 || bytes != 1500 {
		t.Fatalf("CleanTemp removed %d directories of %d bytes (%v), want 2 of 1500", n, bytes, err)
	}
	for _, dir := range []string{dead, deadReduce} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s, left by a dead task, is still there (%v)", dir, err)
		}
	}
	for _, dir := range []string{fresh, other, held} {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("%s was removed: %v", dir, err)
		}
	}

	// The running task ends: its directory goes with it.
	release()
	if _, err := os.Stat(held); !os.IsNotExist(err) {
		t.Fatalf("a task's directory is still there after it ended (%v)", err)
	}
}
