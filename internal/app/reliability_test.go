package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"log/slog"
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
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// pause waits d or until ctx ends, as user code that takes its time does.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// countKind is a word count whose map and reduce call the given hooks
// first; it counts its runs.
func countKind(name string, onMap func(ctx context.Context, rec job.Record) error, onReduce func(ctx context.Context, key []byte) error) (job.Kind, *atomic.Int32, *atomic.Int32) {
	wc := kinds.Data()[0]
	var maps, reduces atomic.Int32
	k := job.Kind{
		Name: name,
		MapRecord: func(ctx context.Context, rec job.Record, emit job.Emit) error {
			if rec.Line == 1 {
				maps.Add(1)
			}
			if onMap != nil {
				if err := onMap(ctx, rec); err != nil {
					return err
				}
			}
			return wc.Map(ctx, rec, emit)
		},
		Combine: wc.Combine,
		ReduceKey: func(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error) {
			if onReduce != nil {
				if err := onReduce(ctx, key); err != nil {
					return nil, err
				}
			}
			return wc.Reduce(ctx, key, values)
		},
	}
	return k, &maps, &reduces
}

// history returns a job's task attempts.
func history(t *testing.T, c apitest.Client, id string) []struct {
	job.TaskResult
	State    string
	LostMaps []int `json:"lost_maps"`
} {
	t.Helper()
	var h struct {
		Tasks []struct {
			job.TaskResult
			State    string
			LostMaps []int `json:"lost_maps"`
		}
	}
	c.Do(t, "GET", "/api/v1/jobs/"+id+"/tasks", "").JSON(t, &h)
	return h.Tasks
}

// A map and a reduce that each spend 8 s in the kind's own code, longer
// than the NATS client's 5 s default and than the ack wait, succeed with the
// right output, each in one attempt: no store read or write under the task
// is bounded by a client default, and the task keeps its lease.
func TestLongUserCodeSucceeds(t *testing.T) {
	t.Parallel()
	var slowReduce sync.Once
	k, maps, _ := countKind("slowcount",
		func(ctx context.Context, rec job.Record) error {
			if rec.Line == 1 {
				return pause(ctx, 8*time.Second)
			}
			return nil
		},
		func(ctx context.Context, _ []byte) (err error) {
			slowReduce.Do(func() { err = pause(ctx, 8*time.Second) })
			return err
		})
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.AckWait = 2 * time.Second
	})
	docs := gutenberg(t)
	doc := kinds.Doc{Name: "in.txt", Data: docs[0].Data[:min(len(docs[0].Data), 200_000)]}
	b.upload(t, "in", []kinds.Doc{doc})
	j, got := b.run(t, client.Spec{Kind: "slowcount", Input: []string{"in"}, Partitions: 1, Reducers: 1})
	if want := kinds.SeqWordCount([]kinds.Doc{doc}); got != want {
		t.Fatalf("output differs from the sequential count: %s", diff(got, want))
	}
	if n := maps.Load(); n != 1 {
		t.Fatalf("the map ran %d times, want once", n)
	}
	for _, a := range history(t, b.client(), j.ID) {
		if a.Attempt != 1 || a.State != "done" {
			t.Fatalf("attempt %+v: every task should have run once", a)
		}
	}
}

// A task of more than a minute, thirty-five times the ack wait, runs once
// and succeeds. (It took two minutes until 2026-12-06: the longest test
// of its package, holding one of the two tests run at once for all that
// time; past a minute and tens of leases renewed is what it shows.)
func TestTaskOfMoreThanAMinute(t *testing.T) {
	if testing.Short() {
		t.Skip("a task of 70 s; run without -short")
	}
	t.Parallel()
	var runs atomic.Int32
	k := job.Kind{Name: "overaminute", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		runs.Add(1)
		return 7, pause(ctx, 70*time.Second)
	}}
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.AckWait = 2 * time.Second
	})
	j := b.submit(t, "overaminute", 1)
	j = b.client().AwaitWithin(t, 3*time.Minute, j.ID, terminal)
	if j.State != client.Succeeded || j.Result.Sum != 7 {
		t.Fatalf("a task of 70 s: %s", apitest.Describe(j))
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the task ran %d times, want once", n)
	}
}

// Tasks a pool has fetched but not started stay leased: with two workers,
// a short ack wait and tasks of two to three times it, every task runs
// exactly once.
func TestFetchedTasksRunOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	runs := map[int]int{}
	k := job.Kind{Name: "steady", Map: func(ctx context.Context, tk job.Task) (int64, error) {
		mu.Lock()
		runs[tk.Partition]++
		mu.Unlock()
		return 1, pause(ctx, time.Duration(2000+tk.Partition%2*700)*time.Millisecond)
	}}
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.Workers = 2
		c.AckWait = time.Second
	})
	// Tiny tasks first: the pool learns that tasks are fast and fetches
	// many at once, so the slow ones that follow wait in the pool.
	warm := b.submit(t, "noop", 2000)
	b.awaitState(t, warm.ID, client.Succeeded)
	j := b.submit(t, "steady", 6)
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded || j.Result.Sum != 6 {
		t.Fatalf("job: %s", apitest.Describe(j))
	}
	mu.Lock()
	defer mu.Unlock()
	for p, n := range runs {
		if n != 1 {
			t.Fatalf("task %d ran %d times with no failure anywhere (runs: %v)", p, n, runs)
		}
	}
}

// store connects to a server's NATS and returns its JetStream resources.
func store(t *testing.T, b *bundle) *natsx.Store {
	t.Helper()
	nc, err := natsx.Dial(b.srv.NATSURL(), "test", b.srv.NATSToken(), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := natsx.Open(apitest.Context(t), nc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// taskMessages counts the task queue's messages, its anchor left out.
func taskMessages(ctx context.Context, s *natsx.Store) (int, error) {
	info, err := s.Tasks.Info(ctx, jetstream.WithSubjectFilter(natsx.TaskSubject+">"))
	if err != nil {
		return 0, err
	}
	n := 0
	for subject, msgs := range info.State.Subjects {
		if subject != natsx.TaskAnchorSubject {
			n += int(msgs)
		}
	}
	return n, nil
}

// awaitEmptyQueue waits until no task is queued or delivered and not acked.
func awaitEmptyQueue(t *testing.T, s *natsx.Store, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msgs, err := taskMessages(apitest.Context(t), s)
		if err != nil {
			t.Fatal(err)
		}
		lanes, err := s.Ports.Tasks.Info(apitest.Context(t)) // every priority lane's consumer
		if err != nil {
			t.Fatal(err)
		}
		if msgs == 0 && lanes.Leased == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %s: %d tasks in the stream, %d delivered and not acked", what, within, msgs, lanes.Leased)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A skewed word count (one reduce much slower than the rest) with backups:
// once the job succeeded, nothing of it stays queued or running; and a copy
// of one of its reduce tasks met after its end (a backup queued late, whose
// inputs are deleted) is dropped, not retried forever.
func TestFinishedJobLeavesNothing(t *testing.T) {
	t.Parallel()
	var slowRuns atomic.Int32
	copied := make(chan struct{}) // closed when a second copy of the slow reduce runs
	var once sync.Once
	k, _, _ := countKind("skewcount", nil, func(ctx context.Context, key []byte) error {
		// One key, so one reduce task, is slow. Its first copy straggles
		// until a second one runs, however long the other tasks take on
		// a loaded machine (a fixed pause was once not slow enough to
		// call for a backup); the copy that loses is stopped.
		if string(key) != "the" {
			return nil
		}
		if slowRuns.Add(1) == 1 {
			select {
			case <-copied:
				return pause(ctx, 1500*time.Millisecond)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Minute):
				return nil // no backup: the test says so below
			}
		}
		once.Do(func() { close(copied) })
		return pause(ctx, 100*time.Millisecond)
	})
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.BackupAfter = 200 * time.Millisecond
	})
	b.upload(t, "books", gutenberg(t))
	j, _ := b.run(t, client.Spec{Kind: "skewcount", Input: []string{"books"}, Partitions: 4, Reducers: 6})
	if len(j.Backups) == 0 {
		t.Fatalf("no backup started for the slow reduce; the test shows nothing: %s", apitest.Describe(j))
	}
	s := store(t, b)
	awaitEmptyQueue(t, s, 2*time.Second, "the job succeeded")
	b.client().AwaitIdleWorkers(t, app.DefaultConfig().Workers)
	after := slowRuns.Load()

	// A late copy of each reduce task of the finished job.
	e, err := s.Jobs.Get(apitest.Context(t), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var rec job.Job
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	for r := range rec.Reducers {
		data, _ := json.Marshal(job.Task{Job: rec.ID, Kind: rec.Kind, Partitions: rec.Partitions, Phase: job.PhaseReduce, Reducers: rec.Reducers,
			Partition: r, Maps: rec.MapCommits, Backup: true, MaxAttempts: rec.MaxAttempts})
		if _, err := s.JS.Publish(apitest.Context(t), natsx.TaskSubject+rec.ID, data); err != nil {
			t.Fatal(err)
		}
	}
	awaitEmptyQueue(t, s, 2*time.Second, "late copies of a finished job's reduce tasks were queued")
	if n := slowRuns.Load(); n != after {
		t.Fatalf("the slow reduce ran %d more times after its job succeeded", n-after)
	}
	if got := b.job(t, j.ID); got.State != client.Succeeded {
		t.Fatalf("the finished job changed: %s", apitest.Describe(got))
	}
}

// A map output that disappears from the store before every reduce read it
// is made again, as the MapReduce paper does for the outputs of a failed
// machine: the job goes back to its map phase for that task, and its
// output is whole. It failed the job before ("submit it again").
func TestLostMapOutputRunsTheMapAgain(t *testing.T) {
	t.Parallel()
	var s *natsx.Store
	var once sync.Once
	k, maps, _ := countKind("losing", nil, func(ctx context.Context, _ []byte) error {
		// The first reduce deletes every map output: the next reduce,
		// run by the only worker after it, finds its inputs gone.
		once.Do(func() { deleteShuffle(ctx, s) })
		return nil
	})
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.Workers = 1
		c.MaxAttempts = 3
	})
	s = store(t, b)
	c := b.client()
	const fileA, fileB = "alpha beta gamma delta\nepsilon zeta eta theta\n", "alpha beta\n"
	c.PutFile(t, "in", "a.txt", []byte(fileA))
	c.PutFile(t, "in", "b.txt", []byte(fileB))
	j := b.await(t, c.SubmitSpec(t, client.Spec{Kind: "losing", Input: []string{"in"}, Partitions: 2, Reducers: 2}).ID, terminal)
	if j.State != client.Succeeded {
		t.Fatalf("a job whose map outputs vanished: %s", apitest.Describe(j))
	}
	want := "alpha 2\nbeta 2\ndelta 1\nepsilon 1\neta 1\ngamma 1\ntheta 1\nzeta 1\n"
	if got := c.Output(t, j.ID); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	if n := maps.Load(); n < 3 {
		t.Fatalf("the maps ran %d times: none ran again", n)
	}
	// The maps that ran again read their input once more; the job's
	// counters count it once (they counted it twice before).
	if cs := j.Counters; cs == nil || cs.InputBytes != int64(len(fileA)+len(fileB)) || cs.InputRecords != 3 {
		t.Fatalf("counters %+v, want %d input bytes in 3 records", cs, len(fileA)+len(fileB))
	}
	// Both outputs went: the reduce that found them gone names both, and
	// both maps run again at once (one reduce attempt lost each before).
	lost := 0
	for _, a := range history(t, c, j.ID) {
		if a.LostMap > 0 {
			lost++
			if !strings.Contains(a.Error, "map tasks 0 and 1, whose outputs are lost, run again") || !slices.Equal(a.LostMaps, []int{0, 1}) {
				t.Fatalf("the lost outputs' attempt says %q, lost_maps %v", a.Error, a.LostMaps)
			}
		}
	}
	if lost != 1 {
		t.Fatalf("%d reduce attempts in the history say map outputs were lost, want 1", lost)
	}
	awaitEmptyQueue(t, s, 2*time.Second, "the job succeeded")
}

// A store that loses map outputs again and again fails the job after
// job.MaxReopened runs of lost maps (it has fewer map tasks), with a
// message that says so, not an endless loop.
func TestMapOutputsLostForGoodFailTheJob(t *testing.T) {
	t.Parallel()
	var s *natsx.Store
	k, _, _ := countKind("forgetful", nil, func(ctx context.Context, _ []byte) error {
		deleteShuffle(ctx, s) // every reduce: the next one finds its inputs gone
		return nil
	})
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.Workers = 1
	})
	s = store(t, b)
	b.client().PutFile(t, "in", "a.txt", []byte("alpha beta gamma delta\nepsilon zeta eta theta\n"))
	j := b.client().SubmitSpec(t, client.Spec{Kind: "forgetful", Input: []string{"in"}, Partitions: 2, Reducers: 4})
	j = b.await(t, j.ID, terminal)
	// Each loss takes both maps' outputs: 2 made again, then 2 more
	// would pass job.MaxReopened (3).
	if j.State != client.Failed || !strings.Contains(j.Error, "missing") || !strings.Contains(j.Error, "not retried") ||
		!strings.Contains(j.Error, "made again 2 times") {
		t.Fatalf("a job whose map outputs vanish at every reduce: %s", apitest.Describe(j))
	}
	awaitEmptyQueue(t, s, 2*time.Second, "the job failed")
}

// deleteShuffle deletes every map output in the store.
func deleteShuffle(ctx context.Context, s *natsx.Store) {
	names, err := s.Shuffle.List(ctx)
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		_ = s.Shuffle.Delete(ctx, n.Name)
	}
}

// Idempotency-Key: the same key answers the first submit's job, 200
// instead of 202, even when the submits race; another key makes another
// job.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client()
	body := `{"kind":"noop","partitions":2}`
	first := c.Do(t, "POST", "/api/v1/jobs", body, "Idempotency-Key", "order-17")
	if first.Status != http.StatusAccepted {
		t.Fatalf("first submit: %d %s", first.Status, first.Body)
	}
	var j1, j2, j3 client.Job
	first.JSON(t, &j1)
	again := c.Do(t, "POST", "/api/v1/jobs", body, "Idempotency-Key", "order-17")
	again.JSON(t, &j2)
	if again.Status != http.StatusOK || j2.ID != j1.ID {
		t.Fatalf("same key: %d, job %s; want 200 and job %s", again.Status, j2.ID, j1.ID)
	}
	if h, h2 := first.Header.Get("Idempotent-Replayed"), again.Header.Get("Idempotent-Replayed"); h != "" || h2 != "true" {
		t.Fatalf("Idempotent-Replayed of a submit and its retry: %q, %q; want none, then true", h, h2)
	}
	other := c.Do(t, "POST", "/api/v1/jobs", body, "Idempotency-Key", "order-18")
	other.JSON(t, &j3)
	if other.Status != http.StatusAccepted || j3.ID == j1.ID {
		t.Fatalf("another key: %d, job %s", other.Status, j3.ID)
	}
	long := c.Do(t, "POST", "/api/v1/jobs", body, "Idempotency-Key", strings.Repeat("k", 300))
	if long.Status != http.StatusBadRequest || !strings.Contains(string(long.Body), "Idempotency-Key") {
		t.Fatalf("a 300-byte key: %d %s", long.Status, long.Body)
	}

	// Eight clients race with one key: one job.
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			r := c.Do(t, "POST", "/api/v1/jobs", body, "Idempotency-Key", "race")
			var j client.Job
			r.JSON(t, &j)
			ids[i] = fmt.Sprint(r.Status, " ", j.ID)
		})
	}
	wg.Wait()
	created := 0
	for _, s := range ids {
		if strings.HasPrefix(s, "202 ") {
			created++
		}
		if strings.Fields(s)[1] != strings.Fields(ids[0])[1] {
			t.Fatalf("racing submits with one key got different jobs: %v", ids)
		}
	}
	if created != 1 {
		t.Fatalf("racing submits with one key: %v; want one 202", ids)
	}
}

// A submit whose tasks the store refuses answers 503 and leaves nothing:
// no job, no task; the next submit works.
func TestFailedSubmitLeavesNoJob(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Workers = 0 })
	s := store(t, b)
	ctx := apitest.Context(t)
	info, err := s.Tasks.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The queue takes two tasks more, then refuses.
	cfg := info.Config
	cfg.MaxMsgs, cfg.Discard = int64(info.State.Msgs)+2, jetstream.DiscardNew
	if _, err := s.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r := b.do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":5}`)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "try again") {
		t.Fatalf("a submit the queue refuses: %d %s", r.Status, r.Body)
	}
	var list struct{ Jobs []client.Job }
	b.do(t, "GET", "/api/v1/jobs", "").JSON(t, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("a submit answered 503 left a job: %+v", list.Jobs)
	}
	// What it stored is withdrawn just after the answer; the workers are
	// off, so nothing of it ran meanwhile.
	eventually(t, 10*time.Second, "the refused submit's tasks to be withdrawn", func() bool {
		msgs, err := taskMessages(ctx, s)
		return err == nil && msgs == 0
	})
	cfg.MaxMsgs = -1
	if _, err := s.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if r = b.do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":5}`); r.Status != http.StatusAccepted {
		t.Fatalf("the next submit: %d %s", r.Status, r.Body)
	}
	var j client.Job
	_ = json.Unmarshal(r.Body, &j)
	if got := b.job(t, j.ID); got.Partitions != 5 {
		t.Fatalf("job after the store recovered: %+v", got)
	}
}

// A failure that no attempt can mend fails its job at its first run, not
// after --max-attempts: a map that wraps job.ErrSkipRetry (the public
// mapreduce.SkipRetry), and an input line over dataset.MaxLine.
func TestUnretriedFailures(t *testing.T) {
	t.Parallel()
	k, maps, _ := countKind("picky", func(_ context.Context, rec job.Record) error {
		if bytes.Contains(rec.Text, []byte("{")) {
			return fmt.Errorf("line %d is JSON, which this kind does not read: %w", rec.Line, job.ErrSkipRetry)
		}
		return nil
	}, nil)
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(k)
		c.Workers = 1
		c.MaxAttempts = 3
		c.RetryBackoff = time.Millisecond
	})
	c := b.client()
	c.PutFile(t, "picky", "a.txt", []byte("alpha beta\n{\"gamma\": 1}\n"))
	j := b.await(t, c.SubmitSpec(t, client.Spec{Kind: "picky", Input: []string{"picky"}, Partitions: 1, Reducers: 1}).ID, terminal)
	if j.State != client.Failed || !strings.Contains(j.Error, "line 2 is JSON") || !strings.Contains(j.Error, "not retried") || maps.Load() != 1 {
		t.Fatalf("a map that asked not to be retried ran %d times: %s", maps.Load(), apitest.Describe(j))
	}
	if h := history(t, c, j.ID); len(h) != 1 || !h[0].Unretried || h[0].State != "failed" {
		t.Fatalf("its history: %+v", h)
	}

	long := append(bytes.Repeat([]byte("word "), dataset.MaxLine/5+1<<18), '\n')
	c.PutFile(t, "long", "one-line.txt", long)
	j = b.await(t, c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"long"}, Partitions: 1, Reducers: 1}).ID, terminal)
	if j.State != client.Failed || !strings.Contains(j.Error, "line longer than") || !strings.Contains(j.Error, "put newlines in the file") || !strings.Contains(j.Error, "not retried") {
		t.Fatalf("a job over a line longer than %d bytes: %s", dataset.MaxLine, apitest.Describe(j))
	}
	if h := history(t, c, j.ID); len(h) != 1 {
		t.Fatalf("a line too long was read %d times: %+v", len(h), h)
	}
}
