package app_test

import (
	"context"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// With --nats, a server starts no NATS of its own and uses the one given.
func TestExternalNATS(t *testing.T) {
	t.Parallel()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	b := setup(t, func(c *app.Config) { c.NATSURL = emb.ClientURL() })
	if got := b.srv.NATSURL(); got != emb.ClientURL() {
		t.Fatalf("server reports NATS at %s, want %s", got, emb.ClientURL())
	}
	j := b.submit(t, "short", 5)
	j = b.awaitState(t, j.ID, client.Succeeded)
	if !reflect.DeepEqual(j.Result.Values, apitest.Values(5, 1)) {
		t.Fatalf("result = %+v", j.Result)
	}
}

// Snapshot websockets send at most ten messages a second however fast the
// cluster changes, and one at least every five seconds when nothing does.
func TestWebsocketPacing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.dial(t, "/results")
	var first map[string][]int64
	readJSON(t, c, &first)
	start := time.Now()
	var submitted []string
	for range 40 {
		submitted = append(submitted, b.submit(t, "noop", 3).ID)
	}
	messages := 0
	var last time.Time
	for {
		var res map[string][]int64
		readJSON(t, c, &res)
		messages++
		last = time.Now()
		done := 0
		for _, id := range submitted {
			if len(res[id]) == 3 {
				done++
			}
		}
		if done == len(submitted) {
			break
		}
	}
	// Counted over the whole run, so that messages read late in a bunch
	// do not matter: one at connect, then at most one per 100 ms.
	if limit := int(last.Sub(start)/(100*time.Millisecond)) + 1; messages > limit {
		t.Fatalf("%d snapshots in %s, want at most %d", messages, last.Sub(start), limit)
	}
	// Nothing changes now: the next message is the keep-alive.
	var res map[string][]int64
	readJSON(t, c, &res)
	if gap := time.Since(last); gap < 4*time.Second {
		t.Fatalf("a snapshot %s after the last change, want a keep-alive after about 5s", gap)
	}
	if len(res) != len(submitted) {
		t.Fatalf("keep-alive snapshot has %d jobs, want %d", len(res), len(submitted))
	}
}
