package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// A dataset that an unfinished job reads can be neither deleted nor
// changed (409, naming the job); once the job is done, it can.
func TestDatasetInUseIsKept(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	wc := kinds.Data()[0]
	held := job.Kind{
		Name: "held", Description: "wordcount whose maps wait for the test",
		MapRecord: func(ctx context.Context, rec job.Record, emit job.Emit) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			return wc.Map(ctx, rec, emit)
		},
		Combine: wc.Combine, ReduceKey: wc.Reduce,
	}
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(held) })
	b.client().PutFile(t, "d", "a.txt", []byte("x y\n"))
	j := b.client().SubmitSpec(t, client.Spec{Kind: "held", Input: []string{"d"}, Partitions: 1})
	for _, r := range []struct{ method, path string }{
		{"DELETE", "/api/v1/datasets/d"},
		{"PUT", "/api/v1/datasets/d/files/a.txt"},
		{"DELETE", "/api/v1/datasets/d/files/a.txt"},
	} {
		resp := b.do(t, r.method, r.path, "z\n")
		if resp.Status != http.StatusConflict || !strings.Contains(string(resp.Body), j.ID) {
			t.Fatalf("%s %s while %s reads it: %d %s", r.method, r.path, j.ID, resp.Status, resp.Body)
		}
	}
	close(release)
	if got := b.awaitState(t, j.ID, client.Succeeded); got.Counters.InputBytes != 4 {
		t.Fatalf("the job read %d bytes, want the 4 it was submitted with", got.Counters.InputBytes)
	}
	if r := b.do(t, "DELETE", "/api/v1/datasets/d", ""); r.Status != http.StatusNoContent {
		t.Fatalf("delete after the job: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "GET", "/api/v1/datasets/d", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the deleted dataset: %d %s", r.Status, r.Body)
	}
}

// A file of a dataset reads back as it was uploaded (the API, the Go
// client); one deleted leaves the dataset with its others, and a job
// submitted after reads those alone.
func TestDatasetFilesReadBackAndDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client()
	a := strings.Repeat("alpha beta\n", 50000) // 550 KB
	c.PutFile(t, "d", "a.txt", []byte(a))
	c.PutFile(t, "d", "b.txt", []byte("gamma gamma\n"))
	r := b.do(t, "GET", "/api/v1/datasets/d/files/a.txt?download=1", "")
	if r.Status != http.StatusOK || string(r.Body) != a || r.Header.Get("Content-Length") != fmt.Sprint(len(a)) ||
		r.Header.Get("Content-Disposition") != `attachment; filename="a.txt"` {
		t.Fatalf("GET a.txt: %d, %d bytes, headers %v", r.Status, len(r.Body), r.Header)
	}
	if r := b.do(t, "HEAD", "/api/v1/datasets/d/files/a.txt", ""); r.Status != http.StatusOK || len(r.Body) != 0 || r.Header.Get("Content-Length") != fmt.Sprint(len(a)) {
		t.Fatalf("HEAD a.txt: %d, %d bytes, headers %v", r.Status, len(r.Body), r.Header)
	}
	// Ranges (a download resumed; across blocks in the dataset package's
	// test): closed, open, the last bytes, past the end (cut to it), and
	// under If-Range; one starting past the end is refused; several, or a
	// version the client does not hold, are answered whole.
	etag := r.Header.Get("ETag")
	for _, c := range []struct {
		rng, ifRange string
		status       int
		body         string
		contentRange string
	}{
		{"bytes=0-9", "", 206, a[:10], fmt.Sprintf("bytes 0-9/%d", len(a))},
		{"bytes=100000-", "", 206, a[100000:], fmt.Sprintf("bytes 100000-%d/%d", len(a)-1, len(a))},
		{"bytes=-11", "", 206, a[len(a)-11:], fmt.Sprintf("bytes %d-%d/%d", len(a)-11, len(a)-1, len(a))},
		{"bytes=5-99999999", "", 206, a[5:], fmt.Sprintf("bytes 5-%d/%d", len(a)-1, len(a))},
		{"bytes=0-1,5-6", "", 200, a, ""},
		{"bytes=0-9", etag, 206, a[:10], fmt.Sprintf("bytes 0-9/%d", len(a))},
		{"bytes=0-9", `"another version"`, 200, a, ""},
	} {
		r := b.do(t, "GET", "/api/v1/datasets/d/files/a.txt", "", "Range", c.rng, "If-Range", c.ifRange)
		if r.Status != c.status || string(r.Body) != c.body || r.Header.Get("Content-Range") != c.contentRange || r.Header.Get("Content-Length") != fmt.Sprint(len(c.body)) {
			t.Errorf("GET a.txt with Range %q, If-Range %q: %d, %d bytes, Content-Range %q; want %d, %d bytes, %q",
				c.rng, c.ifRange, r.Status, len(r.Body), r.Header.Get("Content-Range"), c.status, len(c.body), c.contentRange)
		}
	}
	if r := b.do(t, "GET", "/api/v1/datasets/d/files/a.txt", "", "Range", fmt.Sprintf("bytes=%d-", len(a))); r.Status != http.StatusRequestedRangeNotSatisfiable ||
		r.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(a)) || !strings.Contains(string(r.Body), "not within file a.txt") {
		t.Errorf("a range past the end: %d %s %v", r.Status, r.Body, r.Header)
	}
	var got strings.Builder
	if err := c.API().GetFile(apitest.Context(t), "d", "b.txt", &got); err != nil || got.String() != "gamma gamma\n" {
		t.Fatalf("client GetFile b.txt: %q, %v", got.String(), err)
	}
	for _, bad := range []struct {
		method, path string
		status       int
		msg          string
	}{
		{"GET", "/api/v1/datasets/d/files/c.txt", 404, `dataset d has no file \"c.txt\"`},
		{"DELETE", "/api/v1/datasets/d/files/c.txt", 404, `dataset d has no file \"c.txt\"`},
		{"GET", "/api/v1/datasets/e/files/a.txt", 404, `dataset \"e\" not found`},
		{"DELETE", "/api/v1/datasets/d/files/a%3Fb", 400, "file name"},
	} {
		if r := b.do(t, bad.method, bad.path, ""); r.Status != bad.status || !strings.Contains(string(r.Body), bad.msg) {
			t.Errorf("%s %s: %d %s, want %d %q", bad.method, bad.path, r.Status, r.Body, bad.status, bad.msg)
		}
	}
	if err := c.API().DeleteFile(apitest.Context(t), "d", "a.txt"); err != nil {
		t.Fatal(err)
	}
	d, err := c.API().Dataset(apitest.Context(t), "d")
	if err != nil || len(d.Files) != 1 || d.Files[0].Name != "b.txt" || d.Size != 12 {
		t.Fatalf("the dataset after a.txt was deleted: %+v, %v", d, err)
	}
	if r := b.do(t, "GET", "/api/v1/datasets/d/files/a.txt", ""); r.Status != http.StatusNotFound {
		t.Fatalf("GET of the deleted file: %d %s", r.Status, r.Body)
	}
	j := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"d"}, Partitions: 1})
	if j = b.awaitState(t, j.ID, client.Succeeded); j.Counters.InputBytes != 12 {
		t.Fatalf("a word count after the delete read %d bytes, want b.txt's 12", j.Counters.InputBytes)
	}
	if out := c.Output(t, j.ID); out != "gamma 2\n" {
		t.Fatalf("a word count after the delete: %q, want b.txt's words alone", out)
	}
}

// A succeeded job's output is stored as a dataset's file on the server
// (PUT …?from_job=ID), the next job's input; a job not succeeded, one
// that does not exist, a body beside from_job, or a dataset a job reads,
// are refused, naming why, and store nothing.
func TestJobOutputStoredAsADatasetFile(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(bl.kind()) })
	c := b.client()
	c.PutFile(t, "d", "a.txt", []byte("b a b\nc b\n"))
	wc := b.awaitState(t, c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"d"}, Partitions: 2, Reducers: 2}).ID, client.Succeeded)
	out := c.Output(t, wc.ID)
	r := b.do(t, "PUT", "/api/v1/datasets/counts/files/wc.txt?from_job="+wc.ID, "")
	var d client.Dataset
	r.JSON(t, &d)
	if r.Status != http.StatusCreated || len(d.Files) != 1 || d.Files[0].Name != "wc.txt" || d.Files[0].Size != int64(len(out)) {
		t.Fatalf("PUT from_job: %d %s", r.Status, r.Body)
	}
	if got := b.do(t, "GET", "/api/v1/datasets/counts/files/wc.txt", ""); string(got.Body) != out {
		t.Fatalf("the stored output reads %q, the job's output is %q", got.Body, out)
	}
	running := b.submit(t, "block", 1)
	apitest.Recv(t, bl.started, "a block task to start")
	for _, bad := range []struct {
		path, body string
		status     int
		msg        string
	}{
		{"/api/v1/datasets/counts/files/x.txt?from_job=" + running.ID, "", 409, "its output is ready once it has succeeded"},
		{"/api/v1/datasets/counts/files/x.txt?from_job=wordcount_01m0000000000000000000000", "", 404, "not found"},
		{"/api/v1/datasets/counts/files/x.txt?from_job=" + wc.ID, "a body", 400, "takes no body"},
		{"/api/v1/datasets/counts/files/x%3F.txt?from_job=" + wc.ID, "", 400, "file name"},
	} {
		if r := b.do(t, "PUT", bad.path, bad.body); r.Status != bad.status || !strings.Contains(string(r.Body), bad.msg) {
			t.Errorf("PUT %s: %d %s, want %d %q", bad.path, r.Status, r.Body, bad.status, bad.msg)
		}
	}
	if d, err := c.API().Dataset(apitest.Context(t), "counts"); err != nil || len(d.Files) != 1 {
		t.Fatalf("the refused PUTs stored something: %+v, %v", d, err)
	}
	close(bl.release)
	b.awaitState(t, running.ID, client.Succeeded)
	// The next job reads it; meanwhile the dataset cannot change.
	g := c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"counts"}, Partitions: 1, Params: map[string]any{"pattern": "^b "}})
	if g = b.awaitState(t, g.ID, client.Succeeded); c.Output(t, g.ID) != "wc.txt:2 b 3\n" {
		t.Fatalf("a grep over the stored output: %q", c.Output(t, g.ID))
	}
}

// A job over more files than its record may hold keeps their list in an
// object of its own: the job runs, a retry makes its map tasks again from
// that list, and deleting the job deletes it.
func TestJobOverManyFiles(t *testing.T) {
	t.Parallel()
	var failed atomic.Bool
	k, _, _ := countKind("once", func(_ context.Context, rec job.Record) error {
		if rec.File == "f0123.txt" && failed.CompareAndSwap(false, true) {
			return fmt.Errorf("the first read of %s fails: %w", rec.File, job.ErrSkipRetry)
		}
		return nil
	}, nil)
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(k) })
	c := b.client()
	n := job.MaxInlineFiles + 44
	want := map[string]int{}
	for i := range n {
		w := fmt.Sprintf("w%c", 'a'+i%7)
		want[w] += 2
		c.PutFile(t, "many", fmt.Sprintf("f%04d.txt", i), []byte(w+"\n"+w+"\n"))
	}
	j := b.await(t, c.SubmitSpec(t, client.Spec{Kind: "once", Input: []string{"many"}, Partitions: 5, Reducers: 2}).ID, terminal)
	if j.State != client.Failed || !strings.Contains(j.Error, "the first read of f0123.txt fails") {
		t.Fatalf("the job's first run: %s", apitest.Describe(j))
	}
	s := store(t, b)
	e, err := s.Jobs.Get(apitest.Context(t), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var rec job.Job
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.FilesRef == "" || len(rec.Files) != 0 {
		t.Fatalf("the record of a job over %d files holds %d of them, and names the object %q (%v)", n, len(rec.Files), rec.FilesRef, err)
	}
	if _, err := c.API().Retry(apitest.Context(t), j.ID); err != nil {
		t.Fatal(err)
	}
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded {
		t.Fatalf("the retried job: %s", apitest.Describe(j))
	}
	if got := wordCounts(t, c.Output(t, j.ID)); !maps.Equal(got, want) {
		t.Fatalf("output %v, want %v", got, want)
	}
	if _, err := s.Output.GetInfo(apitest.Context(t), rec.FilesRef); err != nil {
		t.Fatalf("the list of files before the job is deleted: %v", err)
	}
	if err := c.API().Delete(apitest.Context(t), j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Output.GetInfo(apitest.Context(t), rec.FilesRef); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("the list of files once the job is deleted: %v, want it gone", err)
	}
}

// A map task whose split reads more than job.MaxTaskFiles files names its
// job's list instead of carrying the files; the worker reads the list and
// cuts the split itself, and the output is whole. (A task carrying about
// 6,000 files was larger than a message, and the submit answered 413.)
func TestMapTaskOfManyFiles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client()
	n := job.MaxTaskFiles + 150
	want := map[string]int{}
	for i := range n {
		want[fmt.Sprintf("w%c", 'a'+i%13)] += 2
	}
	// 1,150 uploads, eight at a time: 17 s alone, and more than the 90 s
	// of apitest.Context once in CI, amid the package's other tests.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var g errgroup
	for w := range 8 {
		g.Go(func() error {
			for i := w; i < n; i += 8 {
				word := fmt.Sprintf("w%c", 'a'+i%13)
				data := word + "\n" + word + "\n"
				if err := c.Upload(ctx, "lots", fmt.Sprintf("f%05d.txt", i), []byte(data)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// One map task over every file, and three: more than MaxTaskFiles
	// files each, then fewer.
	for _, m := range []int{1, 3} {
		j := b.await(t, c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"lots"}, Partitions: m, Reducers: 2}).ID, terminal)
		if j.State != client.Succeeded {
			t.Fatalf("a job of %d map tasks over %d files: %s", m, n, apitest.Describe(j))
		}
		if got := wordCounts(t, c.Output(t, j.ID)); !maps.Equal(got, want) {
			t.Fatalf("%d map tasks: output %v, want %v", m, got, want)
		}
		if j.Counters == nil || j.Counters.InputRecords != int64(2*n) {
			t.Fatalf("%d map tasks: counters %+v, want %d input records", m, j.Counters, 2*n)
		}
	}
}

// wordCounts reads a word count's output lines, "word count".
func wordCounts(t *testing.T, out string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for line := range strings.Lines(out) {
		var w string
		var count int
		if _, err := fmt.Sscanf(line, "%s %d", &w, &count); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		got[w] = count
	}
	return got
}

// errgroup runs functions and keeps the first error.
type errgroup struct {
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

func (g *errgroup) Go(fn func() error) {
	g.wg.Go(func() {
		if err := fn(); err != nil {
			g.once.Do(func() { g.err = err })
		}
	})
}

func (g *errgroup) Wait() error {
	g.wg.Wait()
	return g.err
}

// Files are stored under the names people give them: spaces, letters of
// any script, brackets; names that differ only where a store key could not
// tell them apart ('.' and '=', a space) are distinct files. A job reads
// them under those names, and an upload again replaces only its own file.
func TestFileNamesAsPeopleWriteThem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client()
	names := []string{"My Notes (été).txt", "a=b.txt", "a.b.txt", "a b.txt", "日本語 2026.txt", "x+y [1] {2} @!&'#~%$^;.txt"}
	for i, name := range names {
		c.PutFile(t, "people", name, fmt.Appendf(nil, "hello %d\nbye\n", i))
	}
	c.PutFile(t, "people", "a b.txt", []byte("hello again\n"))
	d, err := c.API().Dataset(apitest.Context(t), "people")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, f := range d.Files {
		got[f.Name] = f.Size
	}
	want := map[string]int64{}
	for i, name := range names {
		want[name] = int64(len(fmt.Sprintf("hello %d\nbye\n", i)))
	}
	want["a b.txt"] = int64(len("hello again\n"))
	if !maps.Equal(got, want) {
		t.Fatalf("the dataset's files: %v, want %v", got, want)
	}
	j := b.await(t, c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"people"}, Partitions: 3, Reducers: 2,
		Params: map[string]any{"pattern": "hello"}}).ID, terminal)
	if j.State != client.Succeeded {
		t.Fatalf("grep over the files: %s", apitest.Describe(j))
	}
	lines := strings.Split(strings.TrimSpace(c.Output(t, j.ID)), "\n")
	var wantLines []string
	for i, name := range names {
		if name == "a b.txt" {
			wantLines = append(wantLines, name+":1 hello again")
			continue
		}
		wantLines = append(wantLines, fmt.Sprintf("%s:1 hello %d", name, i))
	}
	slices.Sort(lines)
	slices.Sort(wantLines)
	if !slices.Equal(lines, wantLines) {
		t.Fatalf("grep's output:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
}
