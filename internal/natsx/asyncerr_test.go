package natsx

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/logtest"
	"github.com/nats-io/nats.go"
)

// An error a connection meets outside any call (here a subscription that
// fell behind, its messages dropped) is logged through the process's log,
// not printed by nats.go on standard error beside it.
func TestAConnectionsAsyncErrorsAreLogged(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	var seen logtest.Levels
	c, err := Dial(emb.ClientURL(), "test", "", "", slog.New(&seen))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	release := make(chan struct{})
	defer close(release)
	sub, err := c.nc.Subscribe("slow", func(*nats.Msg) { <-release })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, 1<<20); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := c.nc.Publish("slow", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.nc.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	for len(seen.At(slog.LevelWarn, "fell behind")) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("a subscription that dropped messages was not logged")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A connection whose server is gone closes at once: its flush of what is
// buffered has nothing to send it on (it waited its whole 2 s, on the way
// out of every worker process whose servers had stopped).
func TestAConnectionThatIsDownClosesAtOnce(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(emb.ClientURL(), "test", "", "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := emb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); c.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the connection still says it is up 20 s after its server stopped")
		}
	}
	start := time.Now()
	c.Close()
	if took := time.Since(start); took >= time.Second {
		t.Fatalf("Close of a connection whose server is gone took %s; want at once (its flush has nothing to send on)", took.Round(time.Millisecond))
	}
}
