package mr

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The local files of a task (a map's spills, a reduce's inputs) live in a
// directory of their own under Env.TempDir, removed when the task ends. A
// process killed in the middle of a task (SIGKILL, the kernel's OOM
// killer, a power cut) removes nothing: its directory, up to gigabytes of
// spills, would stay for ever, and each crash would leave one more. So
// the task holds a lock on its directory (flock, released by the kernel
// when the process dies, whatever kills it), and CleanTemp removes the
// directories no one holds.

// taskDirPrefixes name the directories of tasks under a TempDir.
var taskDirPrefixes = []string{"mrcluster-spill-", "mrcluster-reduce-"}

// taskDir makes a directory for a task's local files under parent and
// locks it; release removes it and lets the lock go.
func taskDir(parent, prefix string) (dir string, release func(), err error) {
	dir, err = os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", nil, err
	}
	f, err := os.Open(dir)
	if err == nil {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return dir, func() {
		os.RemoveAll(dir)
		f.Close()
	}, nil
}

// TempDir is where tasks keep their local files given --temp-dir dir: dir,
// or the system's temporary directory when it is "".
func TempDir(dir string) string {
	if dir == "" {
		return os.TempDir()
	}
	return dir
}

// CheckTempDir says what is wrong with dir ("" means the system's
// temporary directory) as the place of tasks' local files, or nil: it must
// be a directory a task can make its own in. Checked at start, a
// wrong --temp-dir is the operator's error at once, not every data task's
// failure later.
func CheckTempDir(dir string) error {
	dir = TempDir(dir)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: create it, or give another directory", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	probe, err := os.MkdirTemp(dir, "mrcluster-check-")
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return nil // full for now: its tasks wait for space (the worker says so)
	case err != nil:
		return fmt.Errorf("cannot make a directory in %s: %w", dir, err)
	}
	return os.Remove(probe)
}

// staleAfter is how old a task's directory must be before CleanTemp looks
// at it: one just made is locked a moment after, not at once.
const staleAfter = time.Minute

// CleanTemp removes the directories of tasks under parent ("" means the
// system's temporary directory) that no running task holds: those of
// processes that died in the middle of a task. It returns how many it
// removed and how many bytes they held.
func CleanTemp(parent string) (removed int, bytes int64, err error) {
	parent = TempDir(parent)
	var errs []error
	for _, prefix := range taskDirPrefixes {
		dirs, err := filepath.Glob(filepath.Join(parent, prefix+"*"))
		if err != nil {
			return removed, bytes, err
		}
		for _, dir := range dirs {
			n, ok, err := removeUnheld(dir)
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				removed++
				bytes += n
			}
		}
	}
	return removed, bytes, errors.Join(errs...)
}

// removeUnheld removes dir if it is a directory older than staleAfter
// that no process holds the lock of, and returns the bytes it held.
func removeUnheld(dir string) (n int64, removed bool, err error) {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < staleAfter {
		return 0, false, nil // gone meanwhile, not ours, or too new
	}
	f, err := os.Open(dir)
	if err != nil {
		return 0, false, nil
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return 0, false, nil // a running task's
	}
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return 0, false, fmt.Errorf("remove %s, left by a task whose process died: %w", dir, err)
	}
	return n, true, nil
}
