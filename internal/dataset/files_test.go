package dataset_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A file reads back as it was uploaded, over several blocks; a file
// deleted leaves the dataset with its others, its blocks gone, its count
// right (a read of the files after it is whole, not refused as a part),
// and a name not there is a clear "not found".
func TestFilesAreReadAndDeletedOneByOne(t *testing.T) {
	t.Parallel()
	ports := jetStream(t)
	s := &dataset.Store{KV: ports.Datasets, Blocks: ports.Blocks, BlockSize: 1000}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := strings.Repeat("a line of the first file\n", 300) // 7,500 bytes: 8 blocks
	files := map[string]string{"a.txt": a, "b.txt": "b\n", "c.txt": "c\n"}
	stored := map[string]dataset.File{}
	for _, name := range []string{"a.txt", "b.txt", "c.txt"} {
		f, err := s.PutFile(ctx, "books", name, strings.NewReader(files[name]))
		if err != nil {
			t.Fatal(err)
		}
		stored[name] = f
	}
	f, r, err := s.ReadFile(ctx, "books", "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(got) != a || f.Size != int64(len(a)) || len(f.Lines) != 8 {
		t.Fatalf("a.txt read back: %d bytes (%v), %d blocks; want %d bytes in 8", len(got), err, len(f.Lines), len(a))
	}
	// From an offset (a download resumed): within a block, on a block's
	// bound, the last bytes, past the end.
	for _, off := range []int64{1, 999, 1000, 2500, 7499, 7500, 9000, -1, -1001, -9000} {
		_, r, err := s.ReadFileFrom(ctx, "books", "a.txt", off)
		if err != nil {
			t.Fatalf("read a.txt from %d: %v", off, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		start := min(off, int64(len(a)))
		if off < 0 {
			start = max(int64(len(a))+off, 0)
		}
		if err != nil || string(got) != a[start:] {
			t.Fatalf("a.txt from %d: %d bytes (%v), want the %d from byte %d", off, len(got), err, len(a)-int(start), start)
		}
	}
	for _, c := range []struct{ ds, file, want string }{
		{"books", "nope.txt", `dataset books has no file "nope.txt"`},
		{"films", "a.txt", `dataset "films" not found`},
	} {
		_, _, err := s.ReadFile(ctx, c.ds, c.file)
		if job.ErrorCode(err) != job.ENotFound || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("read %s/%s: %v, want not found: %s", c.ds, c.file, err, c.want)
		}
		if err := s.DeleteFile(ctx, c.ds, c.file); job.ErrorCode(err) != job.ENotFound || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("delete %s/%s: %v, want not found: %s", c.ds, c.file, err, c.want)
		}
	}

	before, err := s.Get(ctx, "books")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteFile(ctx, "books", "a.txt"); err != nil {
		t.Fatal(err)
	}
	d, err := s.Get(ctx, "books")
	if err != nil || !slices.Equal(names(d), []string{"b.txt", "c.txt"}) || d.Size != 4 || !d.UpdatedAt.After(before.UpdatedAt) {
		t.Fatalf("after a.txt was deleted: %+v, %v (updated before: %v)", d, err, before.UpdatedAt)
	}
	for i := range 8 {
		name := "books/a.txt/" + stored["a.txt"].Upload + "/" + string(rune('0'+i))
		if _, err := ports.Blocks.GetBytes(ctx, name); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("block %d of the deleted file: %v, want it deleted", i, err)
		}
	}
	var h struct{ Count int }
	e, err := ports.Datasets.Get(ctx, "books")
	if err != nil || json.Unmarshal(e.Value, &h) != nil || h.Count != 2 {
		t.Fatalf("the dataset's count after the delete: %+v (%v), want 2", h, err)
	}
	// Deleted again: not found. Uploaded again: there, once.
	if err := s.DeleteFile(ctx, "books", "a.txt"); job.ErrorCode(err) != job.ENotFound {
		t.Fatalf("a.txt deleted twice: %v, want not found", err)
	}
	if _, err := s.PutFile(ctx, "books", "a.txt", strings.NewReader("again\n")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.txt", "b.txt", "c.txt"} {
		if err := s.DeleteFile(ctx, "books", name); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := s.Get(ctx, "books"); err != nil || len(d.Files) != 0 || d.Size != 0 {
		t.Fatalf("a dataset whose files were all deleted: %+v, %v; want it there, empty", d, err)
	}
	if _, err := s.Resolve(ctx, []string{"books"}); err != nil {
		t.Fatalf("an empty dataset resolved: %v", err)
	}
}

// A file of an earlier version's whole manifest (no entry of its own) is
// deleted from that manifest.
func TestAFileOfAnEarlierManifestIsDeleted(t *testing.T) {
	t.Parallel()
	ports := jetStream(t)
	s := &dataset.Store{KV: ports.Datasets, Blocks: ports.Blocks}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := earlierVersion(ctx, t, s, "books", time.Now(), "a.txt", "b.txt")
	if err := s.DeleteFile(ctx, "books", "a.txt"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Get(ctx, "books"); err != nil || !slices.Equal(names(d), []string{"b.txt"}) {
		t.Fatalf("after a.txt was deleted: %+v, %v", d, err)
	}
	if _, err := ports.Blocks.GetBytes(ctx, blockOf("books", old[0])); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted file's block: %v, want it deleted", err)
	}
}
