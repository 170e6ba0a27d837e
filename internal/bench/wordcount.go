package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

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
		req, err := http.NewRequestWithContext(ctx, "PUT", c.srv.URL()+"/api/v1/datasets/"+ds+"/files/"+filepath.Base(p), f)
		if err != nil {
			f.Close()
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		f.Close()
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("upload %s: %s %s", p, resp.Status, body)
		}
	}
	return nil
}

// WordCount runs a wordcount job over ds and returns MB/s from submit to
// success, and the job's output record count.
func (c *Cluster) WordCount(ctx context.Context, ds string, size int64, m, r int) (float64, int64, error) {
	w, err := c.watch(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer w.conn.CloseNow()
	if p := os.Getenv("MRCLUSTER_BENCH_JOBPROF"); p != "" {
		f, err := os.Create(p)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	start := time.Now()
	body := fmt.Sprintf(`{"kind":"wordcount","input":[%q],"partitions":%d,"reducers":%d}`, ds, m, r)
	req, err := http.NewRequestWithContext(ctx, "POST", c.srv.URL()+"/api/v1/jobs", strings.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	var j struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&j)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		return 0, 0, fmt.Errorf("submit wordcount: %s %v", resp.Status, err)
	}
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
			var res struct {
				State    string `json:"state"`
				Error    string `json:"error"`
				Counters struct {
					InputBytes          int64 `json:"input_bytes"`
					ReduceOutputRecords int64 `json:"reduce_output_records"`
				} `json:"counters"`
			}
			if err := json.Unmarshal([]byte(c.describe(ctx, j.ID)), &res); err != nil {
				return 0, 0, err
			}
			if res.State != "succeeded" || res.Counters.InputBytes != size {
				return 0, 0, fmt.Errorf("wordcount %s: %s %s, read %d of %d bytes", j.ID, res.State, res.Error, res.Counters.InputBytes, size)
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
func PeakRSS() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // Linux reports KiB
}

// timeline prints when each task of job id ran, relative to start.
func (c *Cluster) timeline(ctx context.Context, id string, start time.Time) {
	req, _ := http.NewRequestWithContext(ctx, "GET", c.srv.URL()+"/api/v1/jobs/"+id+"/tasks", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var out struct {
		Tasks []struct {
			Phase      string    `json:"phase"`
			Partition  int       `json:"partition"`
			Worker     string    `json:"worker"`
			StartedAt  time.Time `json:"started_at"`
			FinishedAt time.Time `json:"finished_at"`
		} `json:"tasks"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	for _, t := range out.Tasks {
		fmt.Fprintf(os.Stderr, "%-6s %3d %-20s %6.2fs .. %6.2fs\n", t.Phase, t.Partition, t.Worker, t.StartedAt.Sub(start).Seconds(), t.FinishedAt.Sub(start).Seconds())
	}
}
