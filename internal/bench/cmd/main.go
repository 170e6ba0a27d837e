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
	if err := run(ctx, *tasks, *jobs, *latencyJobs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, tasks, jobs, latencyJobs int) error {
	fmt.Printf("mrcluster benchmark: %s/%s, %d CPUs, %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
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
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tvalue\ttarget\t")
	fmt.Fprintf(w, "raw JetStream publish+consume+ack (ceiling)\t%.0f msg/s\t\t\n", ceiling)
	fmt.Fprintf(w, "noop tasks end to end (%d jobs x %d)\t%.0f tasks/s\t>= 20000\t\n", jobs, tasks/jobs, tput)
	fmt.Fprintf(w, "  share of the ceiling\t%.0f %%\t\t\n", 100*tput/ceiling)
	fmt.Fprintf(w, "1-partition job submit->done p50 (%d jobs)\t%s\t<= 5ms\t\n", latencyJobs, bench.Percentile(lat, 50).Round(10*time.Microsecond))
	fmt.Fprintf(w, "1-partition job submit->done p99\t%s\t\t\n", bench.Percentile(lat, 99).Round(10*time.Microsecond))
	return w.Flush()
}
