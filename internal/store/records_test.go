package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// Concurrent compare-and-set writers of one JSON record lose no update:
// each conflict reads the record again.
func TestUpdateJSONLosesNoUpdate(t *testing.T) {
	kv := memstore.NewKV()
	ctx := context.Background()
	type counter struct{ N int }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				if _, _, err := store.UpdateJSON(ctx, kv, "c", func(c *counter, _ bool) (bool, error) { c.N++; return true, nil }); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	c, rev, err := store.UpdateJSON(ctx, kv, "c", func(*counter, bool) (bool, error) { return false, nil })
	if err != nil || c.N != 200 || rev == 0 {
		t.Fatalf("counter %+v at revision %d, %v; want 200", c, rev, err)
	}
}
