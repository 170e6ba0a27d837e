package app

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// A task that runs until it is canceled does not take the whole shutdown's
// time: the workers give it up early enough for the rest to stop in time,
// and the embedded NATS server has closed its store when Stop returns
// (it was left closing its files, which a test's clean-up of the data
// directory then met).
func TestStopLeavesTheStoreClosedThoughATaskNeverEnds(t *testing.T) {
	started := make(chan struct{}, 1)
	r := kinds.Builtin(0.001)
	r.Register(job.Kind{Name: "block", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		started <- struct{}{}
		<-ctx.Done()
		return 0, ctx.Err()
	}})
	cfg := DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir, cfg.Kinds = "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), r
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(srv.URL()+"/api/v1/jobs", "application/json", strings.NewReader(`{"kind":"block","partitions":1}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the task did not start")
	}
	const allowed = 4 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), allowed)
	defer cancel()
	t0 := time.Now()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if srv.emb.JetStreamEnabled() {
		t.Fatalf("Stop returned after %s with the embedded JetStream still running", took)
	}
	if took > allowed+stopReserve {
		t.Fatalf("Stop took %s; allowed %s", took, allowed)
	}
}
