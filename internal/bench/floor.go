package bench

import (
	"bytes"
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
	return submitRate(ctx, n, clients, 1, func(context.Context, []byte) error { return nil }, func(context.Context) error { return nil })
}

// GroupFloor is HTTPFloor with each job stored by natsx.GroupedJobs,
// several jobs per write, until finished: the floor of a cluster that
// would group small jobs so, before any of its own work. With batch over
// 1 the clients send batches of that many specs (POST /api/v1/jobs/batch),
// each stored in one group.
func GroupFloor(ctx context.Context, n, clients, batch int) (float64, error) {
	n = n / (clients * batch) * clients * batch
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
	return submitRate(ctx, n, clients, batch, g.Submit, func(ctx context.Context) error { return g.Await(ctx, n) })
}

// submitRate serves POST /api/v1/jobs and /api/v1/jobs/batch with store
// (the records of a request, a line each), sends it n specs from clients
// clients, batch at a time, waits for done and returns jobs per second.
func submitRate(ctx context.Context, n, clients, batch int, store func(context.Context, []byte) error, done func(context.Context) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var ids atomic.Int64
	record := func(spec client.Spec) []byte {
		rec, _ := json.Marshal(client.Job{ID: fmt.Sprintf("noop_%026d", ids.Add(1)), Kind: spec.Kind, State: "queued", Partitions: spec.Partitions, CreatedAt: time.Now()})
		return rec
	}
	answer := func(w http.ResponseWriter, r *http.Request, recs []byte, body []byte) {
		if err := store(r.Context(), recs); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(body)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var spec client.Spec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rec := record(spec)
		answer(w, r, rec, rec)
	})
	mux.HandleFunc("POST /api/v1/jobs/batch", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Jobs []client.Spec }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		recs := make([][]byte, len(req.Jobs))
		for i, spec := range req.Jobs {
			recs[i] = record(spec)
		}
		answer(w, r, bytes.Join(recs, []byte("\n")), append(append([]byte(`{"jobs":[`), bytes.Join(recs, []byte(","))...), "]}"...))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	start := time.Now()
	errs := make(chan error, clients)
	for range clients {
		go func() {
			api := client.New(srv.URL, "")
			api.SubmitRetries = -1
			specs := make([]client.Spec, batch)
			for i := range specs {
				specs[i] = client.Spec{Kind: "noop", Partitions: 1}
			}
			for range n / clients / batch {
				var err error
				if batch == 1 {
					_, err = api.SubmitWithKey(ctx, specs[0], "")
				} else {
					_, err = api.SubmitBatchWithKey(ctx, specs, "")
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
			return 0, err
		}
	}
	if err := done(ctx); err != nil {
		return 0, err
	}
	return float64(n/clients/batch*clients*batch) / time.Since(start).Seconds(), nil
}
