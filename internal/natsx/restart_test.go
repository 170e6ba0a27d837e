package natsx

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// Restart stops the embedded server and starts it again on the same
// addresses and data: a connection made before reconnects by itself and
// JetStream answers again. A server that does not stop in time is left
// as it is, and Restart says it is stuck instead of waiting for ever.
func TestRestart(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	nc, err := emb.Connect("restart-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ports.Datasets.Put(ctx, "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := emb.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	// The connection made before the restart writes and reads again.
	for {
		_, err := s.Ports.Datasets.Put(ctx, "after", []byte("2"))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no write after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e, err := s.Ports.Datasets.Get(ctx, "before"); err != nil || string(e.Value) != "1" {
		t.Fatalf("a key written before the restart reads %q, %v", e.Value, err)
	}

	// A server that does not stop: Restart gives up in time.
	release := make(chan struct{})
	stopHook, restartStopTimeout = func() { <-release }, 200*time.Millisecond
	t.Cleanup(func() { stopHook, restartStopTimeout = nil, 30*time.Second })
	start := time.Now()
	err = emb.Restart()
	close(release)
	if !errors.Is(err, ErrStuck) || time.Since(start) > 10*time.Second {
		t.Fatalf("a restart whose server does not stop: %v after %s; want ErrStuck at once", err, time.Since(start))
	}
}
