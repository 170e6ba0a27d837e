package natsx

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/storetest"
)

// The JetStream store passes the conformance suite of package store, on a
// real embedded server of its own for each case.
func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		nc := embedded(t, t.TempDir(), "storetest")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := Setup(ctx, nc, StoreConfig{AckWait: storetest.AckWait})
		if err != nil {
			t.Fatal(err)
		}
		return s.Ports
	})
}

// embedded starts an embedded server of the test's own on dir and connects
// to it as name; both stop when the test ends.
func embedded(t *testing.T, dir, name string) *Conn {
	t.Helper()
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	nc, err := emb.Connect(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
