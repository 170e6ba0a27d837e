package app_test

import (
	"context"
	"iter"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/natsx"
	mrstore "github.com/mrcluster/mrcluster/internal/store"
	"github.com/nats-io/nats.go/jetstream"
)

// With one worker held by a task, jobs of priorities 1 to 4 submitted in
// that order (twice) start highest first once it is free, each priority in
// its order; a priority out of 1..4 is a 400 naming the field.
func TestPriorityOrderThroughTheQueue(t *testing.T) {
	t.Parallel()
	hold, release := held(nil)
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers = testKinds(hold), 1 })
	c := b.client().API()
	ctx := apitest.Context(t)
	for _, bad := range []string{`{"kind":"noop","partitions":1,"priority":5}`, `{"kind":"noop","partitions":1,"priority":"high"}`, `{"kind":"noop","partitions":1,"priority":0}`} {
		if r := b.do(t, "POST", "/api/v1/jobs", bad); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "priority must be an integer from 1 (low) to 4 (high)") {
			t.Errorf("%s: %d %s", bad, r.Status, r.Body)
		}
	}

	held := b.submit(t, "hold", 1)
	b.await(t, held.ID, func(j client.Job) bool { return j.Tasks.Running == 1 })
	var ids []string
	prio := map[string]int{}
	order := map[string]int{} // submit order: ids of one millisecond do not sort by it
	for range 2 {
		for p := 1; p <= 4; p++ {
			j, err := c.Submit(ctx, client.Spec{Kind: "noop", Partitions: 1, Priority: p})
			if err != nil {
				t.Fatal(err)
			}
			if j.Priority != p {
				t.Fatalf("job of priority %d shows %d", p, j.Priority)
			}
			order[j.ID] = len(ids)
			ids = append(ids, j.ID)
			prio[j.ID] = p
		}
	}
	close(release)
	type start struct {
		id string
		at int64
	}
	var starts []start
	for _, id := range ids {
		b.await(t, id, terminal)
		tasks, err := c.Tasks(ctx, id)
		if err != nil || len(tasks) != 1 {
			t.Fatalf("tasks of %s: %+v %v", id, tasks, err)
		}
		starts = append(starts, start{id, tasks[0].StartedAt.UnixNano()})
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].at < starts[j].at })
	var prios []int
	for _, s := range starts {
		prios = append(prios, prio[s.id])
	}
	for i := 1; i < len(prios); i++ {
		if prios[i] > prios[i-1] {
			t.Fatalf("priorities started in the order %v; want highest first", prios)
		}
	}
	// Within a priority, the older job first.
	for i := 1; i < len(starts); i++ {
		if prio[starts[i].id] == prio[starts[i-1].id] && order[starts[i].id] < order[starts[i-1].id] {
			t.Fatalf("two jobs of priority %d started newest first", prio[starts[i].id])
		}
	}
}

// A job's later phase goes before the jobs submitted after it: with one
// worker, a word count's reduce task, queued once its map is done, starts
// before the tasks of a job submitted while the map ran. It used to wait
// behind all of them (a word count of a second took 16 s behind a few
// jobs of sleeps); the MapReduce paper and Hadoop's FIFO run the older
// job's tasks first.
func TestALaterPhaseGoesBeforeNewerJobs(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	gate := make(chan struct{})
	words := job.DataKind{
		Name: "gatedwc",
		Map: func(ctx context.Context, rec job.Record, emit job.Emit) error {
			select {
			case started <- struct{}{}:
			default:
			}
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
			// A map of at least 100 ms: a pool whose tasks take less than
			// its fetch budget (20 ms) fetches several at once, and holds
			// them whatever their lane; one of slower tasks fetches one per
			// idle worker, the shape this test is about.
			time.Sleep(100 * time.Millisecond)
			for _, w := range strings.Fields(string(rec.Text)) {
				emit([]byte(w), []byte("1"))
			}
			return nil
		},
		Reduce: func(_ context.Context, _ []byte, values iter.Seq[[]byte]) ([]byte, error) {
			n := 0
			for range values {
				n++
			}
			return []byte(strconv.Itoa(n)), nil
		},
	}
	hold, release := held(nil)
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers = testKinds(words.Kind(), hold), 1 })
	ctx := apitest.Context(t)
	c := b.client().API()
	b.upload(t, "lines", []kinds.Doc{{Name: "a.txt", Data: []byte("to be or not to be\n")}})
	older := b.client().SubmitSpec(t, client.Spec{Kind: "gatedwc", Input: []string{"lines"}, Partitions: 1, Reducers: 1})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the word count's map never started")
	}
	newer := b.submit(t, "hold", 3)
	close(gate)
	// The reduce task is in the queue (the store's own messages, not the
	// job's record), or it ran before the newer job took the worker.
	st := store(t, b)
	for {
		if j := b.job(t, older.ID); j.State.Terminal() {
			break
		}
		info, err := st.Tasks.Info(ctx, jetstream.WithSubjectFilter(natsx.TaskSubject+">"))
		if err != nil {
			t.Fatal(err)
		}
		queued := false // the reduce task, not the map's message, unacked for a moment after its result
		for subject := range info.State.Subjects {
			if !strings.HasSuffix(subject, "."+older.ID) {
				continue
			}
			m, err := st.Tasks.GetLastMsgForSubject(ctx, subject)
			if err != nil {
				continue // acked meanwhile
			}
			task, err := mrstore.DecodeTask(m.Data)
			queued = queued || err == nil && task.Phase == job.PhaseReduce
		}
		if queued {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the word count's reduce task was never queued: %s", apitest.Describe(b.job(t, older.ID)))
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(release)
	if j := b.await(t, older.ID, terminal); j.State != client.Succeeded {
		t.Fatalf("word count: %s", apitest.Describe(j))
	}
	if out := b.client().Output(t, older.ID); !strings.Contains(out, "be 2") || !strings.Contains(out, "to 2") {
		t.Fatalf("word count's output: %q", out)
	}
	b.await(t, newer.ID, terminal)
	first := func(id string, phase string) time.Time {
		tasks, err := c.Tasks(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		for _, a := range tasks {
			if a.Phase == phase && (at.IsZero() || a.StartedAt.Before(at)) {
				at = a.StartedAt
			}
		}
		return at
	}
	var starts []time.Time
	tasks, err := c.Tasks(ctx, newer.ID)
	if err != nil || len(tasks) != 3 {
		t.Fatalf("the newer job's tasks: %+v, %v", tasks, err)
	}
	for _, a := range tasks {
		starts = append(starts, a.StartedAt)
	}
	slices.SortFunc(starts, time.Time.Compare)
	// The newer job's first task may have taken the worker as the map
	// ended, before the reduce task was queued; the next may not.
	if reduce := first(older.ID, "reduce"); !reduce.Before(starts[1]) {
		t.Fatalf("the older job's reduce started at %s, after the newer job's tasks (%v)", reduce.Format(time.StampMicro), starts)
	}
}
