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
		emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = emb.Stop(context.Background()) })
		nc, err := emb.Connect("storetest")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := Setup(ctx, nc, StoreConfig{AckWait: storetest.AckWait})
		if err != nil {
			t.Fatal(err)
		}
		return s.Ports
	})
}
