package wasmkind

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// cacheSums keeps a SHA-256 of every file of wazero's cache of compiled
// modules, in a file beside them. wazero checks a CRC of a compiled
// module's machine code, but not the table of its functions' offsets nor
// its sizes: a byte flipped there would be run as code (or make a slice of
// gigabytes), and one flipped in the code failed every task of the kind,
// for good ("compilationcache: checksum mismatch"), as the cache is read
// before any compile. A file that does not match its sum, or that has none
// (its process died before it wrote it), is removed before wazero reads
// it, and compiled again when needed.
type cacheSums struct {
	dir string // wazero's cache directory

	mu   sync.Mutex
	sums map[string]string // by path under dir: hex SHA-256
}

// sumsFile is the name of the sums' file in the cache directory.
const sumsFile = "mrcluster-sums"

// openCacheSums reads the sums of dir and removes the files that do not
// match theirs, returning them, and those that have none.
func openCacheSums(dir string) (*cacheSums, []string, error) {
	c := &cacheSums{dir: dir, sums: map[string]string{}}
	if data, err := os.ReadFile(filepath.Join(dir, sumsFile)); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			// A line a flipped byte spoiled is no sum: its file goes.
			if name, sum, ok := strings.Cut(sc.Text(), " "); ok && len(sum) == 2*sha256.Size {
				c.sums[name] = sum
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("read the sums of compiled modules: %w", err)
	}
	removed, err := c.check()
	return c, removed, err
}

// check removes the cache's files that do not match their sums (returned)
// or have none, and the sums of files gone.
func (c *cacheSums) check() (removed []string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	err = c.walk(func(name, path string) error {
		sum, err := fileSum(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil // removed meanwhile by another process on the directory
		}
		if err != nil {
			return err
		}
		switch c.sums[name] {
		case sum:
			seen[name] = true
			return nil
		case "":
			// Never recorded: its process died first, or an older
			// version wrote it. Compiled again, nothing to say.
		default:
			removed = append(removed, path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
	for name := range c.sums {
		if !seen[name] {
			delete(c.sums, name)
		}
	}
	// Unwritten (a full disk), the sums are written again at the next
	// compile's record; a missing line costs a compile, never a wrong run.
	_ = c.write()
	return removed, err
}

// record adds the sums of the cache's files that have none: those wazero
// wrote since (a compile that missed the cache).
func (c *cacheSums) record() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Another process on the same directory (worker processes of one
	// machine share one) may have recorded files since: keep its sums.
	if data, err := os.ReadFile(filepath.Join(c.dir, sumsFile)); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if name, sum, ok := strings.Cut(sc.Text(), " "); ok && len(sum) == 2*sha256.Size && c.sums[name] == "" {
				c.sums[name] = sum
			}
		}
	}
	added := false
	err := c.walk(func(name, path string) error {
		if _, ok := c.sums[name]; ok {
			return nil
		}
		sum, err := fileSum(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		c.sums[name], added = sum, true
		return nil
	})
	if err != nil || !added {
		return err
	}
	return c.write()
}

// walk calls fn with every compiled module's file in the cache: not the
// sums, not a file wazero is writing (it writes *.tmp, then renames).
func (c *cacheSums) walk(fn func(name, path string) error) error {
	return filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasSuffix(path, ".tmp") || strings.HasPrefix(d.Name(), sumsFile) {
			return nil
		}
		name, err := filepath.Rel(c.dir, path)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(name), path)
	})
}

// write replaces the sums' file.
func (c *cacheSums) write() error {
	var b strings.Builder
	for name, sum := range c.sums {
		fmt.Fprintf(&b, "%s %s\n", name, sum)
	}
	tmp := filepath.Join(c.dir, sumsFile+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write the sums of compiled modules: %w", err)
	}
	return os.Rename(tmp, filepath.Join(c.dir, sumsFile))
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
