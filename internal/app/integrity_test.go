package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
	mrstore "github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// startAt starts a server on dir, returning the error of its start.
func startAt(t *testing.T, dir string, accept bool, opts ...func(*app.Config)) (*app.Server, error) {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.Kinds = testKinds()
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.AcceptDamagedState = accept
	if testing.Verbose() && os.Getenv("MRCLUSTER_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := app.Start(context.Background(), cfg)
	if err == nil {
		t.Cleanup(func() { stop(srv) })
	}
	return srv, err
}

func stop(srv *app.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Stop(ctx)
}

// streamFile returns the one message block file of a stream in dir.
func streamFile(t *testing.T, dir, stream string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "jetstream", "jetstream", "*", "streams", stream, "msgs", "*.blk"))
	if len(files) == 0 {
		t.Fatalf("no message block of stream %s under %s", stream, dir)
	}
	return files[len(files)-1]
}

// A stopped server's store is damaged five ways: bytes flipped in the
// job archive's file (finished jobs' records), in the datasets bucket's,
// in the schedules' and the kinds' state's, the jobs bucket's file
// truncated. Each time the server refuses to start, naming
// the stream and what to do; with --accept-damaged-state it starts.
func TestDamagedStoreIsRefused(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	clean := filepath.Join(base, "clean")
	srv, err := startAt(t, clean, false)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	c := b.client()
	var ids []string
	for range 27 {
		j := c.Submit(t, "noop", 2)
		ids = append(ids, j.ID)
	}
	for _, id := range ids {
		b.awaitState(t, id, client.Succeeded)
	}
	c.PutFile(t, "books", "a.txt", []byte(strings.Repeat("call me ishmael\n", 500)))
	c.PutFile(t, "books", "b.txt", []byte(strings.Repeat("some years ago\n", 500)))
	if r := b.do(t, "POST", "/api/v1/schedules", `{"name":"nightly","cron":"@daily","job":{"kind":"noop","partitions":1}}`); r.Status != 201 {
		t.Fatalf("add a schedule: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "POST", "/api/v1/kinds/noop/pause", ""); r.Status != 200 {
		t.Fatalf("pause a kind: %d %s", r.Status, r.Body)
	}
	stop(srv)

	// The clean copy starts again and holds everything.
	again, err := startAt(t, clean, false)
	if err != nil {
		t.Fatalf("an undamaged store after a clean stop: %v", err)
	}
	if j := (&bundle{srv: again}).job(t, ids[13]); j.State != client.Succeeded {
		t.Fatalf("job after a restart: %+v", j)
	}
	stop(again)

	damage := []struct {
		name, stream string
		do           func(path string) error
	}{
		{"flipped bytes in the job archive", natsx.ArchiveStream, flip(`"succeeded"`)},
		{"flipped bytes in the datasets bucket", "KV_" + natsx.DatasetsBucket, flip(`"b.txt"`)},
		// A bucket whose records are watched at start: the watch waited
		// on the damaged record until the start's deadline, and the server
		// ended with "watch schedules: context canceled".
		{"flipped bytes in the schedules bucket", "KV_" + natsx.SchedulesBucket, flip(`@daily`)},
		{"flipped bytes in the kinds' state bucket", "KV_" + natsx.KindStateBucket, flip(`noop`)},
		{"the jobs bucket truncated", "KV_" + natsx.JobsBucket, func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Truncate(p, fi.Size()*2/3)
		}},
	}
	for i, d := range damage {
		dir := filepath.Join(base, "damaged"+string(rune('a'+i)))
		if out, err := exec.Command("cp", "-a", clean, dir).CombinedOutput(); err != nil {
			t.Fatalf("copy the data directory: %v %s", err, out)
		}
		if err := d.do(streamFile(t, dir, d.stream)); err != nil {
			t.Fatal(err)
		}

		_, err := startAt(t, dir, false)
		if !errors.Is(err, app.ErrDamagedStore) || !strings.Contains(err.Error(), d.stream) || !strings.Contains(err.Error(), "--accept-damaged-state") {
			t.Fatalf("%s: start answered %v; want a refusal naming %s and what to do", d.name, err, d.stream)
		}
		t.Logf("%s: %v", d.name, err)
		if _, err := startAt(t, dir, true); err != nil {
			t.Fatalf("%s, with --accept-damaged-state: %v", d.name, err)
		}
	}
}

// flip returns a damage that inverts 8 bytes of a file at the last place
// it holds marker: in a record the bucket still holds (older records of a
// key may be superseded, and damage to them loses nothing).
func flip(marker string) func(path string) error {
	return func(path string) error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		at := bytes.LastIndex(data, []byte(marker))
		if at < 0 {
			return fmt.Errorf("%s does not hold %q", path, marker)
		}
		for i := at; i < at+8 && i < len(data); i++ {
			data[i] ^= 0xff
		}
		return os.WriteFile(path, data, 0o600)
	}
}

// Bytes flipped inside a stored dataset block, which JetStream finds when
// it reads the record: a job reading it fails, at its first attempt, with
// a message that names the file and what to do (no retry: the failure
// counts as its last attempt, as for a missing input). It was taken for a store
// that did not answer, and run again every 30 s for ever.
func TestDamagedBlockFailsTheJob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := startAt(t, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	text := []byte(strings.Repeat("call me ishmael some years ago never mind how long\n", 20000)) // 1 MB: eight chunks
	(&bundle{srv: srv}).client().PutFile(t, "books", "moby.txt", text)
	stop(srv)
	if err := flip("ishmael some years")(streamFile(t, dir, "OBJ_"+natsx.BlocksBucket)); err != nil {
		t.Fatal(err)
	}
	srv, err = startAt(t, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	j := b.client().SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 1, Reducers: 1})
	j = b.await(t, j.ID, terminal)
	if j.State != client.Failed || !strings.Contains(j.Error, "damaged") || !strings.Contains(j.Error, "moby.txt") || !strings.Contains(j.Error, "upload the file again") || !strings.Contains(j.Error, "not retried") {
		t.Fatalf("a job reading a damaged block: %s", apitest.Describe(j))
	}
	if j.Tasks.Failed != 1 || !strings.Contains(j.Error, "7 of its 8 chunks are readable") {
		t.Fatalf("a damaged block is damaged at every attempt; the job should fail at its first: %s", apitest.Describe(j))
	}
	// A download of the file says so before it begins (its only block).
	r := b.do(t, "GET", "/api/v1/datasets/books/files/moby.txt", "")
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "damaged") || !strings.Contains(string(r.Body), "upload the file again") {
		t.Fatalf("a download of a damaged file: %d %s", r.Status, r.Body)
	}
}

// A download of a dataset file whose third block is damaged on disk sends
// the first two and is cut short; the Go client says so and what to do.
func TestDamagedFileDownloadIsCutShort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := startAt(t, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	block := strings.Repeat("call me ishmael some years ago never mind how long\n", 90000)[:dataset.DefaultBlockSize]
	text := block + block + "the zanzibarian quokka line\n" + block[:1000]
	(&bundle{srv: srv}).client().PutFile(t, "books", "moby.txt", []byte(text))
	stop(srv)
	if err := flip("zanzibarian quokka")(streamFile(t, dir, "OBJ_"+natsx.BlocksBucket)); err != nil {
		t.Fatal(err)
	}
	if srv, err = startAt(t, dir, false); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = (&bundle{srv: srv}).client().API().GetFile(apitest.Context(t), "books", "moby.txt", &out)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("ended after %d bytes", out.Len())) || !regexp.MustCompile(`upload (it|the file) again`).MatchString(err.Error()) {
		t.Fatalf("a damaged file read as %d bytes, %v; want it cut short, saying so", out.Len(), err)
	}
	if out.Len() != 2*len(block) || out.String() != block+block {
		t.Fatalf("the download sent %d bytes before the damaged block, want the first two blocks' %d", out.Len(), 2*len(block))
	}
}

// Bytes flipped on disk inside a finished job's output of several chunks:
// the download has begun (its status sent) when the read meets the damage,
// so the server cuts the body short and logs the object; the Go client
// (and the CLI) says the output ended early, after how much, and what to
// do. The read finds the damage when the library's read stalls on it, a
// few seconds, not after the library's whole time for the object (5 s + 1 s
// per 4 MiB: 30 s for 100 MB), which natsx's TestBlobsDamagedOnDisk times.
func TestDamagedOutputIsCutShortWithAReason(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := startAt(t, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for i := range 20000 {
		if i == 12000 {
			text.WriteString("the zanzibarian quokka line\n")
		}
		fmt.Fprintf(&text, "call me ishmael, line %d\n", i)
	}
	b := &bundle{srv: srv}
	b.client().PutFile(t, "books", "moby.txt", []byte(text.String()))
	j := b.client().SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"books"}, Partitions: 1, Reducers: 1,
		Params: map[string]any{"pattern": "."}})
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded {
		t.Fatalf("the grep: %s", apitest.Describe(j))
	}
	stop(srv)
	if err := flip("zanzibarian quokka")(streamFile(t, dir, "OBJ_"+natsx.OutputBucket)); err != nil {
		t.Fatal(err)
	}
	if srv, err = startAt(t, dir, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err = (&bundle{srv: srv}).client().API().Output(ctx, j.ID, &out)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("ended after %d bytes", out.Len())) || !strings.Contains(err.Error(), "mrcluster rerun "+j.ID) {
		t.Fatalf("a damaged output read as %d bytes, %v; want it cut short, saying so", out.Len(), err)
	}
	if out.Len() == 0 || !strings.HasPrefix(out.String(), "moby.txt:1 call me ishmael, line 0\n") {
		t.Fatalf("the output's first part: %.60q", out.String())
	}
	// Stored as a dataset's file on the server, it is refused whole.
	b = &bundle{srv: srv}
	if r := b.do(t, "PUT", "/api/v1/datasets/lines/files/a.txt?from_job="+j.ID, ""); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "damaged") || !strings.Contains(string(r.Body), "mrcluster rerun "+j.ID) {
		t.Fatalf("a damaged output stored as a dataset file: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "GET", "/api/v1/datasets/lines", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the dataset of a refused output: %d %s; want none", r.Status, r.Body)
	}
	// A range of it (a download resumed) is refused with the reason, not
	// a 500: its size is not known until it was written whole.
	if r := b.do(t, "GET", "/api/v1/jobs/"+j.ID+"/output", "", "Range", "bytes=10-"); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "damaged") || !strings.Contains(string(r.Body), "mrcluster rerun "+j.ID) {
		t.Fatalf("a range of a damaged output: %d %s", r.Status, r.Body)
	}
}

// Bytes flipped in the task queue's file while the server is stopped:
// JetStream drops the messages of that part of the file when a consumer
// reaches it, and the job whose tasks they were waited for ever, every
// worker idle. A stuck queue is now read against the job records, and the
// tasks it lost are queued again.
func TestDamagedTaskQueueIsRequeued(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := startAt(t, dir, false, func(c *app.Config) { c.Workers = 0 })
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	j := b.client().Submit(t, "noop", 6) // no workers: its tasks stay queued
	stop(srv)
	if err := flip(`"partition":3`)(streamFile(t, dir, natsx.TasksStream)); err != nil {
		t.Fatal(err)
	}
	srv, err = startAt(t, dir, false, func(c *app.Config) { c.ReconcileEvery = 500 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	b = &bundle{srv: srv}
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded || j.Result.Sum != 6 {
		t.Fatalf("a job whose queued tasks were damaged on disk: %s", apitest.Describe(j))
	}
}

// Bytes flipped on disk inside a map task's stored output, found by the
// reduce that reads it after a restart: the map runs again from its input
// and the job succeeds with the right output (it failed, "submit it
// again", before maps were made again).
func TestDamagedMapOutputRunsTheMapAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reducing := make(chan struct{}, 1)
	gated, _, _ := countKind("gated", nil, func(ctx context.Context, _ []byte) error {
		select { // the first life's reduce waits for the server to stop
		case reducing <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	})
	srv, err := startAt(t, dir, false, func(c *app.Config) { c.Kinds = testKinds(gated) })
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	c := b.client()
	c.PutFile(t, "in", "a.txt", []byte(strings.Repeat("alpha beta gamma\n", 50)))
	c.PutFile(t, "in", "b.txt", []byte(strings.Repeat("zanzibarian quokka\n", 50)))
	j := c.SubmitSpec(t, client.Spec{Kind: "gated", Input: []string{"in"}, Partitions: 2, Reducers: 1})
	select {
	case <-reducing:
	case <-time.After(time.Minute):
		t.Fatal("the reduce did not start")
	}
	stop(srv) // the reduce is canceled at the stop's deadline, a few seconds
	if err := flip("zanzibarian")(streamFile(t, dir, "OBJ_"+natsx.ShuffleBucket)); err != nil {
		t.Fatal(err)
	}
	open, _, _ := countKind("gated", nil, nil)
	srv, err = startAt(t, dir, false, func(c *app.Config) { c.Kinds = testKinds(open) })
	if err != nil {
		t.Fatal(err)
	}
	b = &bundle{srv: srv}
	c = b.client()
	got := b.await(t, j.ID, terminal)
	if got.State != client.Succeeded {
		t.Fatalf("a job whose map output was damaged on disk: %s", apitest.Describe(got))
	}
	if want := "alpha 50\nbeta 50\ngamma 50\nquokka 50\nzanzibarian 50\n"; c.Output(t, j.ID) != want {
		t.Fatalf("output %q, want %q", c.Output(t, j.ID), want)
	}
	// The reduce names the damaged output; that map ran again, and only it.
	lost, runs := -1, map[int]int{}
	for _, a := range history(t, c, j.ID) {
		if a.LostMap > 0 && strings.Contains(a.Error, "damaged") {
			lost = a.LostMap - 1
		}
		if a.Phase == job.PhaseMap && a.Error == "" {
			runs[a.Partition]++
		}
	}
	if lost < 0 || runs[lost] != 2 || runs[1-lost] != 1 {
		t.Fatalf("the damaged output's map: %d; map runs by task %v; want it run twice, the other once", lost, runs)
	}
}

// unappliedResults stores in a store under dir a job of 4 noop tasks
// whose results are stored and applied by no coordinator: a server with no
// workers takes the job, then a pool of workers alone on the store runs
// the tasks. It returns the job and the results stream's last sequence.
func unappliedResults(t *testing.T, dir string) (client.Job, uint64) {
	t.Helper()
	srv, err := startAt(t, dir, false, func(c *app.Config) { c.Workers = 0 })
	if err != nil {
		t.Fatal(err)
	}
	j := (&bundle{srv: srv}).client().Submit(t, "noop", 4) // no workers: its tasks stay queued
	stop(srv)

	ctx := apitest.Context(t)
	quiet := slog.New(slog.DiscardHandler)
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect("lone workers")
	if err != nil {
		t.Fatal(err)
	}
	st, err := natsx.Setup(ctx, nc, natsx.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pool := worker.New(worker.Config{Store: st.Ports, Kinds: testKinds(), Concurrency: 1, Name: "lone", Host: "lone", Logger: quiet})
	if err := pool.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		info, err := st.Ports.Tasks.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Waiting == 0 && info.Leased == 0 {
			break // every task acked: its result is stored
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the lone pool left %d tasks waiting, %d leased", info.Waiting, info.Leased)
		case <-time.After(50 * time.Millisecond): // polls the queue: no event says it drained
		}
	}
	results, err := st.Results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = pool.Stop(sctx)
	nc.Close()
	_ = emb.Stop(sctx)
	return j, results.State.LastSeq
}

// Bytes flipped in the results' consumer's state file that still read,
// as a state that applied every result the stream holds, while some were
// stored by workers and applied by no coordinator: nothing can tell such a
// state from a sound one, so the results it passed over are never applied.
// The look at a stuck queue finds their tasks neither queued, running nor
// done, and queues them again; the job succeeds, each partition once.
func TestResultsPassedOverAreRunAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, last := unappliedResults(t, dir)
	files, _ := filepath.Glob(filepath.Join(dir, "jetstream", "jetstream", "*", "streams", natsx.ResultsStream, "obs", natsx.CoordConsumer, "o.dat"))
	if len(files) != 1 {
		t.Fatalf("the results' consumer's state file: %v", files)
	}
	state := []byte{0x16, 0x02}
	for _, v := range []uint64{last, last, last, last, 0, 0} { // acked and delivered up to the last result
		state = binary.AppendUvarint(state, v)
	}
	if err := os.WriteFile(files[0], state, 0o600); err != nil {
		t.Fatal(err)
	}

	logs := &app.LockedBuffer{}
	srv, err := startAt(t, dir, false, func(c *app.Config) {
		c.ReconcileEvery = 500 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded || j.Result.Sum != 4 || j.Tasks.Done != 4 {
		t.Fatalf("a job whose stored results the consumer passed over: %s", apitest.Describe(j))
	}
	// Through the repair, not the stored results (else the state written
	// did not pass over them, and the test tested nothing).
	if !strings.Contains(logs.String(), "queuing again tasks neither queued, running nor done") {
		t.Fatalf("the job succeeded without its tasks queued again:\n%s", logs.String())
	}
}

// Bytes flipped on disk inside a task's result that no coordinator has
// applied yet (its task was acked when the result was stored): JetStream
// will not serve the result, and nothing holds the task any more. The
// look at a stuck queue finds the task neither queued, running nor done
// and queues it again; the job succeeds, each partition counted once.
func TestDamagedResultIsRunAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := unappliedResults(t, dir)
	if err := flip(`"partition":2`)(streamFile(t, dir, natsx.ResultsStream)); err != nil {
		t.Fatal(err)
	}

	srv, err := startAt(t, dir, false, func(c *app.Config) { c.ReconcileEvery = 500 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded || j.Result.Sum != 4 || j.Tasks.Done != 4 {
		t.Fatalf("a job whose stored results were damaged on disk: %s", apitest.Describe(j))
	}
}

// Task messages gone from the queue while the server runs (in a cluster a
// partition test left a job's two tasks neither queued, running nor done
// for minutes; every server of a cluster now looks too): the stuck queue
// is read against the jobs, and the lost tasks are queued again, each once.
func TestLostTasksAreQueuedAgain(t *testing.T) {
	t.Parallel()
	srv, err := startAt(t, t.TempDir(), false, func(c *app.Config) { c.Workers, c.ReconcileEvery = 0, 200*time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv}
	j := b.client().Submit(t, "noop", 4) // no workers: its tasks stay queued
	s := store(t, b)
	ctx := apitest.Context(t)
	queued := func() int {
		t.Helper()
		n := 0
		if err := s.Ports.Tasks.Scan(ctx, func(data []byte) {
			if tk, err := mrstore.DecodeTask(data); err == nil && tk.Job == j.ID {
				n++
			}
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := queued(); n != 4 {
		t.Fatalf("%d tasks of the job queued; want 4", n)
	}
	if err := s.Tasks.Purge(ctx, jetstream.WithPurgeSubject(natsx.TaskSubject+j.ID)); err != nil {
		t.Fatal(err)
	}
	if n := queued(); n != 0 {
		t.Fatalf("%d tasks of the job queued after the purge; want 0", n)
	}
	for n := 0; n != 4; n = queued() {
		if n > 4 {
			t.Fatalf("%d tasks of the job queued again; want 4", n)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the lost tasks were not queued again (%d of 4)", n)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got := b.job(t, j.ID); got.State.Terminal() {
		t.Fatalf("the job: %s", apitest.Describe(got))
	}
}
