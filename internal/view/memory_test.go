package view

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// recount computes the queue's totals the slow way, from every record and
// every worker: what the counters kept as things change must equal.
func recount(v *View) (queued, running int, unqueued int, counts map[job.State]int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	busy := map[string]int{}
	for _, w := range v.workers {
		if w.status.Busy {
			busy[w.status.JobID]++
		}
	}
	counts = map[job.State]int{}
	for _, en := range v.byID {
		state := v.codes.state(en.state)
		counts[state]++
		j := en.j
		if state.Terminal() || state == job.Scheduled {
			continue // a scheduled job waits for its time, not in the queue
		}
		if !j.Enqueued && !j.Held { // a held job's tasks are out of the queue on purpose
			unqueued++
		}
		left := j.Partitions - j.Done - j.Failed
		if j.ReadsData() && j.Phase == job.PhaseReduce {
			left += j.Reducers - j.ReduceDone
		}
		r := min(busy[j.ID], left)
		running += r
		queued += left - r
	}
	return queued, running, unqueued, counts
}

// queueRecount lists the jobs with waiting tasks, oldest first, from every
// job the view holds.
func queueRecount(v *View) []QueuedJob {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := []QueuedJob{}
	for _, en := range v.sorted {
		if en.gone || en.state.terminal() || en.state == codeScheduled {
			continue
		}
		j := v.active[en.id].j
		if left, running := v.share(j); left > running {
			out = append(out, QueuedJob{Job: j.ID, Kind: j.Kind, Waiting: left - running})
		}
	}
	return out
}

func record(t *testing.T, j *job.Job) *store.Entry {
	t.Helper()
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	return &store.Entry{Key: j.ID, Value: data}
}

func status(t *testing.T, key string, s job.WorkerStatus) *store.Entry {
	t.Helper()
	s.Key = key
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return &store.Entry{Key: key, Value: data}
}

// The queue depth, running count, unqueued list and state counts are kept
// as records and workers change; after every step of a random history of
// submits, results, phase changes, cancels, deletes and workers taking,
// finishing and leaving tasks, they equal a recount.
func TestCountersEqualARecount(t *testing.T) {
	t.Parallel()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler), Recent: 5})
	v.loaded()
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	var jobs []*job.Job
	workers := []string{"w0", "w1", "w2", "w3", "w4"}
	for step := range 3000 {
		switch op := rng.IntN(10); {
		case op < 2 || len(jobs) == 0:
			spec := job.Spec{Kind: "noop", Partitions: 1 + rng.IntN(6)}
			if rng.IntN(5) == 0 {
				spec.RunAt = now.Add(time.Hour)
			}
			kind := []string{"noop", "sleep"}[rng.IntN(2)]
			spec.Kind = kind
			// Ids sort by their time: now and then one older than the last
			// (another server's submit seen late).
			j := job.New(job.NewID(kind, now.Add(time.Duration(step-rng.IntN(50))*time.Millisecond)), spec, now)
			if rng.IntN(2) == 0 {
				j.Reducers = 1 + rng.IntN(3)
				j.ReduceCommits = make([]string, j.Reducers)
			}
			j.Enqueued = rng.IntN(4) > 0
			jobs = append(jobs, j)
			v.applyJobs([]*store.Entry{record(t, j)}, false)
		case op < 5:
			j := jobs[rng.IntN(len(jobs))]
			if j.State.Terminal() {
				continue
			}
			j = j.Clone()
			switch {
			case j.State == job.Scheduled:
				j.Due(now)
			case j.Phase == job.PhaseMap && j.Done < j.Partitions:
				j.Done++
				j.State = job.Running
				switch {
				case j.Done < j.Partitions:
				case j.ReadsData():
					j.Phase = job.PhaseReduce
				default:
					at := now
					j.State, j.FinishedAt = job.Succeeded, &at
				}
			case j.ReadsData() && j.Phase == job.PhaseReduce && j.ReduceDone < j.Reducers:
				j.ReduceDone++
				if j.ReduceDone == j.Reducers {
					at := now
					j.State, j.FinishedAt = job.Succeeded, &at
				}
			}
			j.Enqueued = rng.IntN(4) > 0
			j.Held = rng.IntN(8) == 0
			j.Lane = ""
			if rng.IntN(8) == 0 {
				j.Lane = j.Kind
			}
			jobs = replace(jobs, j)
			v.applyJobs([]*store.Entry{record(t, j)}, false)
		case op < 6:
			j := jobs[rng.IntN(len(jobs))].Clone()
			err := j.Cancel(now)
			if err != nil && rng.IntN(2) == 0 {
				err = j.Retry(now) // a canceled or failed job queued again
			}
			if err == nil {
				jobs = replace(jobs, j)
				v.applyJobs([]*store.Entry{record(t, j)}, false)
			}
		case op < 7:
			k := rng.IntN(len(jobs))
			v.applyJobs([]*store.Entry{&store.Entry{Key: jobs[k].ID, Deleted: true}}, false)
			jobs = append(jobs[:k], jobs[k+1:]...)
		case op < 9:
			w := workers[rng.IntN(len(workers))]
			s := job.WorkerStatus{}
			if rng.IntN(3) > 0 && len(jobs) > 0 {
				s.Busy, s.JobID = true, jobs[rng.IntN(len(jobs))].ID
			}
			v.applyWorker(status(t, w, s), false)
		default:
			v.removeWorker(workers[rng.IntN(len(workers))])
		}
		q, r, u, counts := recount(v)
		gq, gr := v.TaskTotals()
		if gq != q || gr != r || v.QueueDepth() != q {
			t.Fatalf("step %d: counters say %d queued, %d running; a recount says %d, %d", step, gq, gr, q, r)
		}
		if n := len(v.Unqueued()); n != u {
			t.Fatalf("step %d: %d unqueued jobs, a recount says %d", step, n, u)
		}
		got := v.Counts()
		for s, n := range counts {
			if got[s] != n {
				t.Fatalf("step %d: counts = %v, a recount says %v", step, got, counts)
			}
		}
		want := queueRecount(v)
		all, more, depth := v.Queue(len(want) + 1)
		if depth != q {
			t.Fatalf("step %d: queue depth %d, a recount says %d", step, depth, q)
		}
		if more || !slices.Equal(all, want) {
			t.Fatalf("step %d: queue %v (more %v), a recount of every job says %v", step, all, more, want)
		}
		if step%10 == 0 {
			listsEqualARecount(t, v, step)
		}
		if len(want) > 3 {
			first, more, _ := v.Queue(3)
			if !more || !slices.Equal(first, want[:3]) {
				t.Fatalf("step %d: first 3 of the queue %v (more %v), a recount says %v", step, first, more, want[:3])
			}
		}
		// What Holding answers from its counts equals a look at every job,
		// and its counts equal a recount.
		controlled, kinds := 0, map[string]int{}
		for _, en := range v.byID {
			if !en.state.terminal() {
				kinds[en.j.Kind]++
				if en.j.Held || en.j.Lane != "" {
					controlled++
				}
			}
		}
		if v.controlled != controlled || !maps.Equal(v.activeKinds, kinds) {
			t.Fatalf("step %d: %d jobs held or laned, unfinished by kind %v; a recount says %d, %v", step, v.controlled, v.activeKinds, controlled, kinds)
		}
		for _, c := range []struct{ paused, laned string }{{"", ""}, {"noop", ""}, {"", "sleep"}} {
			paused := func(kind string) bool { return kind == c.paused }
			laneOf := func(kind string) string {
				if kind == c.laned {
					return kind
				}
				return ""
			}
			h, r, l := v.Holding(paused, laneOf)
			wh, wr, wl := holdingRecount(v, paused, laneOf)
			if !sameSet(h, wh) || !sameSet(r, wr) || !sameSet(l, wl) {
				t.Fatalf("step %d, paused %q, laned %q: Holding says hold %v release %v relane %v; a look at every job says %v %v %v",
					step, c.paused, c.laned, h, r, l, wh, wr, wl)
			}
		}
	}
	if len(v.recent) > 5 {
		t.Fatalf("%d finished records kept, want at most 5", len(v.recent))
	}
}

// listsEqualARecount checks that the pages of the unfinished jobs by state
// (of a kind, and after a cursor of any job) list what a walk of every job
// does, newest first. A page of queued or running jobs walks the queue's
// order, a page of a state no job is in walks nothing.
func listsEqualARecount(t *testing.T, v *View, step int) {
	t.Helper()
	ctx := context.Background()
	v.mu.RLock()
	all := slices.Clone(v.sorted)
	v.mu.RUnlock()
	for _, state := range []job.State{job.Queued, job.Running, job.Scheduled, "nosuchstate"} {
		for _, kind := range []string{"", "sleep"} {
			var want []string
			for _, en := range slices.Backward(all) {
				if !en.gone && v.codes.state(en.state) == state && (kind == "" || job.IDKind(en.id) == kind) {
					want = append(want, en.id)
				}
			}
			var got []string
			for cursor := ""; ; {
				jobs, next, err := v.List(ctx, Filter{State: state, Kind: kind}, 3, cursor)
				if err != nil {
					t.Fatalf("step %d: a page of %s jobs of kind %q after %q: %v", step, state, kind, cursor, err)
				}
				for _, j := range jobs {
					got = append(got, j.ID)
				}
				if next == "" {
					break
				}
				cursor = next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: the pages of %s jobs of kind %q list %v; a walk of every job says %v", step, state, kind, got, want)
			}
			// A page after a job of any state starts after that job.
			if len(all) > 0 {
				at := all[len(all)/2]
				if at.gone {
					continue
				}
				var rest []string
				for _, en := range slices.Backward(all) {
					if slices.Contains(want, en.id) && less(en, at) {
						rest = append(rest, en.id)
					}
				}
				jobs, _, err := v.List(ctx, Filter{State: state, Kind: kind}, len(want)+1, at.id)
				if err != nil {
					t.Fatalf("step %d: a page of %s jobs after %s: %v", step, state, at.id, err)
				}
				got = got[:0]
				for _, j := range jobs {
					got = append(got, j.ID)
				}
				if !slices.Equal(got, rest) {
					t.Fatalf("step %d: the page of %s jobs of kind %q after %s lists %v; a walk of every job says %v", step, state, kind, at.id, got, rest)
				}
			}
		}
	}
}

// holdingRecount is Holding by a look at every unfinished job.
func holdingRecount(v *View, paused func(string) bool, laneOf func(string) string) (hold, release, relane []string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, en := range v.byID {
		j := en.j
		if en.state.terminal() || en.state == codeScheduled {
			continue
		}
		switch p := paused(j.Kind); {
		case p && !j.Held:
			hold = append(hold, j.ID)
		case !p && j.Held:
			release = append(release, j.ID)
		case j.Enqueued && !j.Held && j.Lane != laneOf(j.Kind):
			relane = append(relane, j.ID)
		}
	}
	return hold, release, relane
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func replace(jobs []*job.Job, j *job.Job) []*job.Job {
	for i := range jobs {
		if jobs[i].ID == j.ID {
			jobs[i] = j
		}
	}
	return jobs
}

// A view keeps the records of unfinished jobs and the newest finished
// ones; the others are read from the store for a page of the list, and
// every job is still listed, newest first, in pages, after a start that
// read them in the store's order (not creation order).
func TestOlderFinishedJobsAreReadFromTheStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := memstore.New(memstore.Config{})
	now := time.Now()
	const n = 300
	ids := make([]string, n)
	for i := range n {
		// Created in an order the store's does not follow.
		created := now.Add(time.Duration((i*7919)%n) * time.Millisecond)
		j := job.New(job.NewID("noop", created), job.Spec{Kind: "noop", Partitions: 1}, created)
		if i%10 != 0 {
			j.Apply(job.TaskResult{Partition: 0, Value: int64(i), StartedAt: now, FinishedAt: now}, job.SumReduce)
		}
		if _, err := st.Jobs.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		ids[(i*7919)%n] = j.ID
	}
	v := New(Config{Store: st, Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler), Recent: 20})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(ctx) })
	<-v.Ready()

	held := 0
	for _, id := range ids {
		if _, ok := v.Get(id); ok {
			held++
		}
	}
	if held != n/10+20 {
		t.Fatalf("the view holds %d records; want the %d unfinished and the 20 newest finished", held, n/10)
	}
	// The finished ones held are the last stored, read whole (the others
	// were only skimmed at start).
	for i, kept := n-1, 0; kept < 20; i-- {
		if i%10 == 0 {
			continue
		}
		j, ok := v.Get(ids[(i*7919)%n])
		if !ok || j.Kind != "noop" || j.State != client.Succeeded || j.Result == nil || j.Result.Sum != int64(i) {
			t.Fatalf("the job stored %d from last: held %v, %+v; want its whole record", n-i, ok, j)
		}
		kept++
	}
	if c := v.Counts(); c[job.Succeeded] != n-n/10 || c[job.Queued] != n/10 {
		t.Fatalf("counts = %v", c)
	}
	var listed []string
	cursor := ""
	for page := 0; ; page++ {
		jobs, next, err := v.List(ctx, Filter{}, 32, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Kind != "noop" || j.State == "" {
				t.Fatalf("page %d lists %+v: not read whole", page, j)
			}
			listed = append(listed, j.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(listed) != n {
		t.Fatalf("listed %d jobs, want %d", len(listed), n)
	}
	for i, id := range listed {
		if want := ids[n-1-i]; id != want {
			t.Fatalf("listed[%d] = %s, want %s (newest first)", i, id, want)
		}
	}

	// Deletes of records the view does not hold, then a page across them.
	for _, id := range ids[:n/2] {
		if err := st.Jobs.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	v.AwaitGone(ctx, ids[n/2-1])
	jobs, _, err := v.List(ctx, Filter{}, n, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != n-n/2 {
		t.Fatalf("after deleting %d of %d jobs the list holds %d", n/2, n, len(jobs))
	}
	finished := v.Counts()[job.Succeeded]
	if got := v.Expired(now.Add(time.Hour)); len(got) != finished || finished == 0 {
		t.Fatalf("expired = %d jobs, want the %d finished ones left", len(got), finished)
	}
	if got := v.Expired(now.Add(-time.Hour)); len(got) != 0 {
		t.Fatalf("%d jobs expired an hour before they finished", len(got))
	}
}

// The queue's order holds through a start's read of records in any order,
// and through many jobs finishing out of order (its stale entries are
// dropped once they are half of it).
func TestQueueOrderAtScale(t *testing.T) {
	t.Parallel()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler), Recent: 5})
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Now()
	jobs := make([]*job.Job, 5000)
	for i := range jobs {
		jobs[i] = job.New(job.NewID("noop", now.Add(time.Duration(i)*time.Millisecond)), job.Spec{Kind: "noop", Partitions: 1}, now)
		jobs[i].Enqueued = true
	}
	var batch []*store.Entry
	for _, k := range rng.Perm(len(jobs)) { // stored in no order of age
		batch = append(batch, record(t, jobs[k]))
	}
	v.applyJobs(batch, true)
	v.loaded()
	check := func(when string) {
		t.Helper()
		want := queueRecount(v)
		got, more, _ := v.Queue(len(want))
		if more || !slices.Equal(got, want) {
			t.Fatalf("%s: queue of %d jobs (more %v) differs from a recount of %d", when, len(got), more, len(want))
		}
		if first, _, _ := v.Queue(10); len(want) >= 10 && !slices.Equal(first, want[:10]) {
			t.Fatalf("%s: first 10 %v, want %v", when, first, want[:10])
		}
	}
	check("after the start")
	// Every job but one in seven finishes, in random order.
	for _, k := range rng.Perm(len(jobs)) {
		if k%7 == 0 {
			continue
		}
		j := jobs[k].Clone()
		at := now
		j.Done, j.State, j.FinishedAt = 1, job.Succeeded, &at
		v.applyJobs([]*store.Entry{record(t, j)}, false)
	}
	check("after most finished")
	v.mu.RLock()
	n, stale := len(v.order), v.orderStale
	v.mu.RUnlock()
	if n > 2*(len(jobs)/7+1)+1024 || stale > n/2+1 {
		t.Fatalf("the queue's order holds %d entries, %d stale, for %d unfinished jobs", n, stale, len(jobs)/7+1)
	}
}

// A page's cursor may name a job deleted since the page was read, as a
// script that deletes what it lists does: the next page starts where that
// job was, before and after the deleted entries are compacted away.
func TestCursorOfADeletedJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	v.loaded()
	now := time.Now()
	const n = 2100
	ids := make([]string, n) // oldest first
	for i := range n {
		created := now.Add(time.Duration(i) * time.Millisecond)
		j := job.New(job.NewID("noop", created), job.Spec{Kind: "noop", Partitions: 1}, created)
		ids[i] = j.ID
		v.applyJobs([]*store.Entry{record(t, j)}, false)
	}
	del := func(ids ...string) {
		for _, id := range ids {
			v.applyJobs([]*store.Entry{{Key: id, Deleted: true}}, false)
		}
	}
	page := func(cursor string) []string {
		t.Helper()
		jobs, _, err := v.List(ctx, Filter{}, 3, cursor)
		if err != nil {
			t.Fatalf("a page after %s: %v", cursor, err)
		}
		var out []string
		for _, j := range jobs {
			out = append(out, j.ID)
		}
		return out
	}
	first, _, err := v.List(ctx, Filter{}, 3, "")
	if err != nil || len(first) != 3 {
		t.Fatal(err)
	}
	cursor := first[2].ID // ids[n-3]
	del(first[0].ID, first[1].ID, cursor)
	if got, want := page(cursor), ids[n-6:n-3]; !slices.Equal(got, []string{want[2], want[1], want[0]}) {
		t.Fatalf("the page after a deleted cursor: %v; want %v, newest first", got, want)
	}
	// Over half of the entries deleted: they are compacted away.
	del(ids[:1100]...)
	if len(v.sorted) > n-1000 {
		t.Fatalf("%d entries, %d of them deleted: not compacted", len(v.sorted), v.gone)
	}
	if got, want := page(cursor), ids[n-6:n-3]; !slices.Equal(got, []string{want[2], want[1], want[0]}) {
		t.Fatalf("after the compaction, the page after a deleted cursor: %v; want %v, newest first", got, want)
	}
	// Deleted longer ago than the view remembers (past keepGone more
	// deletions): the cursor's id tells where its job was.
	v.mu.Lock()
	v.goneIDs, v.goneRing, v.goneNext = nil, nil, 0
	v.mu.Unlock()
	if v.Deleted(cursor) {
		t.Fatal("the view still remembers the cursor's job")
	}
	if got, want := page(cursor), ids[n-6:n-3]; !slices.Equal(got, []string{want[2], want[1], want[0]}) {
		t.Fatalf("the page after a cursor deleted and forgotten: %v; want %v, newest first", got, want)
	}
	if _, _, err := v.List(ctx, Filter{}, 3, "noop_nothere"); job.ErrorCode(err) != job.EInvalid {
		t.Fatalf("a cursor no job ever had: %v", err)
	}
}

// Jobs first seen already finished (a restart reading finished records, or
// a watcher that skipped a small job's queued revision) never were in the
// queue's order, and do not count as leaving it. A new entry's state once
// looked queued: each such job counted as a stale entry of the order, and
// after 1,024 of them the order's trim panicked, taking the server down in
// a burst of small jobs.
func TestJobsFirstSeenFinishedLeaveTheQueueOrderAlone(t *testing.T) {
	t.Parallel()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler), Recent: 5})
	now := time.Now()
	finished := func(i int) *store.Entry {
		j := job.New(job.NewID("noop", now.Add(time.Duration(i)*time.Millisecond)), job.Spec{Kind: "noop", Partitions: 1}, now)
		at := now
		j.Enqueued, j.Done, j.State, j.FinishedAt = true, 1, job.Succeeded, &at
		return record(t, j)
	}
	var batch []*store.Entry
	for i := range 3000 {
		batch = append(batch, finished(i))
	}
	v.applyJobs(batch, true) // read at start
	v.loaded()
	queued := job.New(job.NewID("noop", now.Add(time.Hour)), job.Spec{Kind: "noop", Partitions: 1}, now)
	queued.Enqueued = true
	v.applyJobs([]*store.Entry{record(t, queued)}, false)
	for i := range 3000 { // seen only once finished, one by one
		v.applyJobs([]*store.Entry{finished(3000 + i)}, false)
	}
	v.mu.RLock()
	n, stale := len(v.order), v.orderStale
	v.mu.RUnlock()
	if n != 1 || stale != 0 {
		t.Fatalf("the queue's order holds %d entries, %d of them stale; want the one queued job", n, stale)
	}
	if got, more, depth := v.Queue(10); len(got) != 1 || more || depth != 1 || got[0].Job != queued.ID {
		t.Fatalf("queue %+v (more %v, depth %d); want the one queued job", got, more, depth)
	}
}

// Deleted says yes for a job the view saw deleted, after its entry left:
// the coordinator drops a deleted job's late results at once instead of
// waiting a minute for its record (which held back the purge of the shared
// results messages).
func TestDeletedJobsAreKnownDeleted(t *testing.T) {
	t.Parallel()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	v.loaded()
	now := time.Now()
	j := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 1}, now)
	other := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 1}, now)
	v.applyJobs([]*store.Entry{record(t, j), record(t, other)}, false)
	if v.Deleted(j.ID) {
		t.Fatal("a live job is deleted")
	}
	v.applyJobs([]*store.Entry{{Key: j.ID, Deleted: true}}, false)
	if !v.Deleted(j.ID) || v.Deleted(other.ID) || v.Deleted("noop_never") {
		t.Fatalf("deleted: %v, %v, %v; want only the deleted job", v.Deleted(j.ID), v.Deleted(other.ID), v.Deleted("noop_never"))
	}
}

// Expired walks the jobs a chunk at a time, letting the view change
// between chunks: with chunks of three, jobs removed, compacted away and
// added between them, it names what a walk of the whole would, each once.
func TestExpiredWalksInChunksThroughChanges(t *testing.T) {
	defer func(n int) { walkChunk = n }(walkChunk)
	walkChunk = 3
	v := New(Config{Logger: slog.New(slog.DiscardHandler)})
	v.loading = false
	base := time.Now().Add(-time.Hour)
	at := func(min int) int64 { return base.Add(time.Duration(min) * time.Minute).UnixNano() }
	add := func(id string, created, finished int64, member bool) *entry {
		en := v.slab.entry(id, created)
		en.finished = finished
		en.set(bitMember, member)
		v.byID[id] = en
		v.insert(en)
		return en
	}
	cut := at(30)
	var want []string
	var plain []*entry
	for i := range 20 {
		id := job.NewID("noop", base.Add(time.Duration(i)*time.Minute))
		finished := at(i + 1)
		if i%4 == 3 {
			finished = 0 // still running
		}
		plain = append(plain, add(id, at(i), finished, false))
		if finished != 0 && finished < cut && i != 5 {
			want = append(want, id) // the 6th is removed below, mid-walk
		}
	}
	// A group whose members straddle chunks, ended before the cut: named
	// once, as the group; one whose last member ends after it: its
	// earlier member alone.
	whole := job.NewGroupID("noop", base.Add(2*time.Minute+time.Second))
	half := job.NewGroupID("noop", base.Add(7*time.Minute+time.Second))
	v.groups[whole] = groupInfo{members: 4, finished: at(9)}
	v.groups[half] = groupInfo{members: 2, finished: at(40)}
	for n := 1; n <= 4; n++ {
		add(job.MemberID(whole, n), at(2)+int64(time.Second), at(5+n), true)
	}
	add(job.MemberID(half, 1), at(7)+int64(time.Second), at(8), true)
	add(job.MemberID(half, 2), at(7)+int64(time.Second), at(40), true)
	want = append(want, whole, job.MemberID(half, 1))

	var got []string
	groups := map[string]bool{}
	var last *entry
	for round := 0; v.walkFrom(&last, v.expiredBy(cut, groups, &got)); round++ {
		switch round {
		case 1: // the 6th job deleted and compacted away before it is walked
			v.gone = 2000
			v.remove(plain[5])
		case 2: // a new job, created after the cut
			add(job.NewID("noop", time.Now()), time.Now().UnixNano(), 0, false)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("expired in chunks = %v\nwant %v", got, want)
	}
	if full := v.Expired(time.Unix(0, cut)); len(full) != len(want) {
		t.Fatalf("Expired = %d jobs, want %d", len(full), len(want))
	}
}

// OldestOfKind finds the oldest job of a kind, a chunk at a time, looking
// no further than its cut; a view still reading the stored jobs says any
// may be there.
func TestOldestOfKind(t *testing.T) {
	defer func(n int) { walkChunk = n }(walkChunk)
	walkChunk = 3
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	if made, found := v.OldestOfKind("sleep", base.Add(time.Hour)); !found || !made.IsZero() {
		t.Fatalf("a view still loading: %v, %v; want found, the zero time", made, found)
	}
	v.loaded()
	for i := range 10 {
		kind := "noop"
		if i == 7 || i == 8 {
			kind = "sleep"
		}
		created := base.Add(time.Duration(i) * time.Minute)
		v.applyJobs([]*store.Entry{record(t, job.New(job.NewID(kind, created), job.Spec{Kind: kind, Partitions: 1}, created))}, false)
	}
	if made, found := v.OldestOfKind("sleep", base.Add(time.Hour)); !found || !made.Equal(base.Add(7*time.Minute)) {
		t.Fatalf("oldest sleep job: %v, %v; want made at %v", made, found, base.Add(7*time.Minute))
	}
	if made, found := v.OldestOfKind("sleep", base.Add(7*time.Minute)); found {
		t.Fatalf("oldest sleep job made before its first: %v; want none", made)
	}
	if _, found := v.OldestOfKind("wordcount", base.Add(time.Hour)); found {
		t.Fatal("a job of a kind with none found")
	}
	if !v.HasKind("sleep") || v.HasKind("wordcount") {
		t.Fatalf("HasKind: sleep %v, wordcount %v; want true, false", v.HasKind("sleep"), v.HasKind("wordcount"))
	}
}
