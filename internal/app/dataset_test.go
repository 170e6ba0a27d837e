package app_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// A dataset that an unfinished job reads can be neither deleted nor
// changed (409, naming the job); once the job is done, it can.
func TestDatasetInUseIsKept(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	wc := kinds.Data()[0]
	held := job.Kind{
		Name: "held", Description: "wordcount whose maps wait for the test",
		MapRecord: func(ctx context.Context, rec job.Record, emit job.Emit) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			return wc.Map(ctx, rec, emit)
		},
		Combine: wc.Combine, ReduceKey: wc.Reduce,
	}
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(held) })
	b.client().PutFile(t, "d", "a.txt", []byte("x y\n"))
	j := b.client().SubmitSpec(t, client.Spec{Kind: "held", Input: []string{"d"}, Partitions: 1})
	for _, r := range []struct{ method, path string }{
		{"DELETE", "/api/v1/datasets/d"},
		{"PUT", "/api/v1/datasets/d/files/a.txt"},
	} {
		resp := b.do(t, r.method, r.path, "z\n")
		if resp.Status != http.StatusConflict || !strings.Contains(string(resp.Body), j.ID) {
			t.Fatalf("%s %s while %s reads it: %d %s", r.method, r.path, j.ID, resp.Status, resp.Body)
		}
	}
	close(release)
	if got := b.awaitState(t, j.ID, client.Succeeded); got.Counters.InputBytes != 4 {
		t.Fatalf("the job read %d bytes, want the 4 it was submitted with", got.Counters.InputBytes)
	}
	if r := b.do(t, "DELETE", "/api/v1/datasets/d", ""); r.Status != http.StatusNoContent {
		t.Fatalf("delete after the job: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "GET", "/api/v1/datasets/d", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the deleted dataset: %d %s", r.Status, r.Body)
	}
}
