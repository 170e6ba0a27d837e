package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// Corpus writes about mb MiB of text into dir by repeating the files of
// src, one file per copy, and returns their paths.
func Corpus(src, dir string, mb int) ([]string, int64, error) {
	books, err := filepath.Glob(filepath.Join(src, "*.txt"))
	if err != nil || len(books) == 0 {
		return nil, 0, fmt.Errorf("no *.txt in %s: %v", src, err)
	}
	sort.Strings(books)
	var paths []string
	var total int64
	for i := 0; total < int64(mb)<<20; i++ {
		data, err := os.ReadFile(books[i%len(books)])
		if err != nil {
			return nil, 0, err
		}
		p := filepath.Join(dir, fmt.Sprintf("%04d-%s", i, filepath.Base(books[i%len(books)])))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, 0, err
		}
		paths = append(paths, p)
		total += int64(len(data))
	}
	return paths, total, nil
}

// Sequential counts the words of the files in one goroutine, the plain way
// (a bufio.Scanner and counts[string(word)]++), and returns MB/s (10^6
// bytes a second) and the number of distinct words.
func Sequential(paths []string) (float64, int, error) {
	counts := map[string]int64{}
	rate, err := sequential(paths, func(f *os.File) error { return kinds.WordCounts(f, counts) })
	return rate, len(counts), err
}

// SequentialTuned is Sequential without an allocation per word: counts
// are found by a lookup that does not convert the word, and stored behind
// pointers.
func SequentialTuned(paths []string) (float64, error) {
	counts := map[string]*int64{}
	return sequential(paths, func(f *os.File) error {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			kinds.EachWord(sc.Bytes(), func(w []byte) {
				if p, ok := counts[string(w)]; ok {
					*p++
				} else {
					n := int64(1)
					counts[string(w)] = &n
				}
			})
		}
		return sc.Err()
	})
}

func sequential(paths []string, count func(*os.File) error) (float64, error) {
	start := time.Now()
	var total int64
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return 0, err
		}
		st, _ := f.Stat()
		total += st.Size()
		err = count(f)
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	return float64(total) / 1e6 / time.Since(start).Seconds(), nil
}

// Upload stores the files as dataset ds, streaming each from disk.
func (c *Cluster) Upload(ctx context.Context, ds string, paths []string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil {
			_, err = c.api.PutFile(ctx, ds, filepath.Base(p), f, st.Size())
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("upload %s: %w", p, err)
		}
	}
	return nil
}

// WordCount runs a wordcount job over ds and returns MB/s from submit to
// success, and the job's output record count.
func (c *Cluster) WordCount(ctx context.Context, ds string, size int64, m, r int) (float64, int64, error) {
	return c.Count(ctx, "wordcount", ds, size, m, r)
}

// UploadWasmWordCount builds examples/wasm-wordcount with the Go toolchain
// and uploads it as kind name.
func (c *Cluster) UploadWasmWordCount(ctx context.Context, name string) error {
	dir, err := os.MkdirTemp("", "mrcluster-wasm")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "wc.wasm")
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-o", out, "./examples/wasm-wordcount")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build examples/wasm-wordcount: %w: %s", err, msg)
	}
	f, err := os.Open(out)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = c.api.PutKind(ctx, name, "", f, -1)
	return err
}

// Count runs a word count of kind (the built-in wordcount, or an uploaded
// one) over ds and returns its MB/s and the distinct words it counted.
func (c *Cluster) Count(ctx context.Context, kind, ds string, size int64, m, r int) (float64, int64, error) {
	w, err := c.watch(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer w.events.Close()
	if p := os.Getenv("MRCLUSTER_BENCH_JOBPROF"); p != "" {
		f, err := os.Create(p + "." + kind) // one per kind the run counts with
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	start := time.Now()
	id, err := c.submit(ctx, client.Spec{Kind: kind, Input: []string{ds}, Partitions: m, Reducers: r})
	if err != nil {
		return 0, 0, fmt.Errorf("submit wordcount: %w", err)
	}
	j := struct{ ID string }{id}
	c.lastJob = j.ID
	for {
		select {
		case id, ok := <-w.finished:
			if !ok {
				return 0, 0, fmt.Errorf("event stream closed")
			}
			if id != j.ID {
				continue
			}
			secs := time.Since(start).Seconds()
			res, err := c.api.Job(ctx, j.ID)
			if err != nil {
				return 0, 0, err
			}
			if res.State != client.Succeeded || res.Counters == nil || res.Counters.InputBytes != size {
				return 0, 0, fmt.Errorf("wordcount %s: %s %s, counters %+v, want %d input bytes", j.ID, res.State, res.Error, res.Counters, size)
			}
			if os.Getenv("MRCLUSTER_BENCH_VERBOSE") != "" {
				c.timeline(ctx, j.ID, start)
			}
			return float64(size) / 1e6 / secs, res.Counters.ReduceOutputRecords, nil
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
}

// PeakRSS returns the process's peak resident memory in MiB.
//
// It is the process's own high-water mark (VmHWM), not getrusage's
// maxrss: Linux carries maxrss across an exec, and Go starts a child
// sharing its parent's memory until the exec, so the child process of
// make bench's memory run reported the parent's peak (425 MiB, that of
// the 210 MB word count run in-process before it) as its own.
func PeakRSS() float64 {
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				if kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64); err == nil {
					return kb / 1024
				}
			}
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // Linux reports KiB
}

// timeline prints when each task of job id ran, relative to start.
func (c *Cluster) timeline(ctx context.Context, id string, start time.Time) {
	tasks, err := c.api.Tasks(ctx, id)
	if err != nil {
		return
	}
	for _, t := range tasks {
		fmt.Fprintf(os.Stderr, "%-6s %3d %-20s %6.2fs .. %6.2fs\n", t.Phase, t.Partition, t.Worker, t.StartedAt.Sub(start).Seconds(), t.FinishedAt.Sub(start).Seconds())
	}
}
