package dataset_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
	"github.com/mrcluster/mrcluster/internal/store"
)

// jetStream returns the ports of a real embedded JetStream server of the
// test's own.
func jetStream(t *testing.T) *store.Store {
	t.Helper()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	nc, err := emb.Connect("dataset-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := natsx.Setup(ctx, nc, natsx.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Ports
}

func names(d dataset.Dataset) []string {
	var out []string
	for _, f := range d.Files {
		out = append(out, f.Name)
	}
	return out
}

// Each file is an entry of its own: a dataset takes thousands of files,
// each upload costs the same whatever the dataset's size, its answer lists
// at most dataset.MaxListedFiles files, and a GET lists them all. The
// manifest rewritten whole at each upload stopped at about 6,700 files.
func TestManyFiles(t *testing.T) {
	t.Parallel()
	ports := jetStream(t)
	s := &dataset.Store{KV: ports.Datasets, Blocks: ports.Blocks}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 8000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := s.PutFile(ctx, "logs", fmt.Sprintf("day.%05d.log", i), strings.NewReader(fmt.Sprintf("line of file %d\n", i)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := s.Get(ctx, "logs")
	if err != nil || len(d.Files) != n || d.Files[0].Name != "day.00000.log" || d.Files[n-1].Name != fmt.Sprintf("day.%05d.log", n-1) {
		t.Fatalf("a dataset of %d files lists %d (%v)", n, len(d.Files), err)
	}
	f, err := s.PutFile(ctx, "logs", "day.00007.log", strings.NewReader("replaced\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Answer(ctx, "logs", f)
	if err != nil || !a.Partial || len(a.Files) != 1 || a.Files[0].Upload != f.Upload || a.Size != f.Size {
		t.Fatalf("the answer to an upload into %d files: %+v, %v", n, a, err)
	}
	if d, err = s.Get(ctx, "logs"); err != nil || len(d.Files) != n || d.Files[7].Upload != f.Upload || d.Files[7].Size != int64(len("replaced\n")) {
		t.Fatalf("after replacing a file: %d files, %v", len(d.Files), err)
	}
	in, err := s.Resolve(ctx, []string{"logs"})
	if err != nil || len(in) != n {
		t.Fatalf("resolved %d files, %v", len(in), err)
	}

	small, err := s.PutFile(ctx, "small", "a.txt", strings.NewReader("a\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.Answer(ctx, "small", small); err != nil || a.Partial || len(a.Files) != 1 {
		t.Fatalf("the answer to an upload into a small dataset: %+v, %v", a, err)
	}
	all, err := s.List(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "logs" || all[1].Name != "small" {
		t.Fatalf("list: %d datasets, %v", len(all), err)
	}
	if l := all[0]; !l.Partial || len(l.Files) != 0 || l.FileCount != n || l.Size != d.Size {
		t.Fatalf("the list shows the dataset of %d files with %d files, %d counted, %d bytes of %d", n, len(l.Files), l.FileCount, l.Size, d.Size)
	}
	if sm := all[1]; sm.Partial || len(sm.Files) != 1 || sm.FileCount != 1 {
		t.Fatalf("the list shows a dataset of one file as %+v", sm)
	}

	// Deleted, then made again: none of the old files comes back, and
	// their entries and blocks are gone from the store.
	gone := d.Files[1]
	if err := s.Delete(ctx, "logs"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "logs"); job.ErrorCode(err) != job.ENotFound {
		t.Fatalf("get of a deleted dataset: %v", err)
	}
	if _, err := s.PutFile(ctx, "logs", "new.log", strings.NewReader("new\n")); err != nil {
		t.Fatal(err)
	}
	if d, err = s.Get(ctx, "logs"); err != nil || !slices.Equal(names(d), []string{"new.log"}) {
		t.Fatalf("the dataset made again: %v, %v", names(d), err)
	}
	keys, err := ports.Datasets.Keys(ctx)
	if err != nil || len(keys) != 4 { // two heads, two files
		t.Fatalf("%d keys left in the bucket (%v), want 4", len(keys), err)
	}
	if _, err := ports.Blocks.GetBytes(ctx, blockOf("logs", gone)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a block of a deleted file: %v, want it deleted", err)
	}
}

// A dataset stored by an earlier version, its manifest whole under its
// name, reads as before; an upload adds an entry and replaces a file of
// the manifest, whose old blocks go.
func TestManifestOfAnEarlierVersion(t *testing.T) {
	t.Parallel()
	ports := jetStream(t)
	s := &dataset.Store{KV: ports.Datasets, Blocks: ports.Blocks}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := earlierVersion(ctx, t, s, "books", created, "a.txt", "b.txt")
	d, err := s.Get(ctx, "books")
	if err != nil || !slices.Equal(names(d), []string{"a.txt", "b.txt"}) || d.Size != old[0].Size+old[1].Size || !d.CreatedAt.Equal(created) {
		t.Fatalf("an earlier version's dataset: %+v, %v", d, err)
	}
	if _, err := s.PutFile(ctx, "books", "c.txt", strings.NewReader("c\n")); err != nil {
		t.Fatal(err)
	}
	b, err := s.PutFile(ctx, "books", "b.txt", strings.NewReader("b again\n"))
	if err != nil {
		t.Fatal(err)
	}
	d, err = s.Get(ctx, "books")
	if err != nil || !slices.Equal(names(d), []string{"a.txt", "b.txt", "c.txt"}) || d.Files[1].Upload != b.Upload || d.Files[0].Upload != old[0].Upload {
		t.Fatalf("after two uploads: %+v, %v", d, err)
	}
	if _, err := s.Blocks.GetBytes(ctx, blockOf("books", old[1])); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the replaced file's block: %v, want it deleted", err)
	}
	if err := s.Delete(ctx, "books"); err != nil {
		t.Fatal(err)
	}
	if keys, err := ports.Datasets.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("keys after the delete: %v, %v", keys, err)
	}
	for _, f := range []dataset.File{old[0], b} {
		if _, err := ports.Blocks.GetBytes(ctx, blockOf("books", f)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a block of %s after the delete: %v, want it deleted", f.Name, err)
		}
	}
}

// earlierVersion stores files into dataset ds as an earlier version did:
// their blocks, then the whole manifest under the dataset's name (the
// entries this version wrote are taken away).
func earlierVersion(ctx context.Context, t *testing.T, s *dataset.Store, ds string, created time.Time, files ...string) []dataset.File {
	t.Helper()
	var old []dataset.File
	var size int64
	for _, name := range files {
		f, err := s.PutFile(ctx, ds, name, strings.NewReader(name+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, f)
		size += f.Size
	}
	if err := s.KV.DeletePrefix(ctx, "=f."); err != nil {
		t.Fatal(err)
	}
	legacy, _ := json.Marshal(dataset.Dataset{Name: ds, Files: old, Size: size, CreatedAt: created, UpdatedAt: created})
	if _, err := s.KV.Put(ctx, ds, legacy); err != nil {
		t.Fatal(err)
	}
	return old
}

func blockOf(ds string, f dataset.File) string { return ds + "/" + f.Name + "/" + f.Upload + "/0" }

// shortKV reads a bucket's entries without the last one, as a read of a
// replica that lags could.
type shortKV struct{ store.KV }

func (k shortKV) Entries(ctx context.Context, prefix string) ([]store.Entry, error) {
	es, err := k.KV.Entries(ctx, prefix)
	if len(es) > 0 {
		es = es[:len(es)-1]
	}
	return es, err
}

// A read of a dataset that finds fewer files than the dataset counts is
// refused as the store's momentary failure (503: send again), never taken
// as the dataset: a job resolved from it would count a part of its input.
func TestAShortReadOfTheFilesIsRefused(t *testing.T) {
	t.Parallel()
	ports := jetStream(t)
	s := &dataset.Store{KV: ports.Datasets, Blocks: ports.Blocks}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, f := range []string{"a.txt", "b.txt", "c.txt"} {
		if _, err := s.PutFile(ctx, "books", f, strings.NewReader("text of "+f+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := s.Get(ctx, "books"); err != nil || len(d.Files) != 3 {
		t.Fatalf("the dataset reads %v, %v; want its 3 files", names(d), err)
	}
	short := &dataset.Store{KV: shortKV{ports.Datasets}, Blocks: ports.Blocks}
	_, err := short.Get(ctx, "books")
	if job.ErrorCode(err) != job.EUnavailable || !strings.Contains(err.Error(), "2 of the 3 files of dataset books") {
		t.Fatalf("a read of 2 of the 3 files: %v (%s); want it refused as unavailable, naming the count", err, job.ErrorCode(err))
	}
	if files, err := short.Resolve(ctx, []string{"books"}); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a job's input resolved from a short read: %d files, %v; want it refused", len(files), err)
	}
	// An upload whose answer reads a part of the files is stored, and
	// answered so, with the file alone.
	f, err := short.PutFile(ctx, "books", "d.txt", strings.NewReader("text of d.txt\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, err := short.Answer(ctx, "books", f); err != nil || !a.Partial || len(a.Files) != 1 || a.Files[0].Name != "d.txt" {
		t.Fatalf("the answer to an upload: %+v, %v; want the file alone", a, err)
	}
	if d, err := s.Get(ctx, "books"); err != nil || len(d.Files) != 4 {
		t.Fatalf("after the upload the dataset reads %v, %v; want 4 files", names(d), err)
	}
}
