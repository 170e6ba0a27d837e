package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
)

// A map task halfway through its split says so: its worker's status, as
// the API and the events show it, carries a progress between a quarter
// and three quarters while the task waits at the middle line of its file
// (and never more before it); the worker, free again after the job,
// carries none.
func TestARunningDataTaskReportsItsProgress(t *testing.T) {
	t.Parallel()
	const lines = 4000
	reached, release := make(chan struct{}), make(chan struct{})
	// A word count that waits at the middle of its input.
	halfway, _, _ := countKind("halfway", func(ctx context.Context, rec job.Record) error {
		if rec.Line == lines/2 {
			close(reached)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}, nil)
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(halfway) })
	var data strings.Builder
	for i := range lines {
		fmt.Fprintf(&data, "line %d of a file read by one map task, about a hundred bytes long, give or take\n", i)
	}
	b.client().PutFile(t, "half", "a.txt", []byte(data.String()))
	ev, err := b.client().API().Events(apitest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	j := b.client().SubmitSpec(t, client.Spec{Kind: "halfway", Input: []string{"half"}, Partitions: 1, Reducers: 1})
	select {
	case <-reached:
	case <-apitest.Context(t).Done():
		t.Fatal("the map never reached the middle of its file")
	}
	for {
		e, err := ev.Next(apitest.Context(t))
		if err != nil {
			t.Fatalf("no worker reported the task's progress: %v", err)
		}
		if e.Type != "worker.status" {
			continue
		}
		var w client.Worker
		if err := json.Unmarshal(e.Data, &w); err != nil {
			t.Fatal(err)
		}
		if !w.Busy || w.JobID != j.ID || w.Progress == nil {
			continue
		}
		// Statuses written before the map reached the middle (a slow
		// machine's first 2 s) come first, with less; none says more.
		p := *w.Progress
		if p > 0.75 {
			t.Fatalf("progress %.2f with the map held at the middle of its split", p)
		}
		if p >= 0.25 {
			break
		}
	}
	close(release)
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded {
		t.Fatalf("job %s", apitest.Describe(j))
	}
	b.client().AwaitIdleWorkers(t, app.DefaultConfig().Workers)
	ws, err := b.client().API().Workers(apitest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Progress != nil {
			t.Fatalf("worker %s, free, still carries progress %.2f", w.Key, *w.Progress)
		}
	}
}
