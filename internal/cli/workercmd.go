package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/catalog"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/memtrim"
	"github.com/mrcluster/mrcluster/internal/metrics"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/natsx"
	mrstore "github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
	"github.com/mrcluster/mrcluster/internal/worker"
)

// runWorker is `mrcluster worker`: a pool of workers in a process of its
// own, on this machine or another, joined to a cluster through NATS.
func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer, registry func(float64) *job.Registry) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", "", "TOML file of settings, named as the flags (flags and MRCLUSTER_* beat it)")
	url := fs.String("nats", "nats://127.0.0.1:4222", "URL of the cluster's NATS server (a server's --nats-listen)")
	concurrency := fs.Int("concurrency", 4, "tasks run at once")
	host, _ := os.Hostname()
	name := fs.String("name", "", "name of this worker pool (default: the host name and a random suffix); the process exits with status 3 when another live process has it")
	sleepScale := fs.Float64("sleep-scale", 1, "multiplies the sleeps of the short and long kinds")
	tlsCA := fs.String("nats-tls-ca", "", "PEM CA that verifies the cluster's NATS certificate, when its client port speaks TLS (--nats-tls-cert)")
	natsToken := fs.String("nats-token", "", "token of the cluster's NATS client port (a server listening beyond loopback prints it)")
	metricsAddr := fs.String("metrics-addr", "", "address to serve this worker's Prometheus metrics on, e.g. 127.0.0.1:9101 (none when empty)")
	debugAddr := fs.String(flags.DebugAddr, "", "loopback address to serve Go's profiles on (/debug/pprof/: goroutines, heap, CPU), e.g. 127.0.0.1:6061 (none when empty)")
	backoff := fs.Duration("retry-backoff", time.Second, "wait before a failed task's second attempt; doubles with each attempt, up to a minute")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long running tasks may take to finish")
	sortBuffer := int64(mr.DefaultSortBuffer)
	fs.Var(mib{&sortBuffer}, flags.SortBuffer, "memory of one map task's output before it spills to --temp-dir, in MiB")
	tempDir := fs.String("temp-dir", "", "directory of map spills (default: the system's temporary directory)")
	wasmMemory := int64(256 << 20)
	fs.Var(mib{&wasmMemory}, flags.WasmMemory, "memory of one instance of an uploaded kind's WebAssembly module, in MiB")
	taskTimeout := fs.Duration(flags.TaskTimeout, 0, "time limit of one attempt of a task (0: none for built-in kinds, 1h for uploaded ones)")
	aging := fs.Duration(flags.PriorityAging, 0, "longest a lower priority's waiting tasks are passed over while higher ones keep the workers busy (0: 10s)")
	memLimit := int64(memtrim.DefaultLimit)
	fs.Var(mib{&memLimit}, flags.MemoryLimit, memLimitUsage)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if wasmMemory < 1<<20 {
		return fmt.Errorf("--%s must be at least 1", flags.WasmMemory)
	}
	if *debugAddr != "" {
		if err := metrics.CheckDebugAddr(*debugAddr, flags.DebugAddr); err != nil {
			return err
		}
	}
	if *concurrency < 1 {
		return fmt.Errorf("--concurrency must be at least 1, got %d", *concurrency)
	}
	if err := mr.CheckTempDir(*tempDir); err != nil {
		return fmt.Errorf("--temp-dir: %w", err)
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	poolName := app.PoolName(host)
	if *name != "" {
		poolName = app.Sanitize(*name)
	}
	nc, err := natsx.Dial(*url, "mrcluster-worker "+poolName, *natsToken, *tlsCA, log)
	if err != nil {
		return fmt.Errorf("NATS URL %s: %w", *url, err)
	}
	defer nc.Close()
	// Wait, with backoff, for the server to be reachable and to have set
	// up the cluster's streams.
	var store *natsx.Store
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		store, err = natsx.Open(octx, nc)
		cancel()
		if err == nil {
			break
		}
		if err := nc.Explain(*url); err != nil {
			return err
		}
		log.Warn("cannot reach the cluster yet; retrying", "nats", *url, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	store.SetLog(log)
	defer store.Close()
	// The servers' probes say how much room their stores have: an output
	// that does not fit is not begun (store.Roomy).
	putting, room := new(atomic.Int64), store.RoomFunc()
	store.Ports.Shuffle = mrstore.Roomy{Blobs: store.Ports.Shuffle, Room: room, Putting: putting}
	store.Ports.Output = mrstore.Roomy{Blobs: store.Ports.Output, Room: room, Putting: putting}
	defer memtrim.Limit(memLimit)()
	var cached []wasmkind.Option
	if dir, err := os.UserCacheDir(); err == nil {
		cached = append(cached, wasmkind.CacheDir(filepath.Join(dir, "mrcluster", "wasm")))
	}
	rt, err := wasmkind.New(ctx, int(wasmMemory>>20), cached...)
	if err != nil {
		return err
	}
	for _, f := range rt.Dropped() {
		log.Warn("a compiled WebAssembly module in the cache did not match its checksum (damaged on disk): removed, its module is compiled again when a task needs it", "file", f)
	}
	defer rt.Close(context.Background())
	// The kinds' states, so that the pool starts no task of a paused kind.
	kinds := catalog.New(store.Ports, rt, registry(*sleepScale), log)
	if err := kinds.Start(ctx); err != nil {
		return fmt.Errorf("read the kinds' states: %w", err)
	}
	defer func() {
		// After the pool, briefly: the watch's end asks its NATS server
		// to delete its consumer and waits for the answer, which a server
		// gone does not give; the process ends soon after its
		// --shutdown-timeout all the same.
		wait := 2 * time.Second
		if !nc.Connected() {
			wait = 100 * time.Millisecond
		}
		sctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := kinds.Stop(sctx); err != nil {
			log.Debug("stopped without waiting longer for the watch of the kinds to end; the process exits all the same", "err", err)
		}
	}()
	m := metrics.New()
	pool := worker.New(worker.Config{
		Store: store.Ports, Datasets: &dataset.Store{KV: store.Ports.Datasets, Blocks: store.Ports.Blocks},
		Kinds: registry(*sleepScale), Concurrency: *concurrency,
		Name: poolName, Host: host, Logger: log, Metrics: m, RetryBackoff: *backoff,
		SortBuffer: sortBuffer, MemoryLimit: memLimit, TempDir: *tempDir,
		Modules: &catalog.Modules{Blobs: store.Ports.Modules, Runtime: rt}, TaskTimeout: *taskTimeout,
		PriorityAging: *aging, Paused: kinds.Paused, Room: room,
	})
	if err := pool.Start(ctx); err != nil {
		return nameInUse(stderr, err)
	}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = pool.Stop(sctx)
			return fmt.Errorf("--metrics-addr %s: %w", *metricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		}()
		defer srv.Close()
		fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", ln.Addr())
	}
	if *debugAddr != "" {
		d, err := metrics.ListenDebug(*debugAddr, flags.DebugAddr, log)
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = pool.Stop(sctx)
			return err
		}
		defer d.Close()
		fmt.Fprintf(stdout, "Go profiles on %s\n", d.URL())
	}
	fmt.Fprintf(stdout, "mrcluster worker %s running %d workers for %s\n", poolName, *concurrency, *url)
	trimmed := make(chan struct{})
	tctx, stopTrim := context.WithCancel(ctx)
	defer stopTrim()
	go func() { defer close(trimmed); memtrim.Run(tctx, log) }()
	var replaced error
	select {
	case <-ctx.Done():
	case replaced = <-pool.Replaced():
		// Another process runs under this name: this one ends, as if
		// stopped, and says why.
		stopTrim()
	}
	<-trimmed
	log.Info("stopping: finishing running tasks, the rest go back to the queue", "timeout", *shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	if err := pool.Stop(sctx); err != nil {
		return err
	}
	return nameInUse(stderr, replaced)
}

// ExitNameInUse is the exit status of a worker process whose --name
// another process's pool has (at its start, or taken while it was paused):
// started again as it is, it would be refused again, so a service manager
// is best told not to restart it (systemd: RestartPreventExitStatus=3).
const ExitNameInUse = 3

// nameInUse says err and ends the process with ExitNameInUse when err is
// worker.ErrNameInUse, and returns err otherwise.
func nameInUse(stderr io.Writer, err error) error {
	if !errors.Is(err, worker.ErrNameInUse) {
		return err
	}
	fmt.Fprintln(stderr, "mrcluster:", err)
	return exitError(ExitNameInUse)
}
