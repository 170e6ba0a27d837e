package catalog_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/catalog"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
)

// A module whose stored bytes are not the ones uploaded is damaged, and
// the error says how to mend it: an upload of the same file writes it
// again (before, a job failed with "submit it again", which failed the
// same way).
func TestDamagedModuleSaysUploadItAgain(t *testing.T) {
	ctx := context.Background()
	rt, err := wasmkind.New(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close(ctx) })
	blobs := memstore.NewBlobs()
	hash := wasmkind.Hash([]byte("\x00asm the module as uploaded"))
	if err := blobs.Put(ctx, hash, bytes.NewReader([]byte("\x00asm the module with a byte flipped"))); err != nil {
		t.Fatal(err)
	}
	_, err = (&catalog.Modules{Blobs: blobs, Runtime: rt}).Load(ctx, hash)
	if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), "upload the same .wasm file again") {
		t.Fatalf("a damaged module loaded: %v; want store.ErrDamaged and what to do", err)
	}
}
