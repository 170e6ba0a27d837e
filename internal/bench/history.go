package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
)

// Serve is the child of the history run: a server with the defaults of
// `mrcluster serve` on dir, which prints its URL and how long its start
// took once it is ready, and stops when its standard input closes. A
// process of its own, so that its memory is the server's alone. With
// BENCH_HEAPPROFILE=path set, it writes a heap profile to path.<pid>.<n>
// and its memory statistics to standard error at each quiet measure (the
// bench sends it SIGUSR1), and to path.<pid> as it stops.
func Serve(ctx context.Context, dir string) error {
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.SubmitRate = 0
	// What the server warns of under the burst is the bench's to show.
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d\n", srv.URL(), time.Since(start).Milliseconds())
	if p := os.Getenv("BENCH_HEAPPROFILE"); p != "" {
		usr1, done := make(chan os.Signal, 1), make(chan struct{})
		signal.Notify(usr1, syscall.SIGUSR1)
		defer func() { signal.Stop(usr1); close(done) }()
		go func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				case <-usr1:
					heapProfile(fmt.Sprintf("%s.%d.%d", p, os.Getpid(), n))
				}
			}
		}()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	if p := os.Getenv("BENCH_HEAPPROFILE"); p != "" {
		heapProfile(fmt.Sprintf("%s.%d", p, os.Getpid()))
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return srv.Stop(sctx)
}

// heapProfile collects, writes a heap profile to path and the process's
// memory statistics to standard error.
func heapProfile(path string) {
	runtime.GC()
	if f, err := os.Create(path); err == nil {
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fmt.Fprintf(os.Stderr, "%s: heap alloc %d MiB, heap in use %d, heap sys %d, idle %d, released %d, stack %d, other sys %d, total sys %d, goroutines %d\n", path, m.HeapAlloc>>20, m.HeapInuse>>20, m.HeapSys>>20, m.HeapIdle>>20, m.HeapReleased>>20, m.StackSys>>20, m.OtherSys>>20, m.Sys>>20, runtime.NumGoroutine())
}

// server is a Serve child.
type server struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
	ready time.Duration // the server's own start, from its first line
	wall  time.Duration // from exec to ready
}

func startServer(ctx context.Context, dir string) (*server, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-only", "serve", "-data", dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the server child did not start: %w", err)
	}
	s := &server{cmd: cmd, stdin: stdin, wall: time.Since(t)}
	var ms int64
	if _, err := fmt.Sscanf(line, "%s %d", &s.url, &ms); err != nil {
		return nil, fmt.Errorf("the server child said %q: %w", line, err)
	}
	s.ready = time.Duration(ms) * time.Millisecond
	return s, nil
}

// stop closes the child's input and waits for it to stop. A server that
// did not start (nil) has nothing to stop.
func (s *server) stop() error {
	if s == nil {
		return nil
	}
	_ = s.stdin.Close()
	return s.cmd.Wait()
}

// memory returns the child's resident memory now and at its peak, in MiB.
func (s *server) memory() (now, peak float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			now = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return now, peak, nil
}

// quietFor is how long a server is left alone before its memory is read
// again: what it holds once the burst is over (it hands memory back within
// about 20 s of going quiet, internal/memtrim).
const quietFor = 30 * time.Second

// quiet returns the child's resident memory after quietFor without
// requests.
func (s *server) quiet(ctx context.Context) (float64, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(quietFor):
	}
	now, _, err := s.memory()
	if os.Getenv("BENCH_HEAPPROFILE") != "" {
		_ = s.cmd.Process.Signal(syscall.SIGUSR1)
	}
	return now, err
}

// History is what the history run measured.
type History struct {
	Rate                 float64 // jobs per second, submit to finished
	RSS, PeakRSS         float64 // the server's, in MiB, once every job finished
	RSSQuiet             float64 // quiet: 30 s later
	Restart              time.Duration
	RSSAfter, PeakAfter  float64 // after the restart, and a page of the list
	RSSAfterQuiet        float64 // 30 s later
	FirstPage, OldPage   time.Duration
	Succeeded, Submitted int
	// Submit latency (p50, p99) at LatencyRate, on the new server and
	// again after the restart, with the jobs stored (the n of the burst
	// and the first measure's 8*LatencyRate).
	LatencyNew, LatencyAfter [2]time.Duration
}

// LatencyRate is the pace of the history run's latency measures: about a
// quarter of what one server takes on this 2-core machine, so that what
// they show is the cost of the history, not a server past its rate.
const LatencyRate = 1000

// latency measures the submit latency of the server at url at
// LatencyRate for 8 s, then waits for its jobs to end.
func latency(ctx context.Context, url string) ([2]time.Duration, error) {
	c := &Cluster{api: client.New(url, "")}
	lat, err := c.SubmitLatency(ctx, LatencyRate, 8*LatencyRate)
	if err != nil {
		return [2]time.Duration{}, err
	}
	return [2]time.Duration{Percentile(lat, 50), Percentile(lat, 99)}, nil
}

// RunHistory runs n one-partition noop jobs, submitted in batches of 1000
// by 16 clients, on a server of its own, then restarts the server: how its
// memory, its start and its submit latency grow with the jobs it has run.
func RunHistory(ctx context.Context, n int) (History, error) {
	var h History
	dir, err := os.MkdirTemp("", "mrcluster-history")
	if err != nil {
		return h, err
	}
	defer os.RemoveAll(dir)
	s, err := startServer(ctx, dir)
	if err != nil {
		return h, err
	}
	defer func() { _ = s.stop() }()
	api := client.New(s.url, "")
	if h.LatencyNew, err = latency(ctx, s.url); err != nil {
		return h, err
	}
	const clients, batch = 16, 1000
	start := time.Now()
	errs := make(chan error, clients)
	for c := range clients {
		go func() {
			api := client.New(s.url, "")
			for sent := c * batch; sent < n; sent += clients * batch {
				specs := make([]client.Spec, min(batch, n-sent))
				for i := range specs {
					specs[i] = client.Spec{Kind: "noop", Partitions: 1}
				}
				// A server at its bound of unfinished jobs answers 429:
				// sent again once it has made room, as the CLI does.
				_, err := api.SubmitBatch(ctx, specs)
				for client.IsBusy(err) {
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
					_, err = api.SubmitBatch(ctx, specs)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			return h, err
		}
	}
	h.Submitted = n
	if err := awaitIdle(ctx, api, 250*time.Millisecond); err != nil {
		return h, err
	}
	h.Rate = float64(n) / time.Since(start).Seconds()
	if h.RSS, h.PeakRSS, err = s.memory(); err != nil {
		return h, err
	}
	if h.RSSQuiet, err = s.quiet(ctx); err != nil {
		return h, err
	}
	if err := s.stop(); err != nil {
		return h, fmt.Errorf("stop the server: %w", err)
	}
	if s, err = startServer(ctx, dir); err != nil {
		return h, err
	}
	h.Restart = s.wall
	api = client.New(s.url, "")
	t := time.Now()
	first, err := api.Jobs(ctx, client.ListOptions{State: client.Succeeded, Limit: 50})
	if err != nil {
		return h, err
	}
	h.FirstPage = time.Since(t)
	// A page deep in the history: records the server no longer holds.
	page := first
	for range 20 {
		if page.NextCursor == "" {
			break
		}
		t = time.Now()
		if page, err = api.Jobs(ctx, client.ListOptions{State: client.Succeeded, Limit: 50, Cursor: page.NextCursor}); err != nil {
			return h, err
		}
		h.OldPage = time.Since(t)
	}
	q, err := api.Jobs(ctx, client.ListOptions{State: client.Succeeded, Limit: 1})
	if err != nil || len(q.Jobs) == 0 {
		return h, fmt.Errorf("no succeeded job listed after the restart: %v", err)
	}
	if h.RSSAfter, h.PeakAfter, err = s.memory(); err != nil {
		return h, err
	}
	if h.RSSAfterQuiet, err = s.quiet(ctx); err != nil {
		return h, err
	}
	if h.LatencyAfter, err = latency(ctx, s.url); err != nil {
		return h, err
	}
	return h, nil
}

// awaitIdle returns once no job is queued or running, looking every
// interval. Queued jobs are looked at first: a job that starts in between
// is then seen running.
func awaitIdle(ctx context.Context, api *client.Client, every time.Duration) error {
	for {
		busy := false
		for _, st := range []client.State{client.Queued, client.Running} {
			page, err := api.Jobs(ctx, client.ListOptions{State: st, Limit: 1})
			if err != nil {
				return err
			}
			busy = busy || len(page.Jobs) > 0
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}
