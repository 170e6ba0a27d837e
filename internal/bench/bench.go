// Package bench measures mrcluster end to end beside the ceiling of its
// substrate, raw JetStream on the same machine, in the same run.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// JetStreamCeiling is the rate of the substrate alone: see
// natsx.QueueCeiling.
func JetStreamCeiling(ctx context.Context, n int) (float64, error) {
	dir, err := os.MkdirTemp("", "mrcluster-bench")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	return natsx.QueueCeiling(ctx, dir, n)
}

// Cluster is a server started for a benchmark.
type Cluster struct {
	srv     *app.Server
	dir     string
	lastJob string // the id of the last wordcount job
	api     *client.Client
}

// StartCluster starts a server with the defaults of `mrcluster serve`
// (4 in-process workers) on random ports and a temporary data directory,
// without the per-client submit rate limit.
func StartCluster(ctx context.Context, mod ...func(*app.Config)) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "mrcluster-bench")
	if err != nil {
		return nil, err
	}
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	// One client submits a thousand jobs a second in the latency run: the
	// per-client submit limit, a policy and not a cost, is lifted.
	cfg.SubmitRate = 0
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Cluster{srv: srv, dir: dir, api: client.New(srv.URL(), "")}, nil
}

// Close stops the server and removes its data.
func (c *Cluster) Close() {
	_ = c.srv.Stop(context.Background())
	os.RemoveAll(c.dir)
}

// watcher follows /api/v1/events and reports when jobs finish.
type watcher struct {
	events   *client.Events
	finished chan string
	// resync is signalled when events were dropped: finished may miss some.
	resync chan struct{}
}

func (c *Cluster) watch(ctx context.Context) (*watcher, error) {
	events, err := c.api.Events(ctx)
	if err != nil {
		return nil, err
	}
	w := &watcher{events: events, finished: make(chan string, 10000), resync: make(chan struct{}, 1)}
	go func() {
		defer close(w.finished)
		for {
			ev, err := events.Next(ctx)
			if err != nil {
				return
			}
			switch ev.Type {
			case "job.succeeded", "job.failed", "job.canceled":
				var j client.Job
				if json.Unmarshal(ev.Data, &j) == nil {
					w.finished <- j.ID
				}
			case "resync":
				select {
				case w.resync <- struct{}{}:
				default:
				}
				// Dropped events are not expected at these rates; say so.
				fmt.Fprintln(os.Stderr, "bench: the event stream lagged")
			}
		}
	}()
	return w, nil
}

// submit submits a job without an idempotency key, as the queues it is
// compared with do.
func (c *Cluster) submit(ctx context.Context, spec client.Spec) (string, error) {
	j, err := c.api.SubmitWithKey(ctx, spec, "")
	return j.ID, err
}

// Throughput submits jobs of noop tasks totalling tasks and returns tasks
// per second from the first submit until every job is reduced and done.
func (c *Cluster) Throughput(ctx context.Context, jobs, partitions int) (float64, error) {
	w, err := c.watch(ctx)
	if err != nil {
		return 0, err
	}
	defer w.events.Close()
	start := time.Now()
	pending := map[string]bool{}
	for range jobs {
		id, err := c.submit(ctx, client.Spec{Kind: "noop", Partitions: partitions})
		if err != nil {
			return 0, err
		}
		pending[id] = true
	}
	for len(pending) > 0 {
		select {
		case id, ok := <-w.finished:
			if !ok {
				return 0, fmt.Errorf("event stream closed with %d jobs pending", len(pending))
			}
			delete(pending, id)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return float64(jobs*partitions) / time.Since(start).Seconds(), nil
}

// SubmitLatency submits n one-partition noop jobs at rate jobs a second,
// each at its time whatever the others' answers (up to 256 in flight), and
// returns how long each submit took to be answered (202: the job and its
// task stored), shortest first, counted from its due time, so that a server falling behind
// shows in the figures instead of slowing the pace.
func (c *Cluster) SubmitLatency(ctx context.Context, rate float64, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	slots := make(chan struct{}, 256)
	var wg sync.WaitGroup
	api := client.New(c.api.URL, "")
	api.SubmitRetries = -1
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(d):
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case slots <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-slots }()
			_, errs[i] = api.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, "")
			lat[i] = time.Since(due)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(lat)
	return lat, awaitIdle(ctx, c.api, 5*time.Millisecond)
}

// Latency submits n one-partition noop jobs one after the other and
// returns the submit→done durations, sorted.
func (c *Cluster) Latency(ctx context.Context, n int) ([]time.Duration, error) {
	w, err := c.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer w.events.Close()
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		id, err := c.submit(ctx, client.Spec{Kind: "noop", Partitions: 1})
		if err != nil {
			return nil, err
		}
		for done := false; !done; {
			select {
			case got, ok := <-w.finished:
				if !ok {
					return nil, fmt.Errorf("event stream closed")
				}
				done = got == id
			case <-time.After(10 * time.Second):
				return nil, fmt.Errorf("job %s did not finish within 10s: %s", id, c.describe(ctx, id))
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out, nil
}

func (c *Cluster) describe(ctx context.Context, id string) string {
	j, err := c.api.Job(ctx, id)
	if err != nil {
		return err.Error()
	}
	return apiJSON(j)
}

func apiJSON(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}

// Percentile returns the p-th percentile of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// SmallJobs submits n one-partition noop jobs from clients concurrent HTTP
// clients, each submitting one job at a time (batch 1) or batch jobs per
// request, and returns jobs per second from the first submit until every
// job finished, as a user of a job queue measures it. The end is seen by
// listing the unfinished jobs, as the peer's end is seen by a counter:
// an event stream of every job would cost the server more than the jobs.
//
// keyed sends an Idempotency-Key with every request, as the Go client's
// Submit and SubmitBatch and the CLI do by default; the server then also
// stores the key.
func (c *Cluster) SmallJobs(ctx context.Context, n, clients, batch int, keyed bool) (float64, error) {
	start := time.Now()
	errs := make(chan error, clients)
	per := n / clients
	var mu sync.Mutex
	ours := map[string]bool{}
	for range clients {
		go func() {
			api := client.New(c.api.URL, "")
			api.SubmitRetries = -1
			for sent := 0; sent < per; {
				k := min(batch, per-sent)
				var jobs []client.Job
				var err error
				switch {
				case batch == 1 && keyed:
					var j client.Job
					j, err = api.Submit(ctx, client.Spec{Kind: "noop", Partitions: 1})
					jobs = []client.Job{j}
				case batch == 1:
					var j client.Job
					j, err = api.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, "")
					jobs = []client.Job{j}
				default:
					specs := make([]client.Spec, k)
					for i := range specs {
						specs[i] = client.Spec{Kind: "noop", Partitions: 1}
					}
					if keyed {
						jobs, err = api.SubmitBatch(ctx, specs)
					} else {
						jobs, err = api.SubmitBatchWithKey(ctx, specs, "")
					}
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, j := range jobs {
					ours[j.ID] = true
				}
				mu.Unlock()
				sent += k
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	if len(ours) != per*clients {
		return 0, fmt.Errorf("%d jobs submitted, %d distinct ids answered", per*clients, len(ours))
	}
	if err := awaitIdle(ctx, c.api, 5*time.Millisecond); err != nil {
		return 0, err
	}
	return float64(per*clients) / time.Since(start).Seconds(), nil
}

// JobCeiling is the rate of small jobs' store operations alone: see
// natsx.JobCeiling.
func JobCeiling(ctx context.Context, n, clients, batch int) (float64, error) {
	dir, err := os.MkdirTemp("", "mrcluster-bench")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	return natsx.JobCeiling(ctx, dir, n, clients, batch)
}
