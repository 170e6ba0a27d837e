// Command bench prints mrcluster's throughput and latency beside the raw
// JetStream ceiling, measured in the same run: `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/internal/bench"
)

func main() {
	tasks := flag.Int("tasks", 100000, "noop tasks in the throughput run")
	jobs := flag.Int("jobs", 10, "jobs the throughput run's tasks are split into")
	latencyJobs := flag.Int("latency-jobs", 1000, "one-partition jobs in the latency run")
	corpus := flag.String("corpus", "../shared/corpus/gutenberg", "directory of the books the wordcount corpus repeats")
	wcMB := flag.Int("wordcount-mb", 200, "size of the wordcount corpus in MiB (0: skip the wordcount run)")
	wcM := flag.Int("wordcount-maps", 8, "map tasks of the wordcount run")
	wcR := flag.Int("wordcount-reducers", 4, "reduce tasks of the wordcount run")
	only := flag.String("only", "", "run only this part: tasks or wordcount")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile at the end to this file")
	defer func() {
		if *memprofile != "" {
			f, _ := os.Create(*memprofile)
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}()
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, opts{*tasks, *jobs, *latencyJobs, *corpus, *wcMB, *wcM, *wcR, *only}); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

type opts struct {
	tasks, jobs, latencyJobs int
	corpus                   string
	wcMB, wcM, wcR           int
	only                     string
}

func run(ctx context.Context, o opts) error {
	fmt.Printf("mrcluster benchmark: %s/%s, %d CPUs, %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tvalue\ttarget\t")
	if o.only == "" || o.only == "tasks" {
		if err := tasks(ctx, w, o.tasks, o.jobs, o.latencyJobs); err != nil {
			return err
		}
	}
	if (o.only == "" || o.only == "wordcount") && o.wcMB > 0 {
		if err := wordcount(ctx, w, o); err != nil {
			return fmt.Errorf("wordcount: %w", err)
		}
	}
	return w.Flush()
}

func wordcount(ctx context.Context, w *tabwriter.Writer, o opts) error {
	dir, err := os.MkdirTemp("", "mrcluster-corpus")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	paths, size, err := bench.Corpus(o.corpus, dir, o.wcMB)
	if err != nil {
		return err
	}
	seq, distinct, err := bench.Sequential(paths)
	if err != nil {
		return err
	}
	tuned, err := bench.SequentialTuned(paths)
	if err != nil {
		return err
	}
	c, err := bench.StartCluster(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Upload(ctx, "corpus", paths); err != nil {
		return err
	}
	rate, keys, err := c.WordCount(ctx, "corpus", size, o.wcM, o.wcR)
	if err != nil {
		return err
	}
	if keys != int64(distinct) {
		return fmt.Errorf("the cluster counted %d distinct words, the sequential count %d", keys, distinct)
	}
	fmt.Fprintf(w, "sequential Go word count, 1 goroutine (%d MB)\t%.1f MB/s\t\t\n", size/1e6, seq)
	fmt.Fprintf(w, "wordcount job, 4 in-process workers (M=%d, R=%d)\t%.1f MB/s\t\t\n", o.wcM, o.wcR, rate)
	fmt.Fprintf(w, "  speed-up over sequential\t%.2fx\t>= 1.6x\t\n", rate/seq)
	fmt.Fprintf(w, "sequential, tuned: no allocation per word\t%.1f MB/s\t\t\n", tuned)
	fmt.Fprintf(w, "  speed-up over the tuned sequential\t%.2fx\t\t\n", rate/tuned)
	fmt.Fprintf(w, "  peak resident memory of the process (server, workers, bench)\t%.0f MiB\t\t\n", bench.PeakRSS())
	return nil
}

func tasks(ctx context.Context, w *tabwriter.Writer, tasks, jobs, latencyJobs int) error {
	ceiling, err := bench.JetStreamCeiling(ctx, tasks)
	if err != nil {
		return fmt.Errorf("JetStream ceiling: %w", err)
	}
	c, err := bench.StartCluster(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// Warm up: first jobs pay for stream files and connections.
	if _, err := c.Throughput(ctx, 2, 1000); err != nil {
		return err
	}
	tput, err := c.Throughput(ctx, jobs, tasks/jobs)
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	lat, err := c.Latency(ctx, latencyJobs)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	fmt.Fprintf(w, "raw JetStream publish+consume+ack (ceiling)\t%.0f msg/s\t\t\n", ceiling)
	fmt.Fprintf(w, "noop tasks end to end (%d jobs x %d)\t%.0f tasks/s\t>= 20000\t\n", jobs, tasks/jobs, tput)
	fmt.Fprintf(w, "  share of the ceiling\t%.0f %%\t\t\n", 100*tput/ceiling)
	fmt.Fprintf(w, "1-partition job submit->done p50 (%d jobs)\t%s\t<= 5ms\t\n", latencyJobs, bench.Percentile(lat, 50).Round(10*time.Microsecond))
	fmt.Fprintf(w, "1-partition job submit->done p99\t%s\t\t\n", bench.Percentile(lat, 99).Round(10*time.Microsecond))
	return nil
}
