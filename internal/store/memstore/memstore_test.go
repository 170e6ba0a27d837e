package memstore_test

import (
	"testing"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
	"github.com/mrcluster/mrcluster/internal/store/storetest"
)

func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) *store.Store {
		return memstore.New(memstore.Config{AckWait: storetest.AckWait})
	})
}
