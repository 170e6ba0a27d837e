// Command bench prints mrcluster's throughput and latency beside the raw
// JetStream ceiling, measured in the same run: `make bench`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/bench"
	"github.com/mrcluster/mrcluster/internal/memtrim"
)

func main() {
	tasks := flag.Int("tasks", 100000, "noop tasks in the throughput run")
	jobs := flag.Int("jobs", 10, "jobs the throughput run's tasks are split into")
	latencyJobs := flag.Int("latency-jobs", 1000, "one-partition jobs in the latency run")
	corpus := flag.String("corpus", "../shared/corpus/gutenberg", "directory of the books the wordcount corpus repeats")
	wcMB := flag.Int("wordcount-mb", 200, "size of the wordcount corpus in MiB (0: skip the wordcount run)")
	wcM := flag.Int("wordcount-maps", 8, "map tasks of the wordcount run")
	wcR := flag.Int("wordcount-reducers", 4, "reduce tasks of the wordcount run")
	only := flag.String("only", "", "run only this part: tasks, small, wordcount, straggler or history")
	seq := flag.Bool("sequential", true, "measure the sequential word counts beside the wordcount job")
	memMB := flag.Int("memory-mb", 1024, "size of the corpus of the memory run, in MiB, counted with --memory-limit-mb (0: skip)")
	memLimit := flag.Int("memory-limit-mb", memtrim.DefaultLimit>>20, "the cluster's --memory-limit-mb in the memory run (default: the cluster's default)")
	stragglerMB := flag.Int("straggler-mb", 50, "size of the corpus of the straggler run, in MiB (0: skip)")
	historyJobs := flag.Int("history-jobs", 200000, "finished jobs of the history run: the server's memory and restart with them (0: skip)")
	data := flag.String("data", "", "data directory of the history run's server child")
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := run(ctx, opts{*tasks, *jobs, *latencyJobs, *corpus, *wcMB, *wcM, *wcR, *only, *seq, *memMB, *memLimit, *stragglerMB, *historyJobs, *data}); err != nil {
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
	sequential               bool
	memMB, memLimit          int
	stragglerMB              int
	historyJobs              int
	data                     string
}

func run(ctx context.Context, o opts) error {
	if o.only == "memory" {
		// The child of the memory run: rows without a header or alignment.
		return memory(ctx, os.Stdout, o)
	}
	if o.only == "serve" {
		return bench.Serve(ctx, o.data)
	}
	fmt.Printf("mrcluster benchmark: %s/%s, %d CPUs, %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tvalue\ttarget\t")
	if o.only == "" || o.only == "tasks" {
		if err := tasks(ctx, w, o.tasks, o.jobs, o.latencyJobs); err != nil {
			return err
		}
	}
	if o.only == "" || o.only == "small" {
		if err := smallJobs(ctx, w); err != nil {
			return err
		}
	}
	if (o.only == "" || o.only == "wordcount") && o.wcMB > 0 {
		if err := wordcount(ctx, w, o); err != nil {
			return fmt.Errorf("wordcount: %w", err)
		}
	}
	if (o.only == "" || o.only == "straggler") && o.stragglerMB > 0 {
		if err := straggler(ctx, w, o); err != nil {
			return fmt.Errorf("straggler: %w", err)
		}
	}
	if (o.only == "" || o.only == "history") && o.historyJobs > 0 {
		h, err := bench.RunHistory(ctx, o.historyJobs)
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		fmt.Fprintf(w, "%d one-partition jobs in batches of 1000 from 16 clients, submit to finished\t%.0f jobs/s\t\t\n", h.Submitted, h.Rate)
		fmt.Fprintf(w, "  the server's resident memory once they finished (peak)\t%.0f MiB (%.0f)\t\t\n", h.RSS, h.PeakRSS)
		fmt.Fprintf(w, "    and 30 s later, quiet\t%.0f MiB\t<= 150 MiB\t\n", h.RSSQuiet)
		fmt.Fprintf(w, "  a restart of the server with them stored, to ready\t%s\t<= 5s\t\n", h.Restart.Round(10*time.Millisecond))
		fmt.Fprintf(w, "  resident memory after the restart (peak)\t%.0f MiB (%.0f)\t\t\n", h.RSSAfter, h.PeakAfter)
		fmt.Fprintf(w, "    and 30 s later, quiet\t%.0f MiB\t<= 150 MiB\t\n", h.RSSAfterQuiet)
		fmt.Fprintf(w, "  a page of 50 of the newest / of jobs 1000 deep\t%s / %s\t\t\n", h.FirstPage.Round(100*time.Microsecond), h.OldPage.Round(100*time.Microsecond))
		fmt.Fprintf(w, "  submit latency p50 / p99 at %d jobs/s, a new server / after the restart\t%s / %s, %s / %s\t\t\n", bench.LatencyRate,
			h.LatencyNew[0].Round(100*time.Microsecond), h.LatencyNew[1].Round(100*time.Microsecond),
			h.LatencyAfter[0].Round(100*time.Microsecond), h.LatencyAfter[1].Round(100*time.Microsecond))
	}
	if o.only == "" && o.memMB > 0 {
		// A process of its own, so that its peak memory is the cluster's.
		cmd := exec.CommandContext(ctx, os.Args[0], "-only", "memory", "-corpus", o.corpus,
			"-memory-mb", strconv.Itoa(o.memMB), "-memory-limit-mb", strconv.Itoa(o.memLimit),
			"-wordcount-maps", strconv.Itoa(o.wcM), "-wordcount-reducers", strconv.Itoa(o.wcR))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("memory run: %w", err)
		}
		_, _ = w.Write(out)
	}
	return w.Flush()
}

// smallJobs measures one-partition jobs from 16 clients, one per request
// and in batches, beside Asynq+Redis with the same clients.
func smallJobs(ctx context.Context, w io.Writer) error {
	c, err := bench.StartCluster(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.SmallJobs(ctx, 1600, 16, 1, false); err != nil { // warm up
		return fmt.Errorf("small jobs: %w", err)
	}
	cpu0 := bench.ProcessCPU()
	single, err := c.SmallJobs(ctx, 8000, 16, 1, false)
	if err != nil {
		return fmt.Errorf("small jobs: %w", err)
	}
	singleCPU := (bench.ProcessCPU() - cpu0) / 8000
	// The client's and the CLI's default: a key per submit, stored too.
	keyed, err := c.SmallJobs(ctx, 8000, 16, 1, true)
	if err != nil {
		return fmt.Errorf("small jobs with keys: %w", err)
	}
	cpu0 = bench.ProcessCPU()
	batched, err := c.SmallJobs(ctx, 32000, 16, 100, true)
	if err != nil {
		return fmt.Errorf("small jobs in batches: %w", err)
	}
	batchedCPU := (bench.ProcessCPU() - cpu0) / 32000
	fmt.Fprintf(w, "1-partition jobs, 16 clients, one per request, submit->done\t%.0f jobs/s\t>= 2x Asynq\t\n", single)
	fmt.Fprintf(w, "  the same with an Idempotency-Key each (the Go client's and the CLI's default)\t%.0f jobs/s\t\t\n", keyed)
	peer, err := bench.Asynq(ctx, bench.PeerDir, 8000, 16, 4)
	switch {
	case errors.Is(err, bench.ErrNoRedis):
		fmt.Fprintf(w, "  Asynq+Redis: not measured (no redis-server on the PATH; apt-get install redis-server)\t\t\t\n")
	case err != nil:
		return fmt.Errorf("asynq peer: %w", err)
	default:
		fmt.Fprintf(w, "  Asynq+Redis (AOF fsync every second), 16 clients, 1 task per enqueue, 4 workers\t%.0f tasks/s\t\t\n", peer)
		fmt.Fprintf(w, "  mrcluster / Asynq\t%.2fx\t>= 2x\t\n", single/peer)
	}
	fmt.Fprintf(w, "1-partition jobs, 16 clients, batches of 100 with a key each, submit->done\t%.0f jobs/s\t>= 25000\t\n", batched)
	// The substrate's ceiling for the same shapes: the fewest store
	// operations a small job makes with today's durability, and nothing
	// else (natsx.JobCeiling).
	for _, b := range []struct {
		batch int
		ours  float64
		what  string
	}{{1, single, "one per request"}, {100, batched, "batches of 100"}} {
		ceiling, err := bench.JobCeiling(ctx, 40000, 16, b.batch)
		if err != nil {
			return fmt.Errorf("small jobs' ceiling: %w", err)
		}
		fmt.Fprintf(w, "  raw JetStream, a job's fewest writes (record, task, finish, ack), 16 clients, %s\t%.0f jobs/s\t\t\n", b.what, ceiling)
		fmt.Fprintf(w, "  share of that ceiling\t%.0f %%\t\t\n", 100*b.ours/ceiling)
		if b.batch == 1 && peer > 0 {
			// Below 2, the single-submit target is out of the
			// substrate's reach for this shape, whatever runs above it.
			fmt.Fprintf(w, "  that ceiling / Asynq\t%.2fx\t\t\n", ceiling/peer)
		}
	}
	// What bounds single submits besides the store: their HTTP alone, and
	// the floor of a design storing several jobs per write (the redesign
	// docs/architecture.md sketches under Known limits).
	httpFloor, err := bench.HTTPFloor(ctx, 80000, 16)
	if err != nil {
		return fmt.Errorf("HTTP floor: %w", err)
	}
	fmt.Fprintf(w, "  HTTP alone, 16 clients, one per request (a spec decoded, a resource answered, nothing stored)\t%.0f jobs/s\t\t\n", httpFloor)
	grouped, err := bench.GroupFloor(ctx, 80000, 16, 1)
	if err != nil {
		return fmt.Errorf("grouped floor: %w", err)
	}
	fmt.Fprintf(w, "  the same, stored several jobs per write (a group one task message, its results one archive message)\t%.0f jobs/s\t\t\n", grouped)
	if peer > 0 {
		fmt.Fprintf(w, "  that floor / Asynq\t%.2fx\t\t\n", grouped/peer)
	}
	groupedBatches, err := bench.GroupFloor(ctx, 320000, 16, 100)
	if err != nil {
		return fmt.Errorf("grouped floor in batches: %w", err)
	}
	fmt.Fprintf(w, "  the same in batches of 100, a batch one group\t%.0f jobs/s\t\t\n", groupedBatches)
	// What a job costs in CPU, the cluster's whole process (its HTTP
	// clients included) beside the cluster's own code on the memory store
	// (no NATS, no HTTP): on 2 cores, 25,000 jobs/s leaves 80µs a job for
	// everything, and a store several jobs per write cannot take away
	// what the code above it spends per job.
	for _, b := range []struct {
		batch int
		whole time.Duration
		what  string
	}{{1, singleCPU, "one per request"}, {100, batchedCPU, "batches of 100"}} {
		rate, own, err := bench.OwnCode(ctx, 32000, 16, b.batch)
		if err != nil {
			return fmt.Errorf("own code, %s: %w", b.what, err)
		}
		fmt.Fprintf(w, "  CPU per job, %s: the whole process / its own code on the memory store (%.0f jobs/s)\t%s / %s\t\t\n",
			b.what, rate, b.whole.Round(time.Microsecond), own.Round(time.Microsecond))
	}
	// Submit latency at half the rate measured above, which this machine
	// can sustain, then at half the target rate (2x Asynq): after it, since
	// a server past its rate is left with a backlog to work off.
	rates := []float64{single / 2}
	if peer > 0 {
		rates = append(rates, peer)
	}
	for i, rate := range rates {
		lat, err := c.SubmitLatency(ctx, rate, int(rate*4))
		if err != nil {
			return fmt.Errorf("submit latency: %w", err)
		}
		what, target := "", ""
		if i == 1 {
			what, target = " (half the target)", "<= 10ms"
		}
		fmt.Fprintf(w, "  submit latency p50 / p99 at %.0f jobs/s%s\t%s / %s\t%s\t\n", rate, what,
			bench.Percentile(lat, 50).Round(100*time.Microsecond), bench.Percentile(lat, 99).Round(100*time.Microsecond), target)
	}
	return nil
}

// straggler runs a wordcount with one slow worker, without and with
// backup tasks.
func straggler(ctx context.Context, w io.Writer, o opts) error {
	dir, err := os.MkdirTemp("", "mrcluster-corpus")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	paths, size, err := bench.Corpus(o.corpus, dir, o.stragglerMB)
	if err != nil {
		return err
	}
	const m, r = 12, 2
	off, _, err := bench.Straggler(ctx, paths, size, m, r, 0)
	if err != nil {
		return err
	}
	on, backups, err := bench.Straggler(ctx, paths, size, m, r, 500*time.Millisecond)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "wordcount %d MB, 3 workers + 1 slow one (M=%d, R=%d), no backups\t%s\t\t\n", size/1e6, m, r, off.Round(10*time.Millisecond))
	fmt.Fprintf(w, "  the same with backup tasks (--backup-after 500ms; %d backups)\t%s\t< without\t\n", len(backups), on.Round(10*time.Millisecond))
	return nil
}

// memory runs a wordcount of memMB with the cluster's memory limit set and
// reports its rate and the process's peak resident memory.
func memory(ctx context.Context, w io.Writer, o opts) error {
	dir, err := os.MkdirTemp("", "mrcluster-corpus")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	paths, size, err := bench.Corpus(o.corpus, dir, o.memMB)
	if err != nil {
		return err
	}
	c, err := bench.StartCluster(ctx, func(cfg *app.Config) { cfg.MemoryLimit = int64(o.memLimit) << 20 })
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	if err := c.Upload(ctx, "big", paths); err != nil {
		return err
	}
	up := float64(size) / 1e6 / time.Since(start).Seconds()
	rate, _, err := c.WordCount(ctx, "big", size, o.wcM, o.wcR)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "upload of %d MB through PUT /api/v1/datasets\t%.1f MB/s\t\t\n", size/1e6, up)
	limit := fmt.Sprintf("--memory-limit-mb %d", o.memLimit)
	if o.memLimit == memtrim.DefaultLimit>>20 {
		limit = "the default configuration"
	}
	fmt.Fprintf(w, "wordcount of %d MB, %s (M=%d, R=%d)\t%.1f MB/s\t\t\n", size/1e6, limit, o.wcM, o.wcR, rate)
	fmt.Fprintf(w, "  peak resident memory of the cluster process\t%.0f MiB\t< 300 MiB\t\n", bench.PeakRSS())
	return nil
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
	var seq, tuned float64
	distinct := -1
	if o.sequential {
		if seq, distinct, err = bench.Sequential(paths); err != nil {
			return err
		}
		if tuned, err = bench.SequentialTuned(paths); err != nil {
			return err
		}
	}
	c, err := bench.StartCluster(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	upStart := time.Now()
	if err := c.Upload(ctx, "corpus", paths); err != nil {
		return err
	}
	upload := time.Since(upStart)
	rate, keys, err := c.WordCount(ctx, "corpus", size, o.wcM, o.wcR)
	if err != nil {
		return err
	}
	if distinct >= 0 && keys != int64(distinct) {
		return fmt.Errorf("the cluster counted %d distinct words, the sequential count %d", keys, distinct)
	}
	if err := c.UploadWasmWordCount(ctx, "wasmwc"); err != nil {
		return err
	}
	wasmRate, wasmKeys, err := c.Count(ctx, "wasmwc", "corpus", size, o.wcM, o.wcR)
	if err != nil {
		return fmt.Errorf("the WebAssembly word count: %w", err)
	}
	if wasmKeys != keys {
		return fmt.Errorf("the WebAssembly word count counted %d distinct words, the built-in %d", wasmKeys, keys)
	}
	if o.sequential {
		fmt.Fprintf(w, "sequential Go word count, 1 goroutine (%d MB)\t%.1f MB/s\t\t\n", size/1e6, seq)
	}
	fmt.Fprintf(w, "wordcount job, 4 in-process workers (M=%d, R=%d, %d MB)\t%.1f MB/s\t\t\n", o.wcM, o.wcR, size/1e6, rate)
	fmt.Fprintf(w, "  the same with examples/wasm-wordcount, uploaded as a WebAssembly kind\t%.1f MB/s (%.2fx)\t>= 0.4x\t\n", wasmRate, wasmRate/rate)
	if o.sequential {
		fmt.Fprintf(w, "  speed-up over sequential\t%.2fx\t>= 1.6x\t\n", rate/seq)
		fmt.Fprintf(w, "sequential, tuned: no allocation per word\t%.1f MB/s\t\t\n", tuned)
		fmt.Fprintf(w, "  speed-up over the tuned sequential\t%.2fx\t\t\n", rate/tuned)
	}
	fmt.Fprintf(w, "  peak resident memory of the process (server, workers, bench)\t%.0f MiB\t\t\n", bench.PeakRSS())
	fmt.Fprintf(w, "  upload before it (not timed above)\t%.1f MB/s\t\t\n", float64(size)/1e6/upload.Seconds())
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
