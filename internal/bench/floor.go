package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// HTTPFloor is the rate of single submits' HTTP alone on this machine: n
// 1-partition specs sent by clients concurrent Go clients (the public
// client, as SmallJobs sends them) to a handler that decodes each and
// answers a job resource, storing nothing. Whatever stores jobs shares
// the machine's CPU with this much.
func HTTPFloor(ctx context.Context, n, clients int) (float64, error) {
	return submitRate(ctx, n, clients, func(context.Context, []byte) error { return nil }, func(context.Context) error { return nil })
}

// GroupFloor is HTTPFloor with each job stored by natsx.GroupedJobs,
// several jobs per write, until finished: the floor of a cluster that
// would group small jobs so, before any of its own work.
func GroupFloor(ctx context.Context, n, clients int) (float64, error) {
	n = n / clients * clients
	dir, err := os.MkdirTemp("", "mrcluster-bench")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	g, err := natsx.StartGroupedJobs(ctx, dir)
	if err != nil {
		return 0, err
	}
	defer g.Stop()
	return submitRate(ctx, n, clients, g.Submit, func(ctx context.Context) error { return g.Await(ctx, n) })
}

// submitRate serves POST /api/v1/jobs with store, sends it n specs from
// clients clients, waits for done and returns jobs per second.
func submitRate(ctx context.Context, n, clients int, store func(context.Context, []byte) error, done func(context.Context) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var ids atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var spec client.Spec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rec, _ := json.Marshal(client.Job{ID: fmt.Sprintf("noop_%026d", ids.Add(1)), Kind: spec.Kind, State: "queued", Partitions: spec.Partitions, CreatedAt: time.Now()})
		if err := store(r.Context(), rec); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(rec)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	start := time.Now()
	errs := make(chan error, clients)
	for range clients {
		go func() {
			api := client.New(srv.URL, "")
			api.SubmitRetries = -1
			for range n / clients {
				if _, err := api.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, ""); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	if err := done(ctx); err != nil {
		return 0, err
	}
	return float64(n/clients*clients) / time.Since(start).Seconds(), nil
}
