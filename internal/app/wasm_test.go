package app_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/catalog"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/natsx"
	mrstore "github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
	"github.com/mrcluster/mrcluster/internal/worker"
)

// A kind uploaded as a WebAssembly module runs on workers that never saw
// it, its word count equals the built-in's byte for byte, a job keeps the
// version it was submitted with when the kind is replaced while it runs,
// and a kind in use cannot be deleted.
func TestUploadedKindEndToEnd(t *testing.T) {
	t.Parallel()
	// The modules are built first, outside the calls' deadline: a fresh
	// machine builds Go's standard library for wasip1 on the way.
	wc := apitest.BuildWasm(t, "examples/wasm-wordcount")
	lines := apitest.BuildWasm(t, "internal/wasmkind/testdata/fails")
	// No workers of its own: jobs wait until a pool joins, as a remote
	// worker process would.
	b := setup(t, func(c *app.Config) { c.Workers = 0 })
	// Four compiles of 3.5 MB modules (the server's and the pool's, two
	// versions) take tens of seconds under the race detector on a loaded
	// machine: a deadline of its own, longer than apitest.Timeout (4
	// minutes ran out once, at the last call, in a whole make test).
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	c := b.client().API()
	docs := gutenberg(t)
	docs = docs[:min(3, len(docs))]
	b.upload(t, "books", docs)

	k, err := c.PutKind(ctx, "mywc", "my word count", bytes.NewReader(wc), int64(len(wc)))
	if err != nil {
		t.Fatal(err)
	}
	if !k.Uploaded || k.Version != 1 || k.Hash != wasmkind.Hash(wc) || k.Size != int64(len(wc)) || k.Description != "my word count" || !k.ReadsData {
		t.Fatalf("uploaded kind = %+v", k)
	}
	for _, bad := range []struct {
		name string
		body []byte
		want int
		says string
	}{
		{"junk", []byte("not wasm"), http.StatusBadRequest, "not a WebAssembly module"},
		{"wordcount", wc, http.StatusConflict, "built in"},
		{"bad name!", wc, http.StatusBadRequest, "character"},
	} {
		_, err := c.PutKind(ctx, bad.name, "", bytes.NewReader(bad.body), int64(len(bad.body)))
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Status != bad.want || !strings.Contains(apiErr.Message, bad.says) {
			t.Errorf("PUT kind %q: %v, want %d saying %q", bad.name, err, bad.want, bad.says)
		}
	}
	kinds, err := c.Kinds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range kinds {
		names = append(names, k.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "mywc") || !strings.Contains(strings.Join(names, " "), "wordcount") {
		t.Fatalf("GET /api/v1/kinds lists %v", names)
	}

	// One task of the kind at a time, so that the job is surely under way,
	// and not finished, when the kind is replaced.
	if _, err := c.SetKindLimits(ctx, "mywc", client.KindLimits{Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	spec := client.Spec{Kind: "mywc", Input: []string{"books"}, Partitions: 4, Reducers: 2}
	v1 := b.client().SubmitSpec(t, spec)
	builtin := b.client().SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 3, Reducers: 3})
	var apiErr *client.Error
	if err := c.DeleteKind(ctx, "mywc"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, v1.ID) {
		t.Fatalf("DELETE a kind a queued job uses: %v, want 409 naming the job", err)
	}
	startPool(t, b.srv.NATSURL())
	// Mid-run (a task done, the kind paused so that no more start while
	// it is replaced), version 2 is uploaded: it counts lines, not words.
	// The job under way finishes with version 1; the next uses version 2.
	// Its first task compiles the module under -race (90 s ran out once
	// in a whole make test, the task still running).
	b.client().AwaitWithin(t, 4*time.Minute, v1.ID, func(j client.Job) bool { return j.Tasks.Done >= 1 || j.State.Terminal() })
	if _, err := c.PauseKind(ctx, "mywc"); err != nil {
		t.Fatal(err)
	}
	if j := b.job(t, v1.ID); j.State.Terminal() || j.Tasks.Done < 1 {
		t.Fatalf("the job is not under way when its kind is replaced: %s", apitest.Describe(j))
	}
	// An uploaded kind reads data: a job of it without partitions gets
	// the cluster's choice (one per worker for the books: the remote
	// pool's 2), held here by the pause and canceled.
	auto := b.client().SubmitSpec(t, client.Spec{Kind: "mywc", Input: []string{"books"}})
	if auto.Partitions != 2 {
		t.Fatalf("a job of an uploaded kind without partitions got %d; want 2, one per worker of the remote pool", auto.Partitions)
	}
	if _, err := c.Cancel(ctx, auto.ID); err != nil {
		t.Fatal(err)
	}
	if k, err = c.PutKind(ctx, "mywc", "", bytes.NewReader(lines), int64(len(lines))); err != nil || k.Version != 2 {
		t.Fatalf("version 2: %+v, %v", k, err)
	}
	v2 := b.client().SubmitSpec(t, client.Spec{Kind: "mywc", Input: []string{"books"}, Partitions: 2, Reducers: 1})
	if _, err := c.ResumeKind(ctx, "mywc"); err != nil {
		t.Fatal(err)
	}
	// Four minutes each: v1 runs its 6 tasks one at a time, each a
	// WebAssembly instance under -race (90 s ran out once in a whole make
	// test, with 2 of them left).
	for _, id := range []string{v1.ID, builtin.ID, v2.ID} {
		if j := b.client().AwaitWithin(t, 4*time.Minute, id, terminal); j.State != client.Succeeded {
			t.Fatalf("job: %s", apitest.Describe(j))
		}
	}
	want := b.client().Output(t, builtin.ID)
	if got := b.client().Output(t, v1.ID); got != want || strings.Count(want, "\n") < 50 {
		t.Fatalf("the uploaded word count's output (%d bytes) differs from the built-in's (%d bytes)", len(got), len(want))
	}
	firstLine, _, _ := strings.Cut(strings.TrimSpace(string(docs[0].Data)), "\n")
	if got := b.client().Output(t, v2.ID); got == want || !strings.Contains(got, strings.TrimSpace(firstLine)) {
		t.Fatalf("version 2 (lines) wrote %d bytes: %.200q", len(got), got)
	}
	// A module's failure that asks not to be retried (the ABI's status 2)
	// fails its job at the first attempt.
	b.client().PutFile(t, "hopeless", "h.txt", []byte("fine\nhopeless\n"))
	hopeless := b.await(t, b.client().SubmitSpec(t, client.Spec{Kind: "mywc", Input: []string{"hopeless"}, Partitions: 1, Reducers: 1}).ID, terminal)
	if hopeless.State != client.Failed || !strings.Contains(hopeless.Error, "this line cannot be read") || !strings.Contains(hopeless.Error, "not retried") {
		t.Fatalf("a module's failure not to be retried: %s", apitest.Describe(hopeless))
	}
	if h := history(t, b.client(), hopeless.ID); len(h) != 1 || !h[0].Unretried {
		t.Fatalf("its history: %+v", h)
	}
	if err := c.DeleteKind(ctx, "mywc"); err != nil {
		t.Fatalf("DELETE the kind once its jobs finished: %v", err)
	}
	if err := c.DeleteKind(ctx, "mywc"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("DELETE it again: %v, want 404", err)
	}
	// Its jobs' outputs are written through its modules, which stay
	// stored while jobs of it do; they go with the last of them.
	if got := b.client().Output(t, v1.ID); got != want {
		t.Fatalf("the output of a deleted kind's job: %d bytes, want %d", len(got), len(want))
	}
	modules := store(t, b).Ports.Modules
	for _, id := range []string{v1.ID, v2.ID, auto.ID} {
		if err := c.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range [][]byte{wc, lines} {
		if _, err := modules.GetBytes(ctx, wasmkind.Hash(m)); err != nil {
			t.Fatalf("a module of the deleted kind, with a job of it left: %v; want it kept", err)
		}
	}
	if err := c.Delete(ctx, hopeless.ID); err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{wc, lines} {
		eventually(t, 30*time.Second, "the deleted kind's module gone with its last job", func() bool {
			_, err := modules.GetBytes(ctx, wasmkind.Hash(m))
			return errors.Is(err, mrstore.ErrNotFound)
		})
	}
	if err := c.DeleteKind(ctx, "wordcount"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("DELETE a built-in kind: %v, want 409", err)
	}
}

// startPool starts a worker pool on a connection of its own, with a
// WebAssembly runtime that has compiled nothing: a remote worker.
func startPool(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	nc, err := natsx.Dial(url, "test-remote-worker", "", "", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := natsx.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := wasmkind.New(ctx, 256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close(ctx) })
	pool := worker.New(worker.Config{
		Store: st.Ports, Datasets: &dataset.Store{KV: st.Ports.Datasets, Blocks: st.Ports.Blocks}, Kinds: testKinds(),
		Concurrency: 2, Name: "remote", Host: "test", Logger: log,
		Modules: &catalog.Modules{Blobs: st.Ports.Modules, Runtime: rt},
	})
	if err := pool.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Stop(ctx) })
}
