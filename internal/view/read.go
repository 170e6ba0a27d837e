package view

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Job is the API's representation of a job: the public client's type, so
// that what the server sends and what a Go program decodes cannot drift.
type Job = client.Job

// TaskCounts counts a job's tasks by state.
type TaskCounts = client.TaskCounts

// Resource returns the API representation of j.
func (v *View) Resource(j *job.Job) Job {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.resource(j)
}

// resource returns the API representation of j; v.mu must be held.
func (v *View) resource(j *job.Job) Job {
	c := TaskCounts{Total: j.Partitions, Done: j.Done, Failed: j.Failed}
	if j.ReadsData() {
		c.Total += j.Reducers
		c.Done += j.ReduceDone
	}
	switch {
	case j.State.Terminal():
	case j.Group != "":
		// A group's member: its one task runs once it has started.
		if j.State == job.Running {
			c.Running = 1
		} else {
			c.Queued = 1
		}
	default:
		left, running := v.share(j)
		c.Running = running
		c.Queued = left - running
	}
	out := Job{
		ID: j.ID, Kind: j.Kind, State: client.State(j.State), Partitions: j.Partitions, Params: j.Params,
		Input: j.Input, Reducers: j.Reducers, Phase: shownPhase(j), Counters: (*client.Counters)(j.Counters), Backups: j.Backups, RerunOf: j.RerunOf,
		ReduceInputBytes: j.ReduceInputBytes,
		Schedule:         j.Schedule, Tick: j.Tick, Retries: j.Epoch, Priority: job.ShownPriority(j.Priority), Paused: j.Held, MaxAttempts: j.MaxAttempts,
		Tasks: c, Result: (*client.Result)(j.Result), Error: j.Error,
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
	}
	if j.History != nil {
		out.History = make([]client.Step, len(j.History))
		for i, s := range j.History {
			out.History[i] = client.Step(s)
		}
	}
	for _, p := range j.Preview {
		out.Preview = append(out.Preview, p.Line)
	}
	if j.Timeout > 0 {
		out.Timeout = j.Timeout.String()
	}
	out.RunAt = j.RunAt
	if j.FinishedAt != nil && v.cfg.Retention > 0 {
		at := j.FinishedAt.Add(v.cfg.Retention)
		out.ExpiresAt = &at
	}
	return out
}

// shownStatus is a worker status as the API shows it: no phase for a task
// of a map-only job. v.mu is held.
func (v *View) shownStatus(s job.WorkerStatus) job.WorkerStatus {
	// The queue's name for the delivery, and the namespace of the
	// process id: for the pools alone.
	s.Lease, s.PIDNS = "", ""
	if j := v.job(s.JobID); j != nil && !j.ReadsData() {
		s.Phase = ""
	}
	if s.Member != "" {
		// A group's task: the job it runs, as the API shows it.
		s.JobID, s.Partition, s.Member, s.Phase = s.Member, 0, "", ""
	}
	return s
}

// shownPhase is the phase the API shows: a map-only job has none to show.
func shownPhase(j *job.Job) string {
	if !j.ReadsData() {
		return ""
	}
	return string(j.Phase)
}

// Get returns the job with the given id when the view holds its record:
// an unfinished or recently finished job. Others are read from the store.
func (v *View) Get(id string) (Job, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	j := v.job(id)
	if j == nil {
		return Job{}, false
	}
	return v.resource(j), true
}

// State returns the state of job id as the view last saw it, if it knows
// the job: a look at one entry, whether or not its record is held.
func (v *View) State(id string) (job.State, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	en, ok := v.byID[id]
	if !ok || en.gone {
		return v.groupState(id)
	}
	return v.codes.state(en.state), true
}

// Record returns the record of unfinished job id as the view holds it,
// and its revision in the store: the record the coordinator writes the
// job's next revision from when its own cache does not hold it (a backlog
// of more jobs than it caches), instead of reading it from the store. The
// record is shared: the caller changes a Clone. A revision the store has
// moved past since makes the caller's compare-and-set fail, and it reads
// the store then. ok is false for a finished job, or one the view does not
// hold.
func (v *View) Record(id string) (j *job.Job, rev uint64, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	u, ok := v.active[id]
	return u.j, u.rev, ok
}

// Finished returns the records of the recently finished jobs the view
// holds whole (the --recent-jobs newest) that finished within [from,
// until], oldest finish first. The records are shared: the caller must not
// change them.
func (v *View) Finished(from, until time.Time) []*job.Job {
	v.mu.RLock()
	defer v.mu.RUnlock()
	lo, hi := from.UnixNano(), until.UnixNano()
	var out []*job.Job
	for _, en := range v.recent {
		if en == nil || en.gone || en.j == nil || !en.j.State.Terminal() || en.finished < lo || en.finished > hi || en.j.Group != "" {
			continue // a group's member is stored in its group's record
		}
		out = append(out, en.j)
	}
	return out
}

// FinishedRecord returns the record of finished job id when the view
// holds it whole (a recently finished job), else nil. The record is
// shared: the caller must not change it.
func (v *View) FinishedRecord(id string) *job.Job {
	v.mu.RLock()
	defer v.mu.RUnlock()
	en := v.byID[id]
	if en == nil || en.gone || en.j == nil || !en.j.State.Terminal() || en.j.Group != "" {
		return nil
	}
	return en.j
}

// Deleted reports whether the view saw job id deleted (and still
// remembers it).
func (v *View) Deleted(id string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if en, ok := v.byID[id]; ok {
		return en.gone
	}
	// A removed entry leaves byID at once; the last keepGone deleted
	// jobs are remembered apart. (Looking in byID alone, this never said
	// yes: a deleted job's late results waited a minute for a record
	// that would not come, and held back the purge of shared results.)
	_, gone := v.goneIDs[id]
	return gone
}

// Filter selects the jobs List returns: those in State and of Kind (any
// when empty).
type Filter struct {
	State job.State
	Kind  string
}

// List returns up to limit jobs that f selects, newest first, starting
// after the job with id cursor (from the start when empty). next is the
// cursor of the following page, empty on the last. The records of older
// finished jobs, which the view does not hold, are read from the store.
func (v *View) List(ctx context.Context, f Filter, limit int, cursor string) (jobs []Job, next string, err error) {
	state := f.State
	jobs = []Job{}
	var missing []int  // indexes in jobs of records to read
	var members []bool // of those, the jobs of groups
	v.mu.RLock()
	var after *entry // the cursor's place: the page starts before it
	if cursor != "" {
		c, ok := v.byID[cursor]
		if created, gone := v.goneIDs[cursor]; !ok && gone {
			c, ok = &entry{id: cursor, created: created}, true // deleted since its page was read
		}
		if t, known := job.IDTime(cursor); !ok && known {
			// Deleted longer ago than the view remembers (retention
			// deleting the oldest jobs while a script pages through
			// them): its id tells when it was made, to the millisecond.
			// The page starts at that millisecond's end: jobs made in
			// the same one may come again, none is skipped.
			c, ok = &entry{id: cursor, created: t.UnixNano() + int64(time.Millisecond) - 1}, true
		}
		if !ok {
			v.mu.RUnlock()
			return nil, "", job.Errorf(job.EInvalid, "cursor %s is not a job id; pass the next_cursor of the previous page", job.Quote(cursor))
		}
		after = c
	}
	// The queued and running jobs are few among the finished ones a
	// retention keeps (a week's may be millions): a page of them walks
	// v.order, which lists them alone (stale entries aside), not every
	// job; a page of a state no job is in walks nothing.
	code, known := v.codes.lookup(state)
	list := v.sorted
	switch {
	case state == "" || v.loading:
	case !known || v.counts[state] == 0:
		list = nil
	case code == codeQueued || code == codeRunning:
		list = v.order
	}
	i := len(list) - 1
	if after != nil {
		i = sort.Search(len(list), func(k int) bool { return !less(list[k], after) }) - 1
	}
	for ; i >= 0; i-- {
		en := list[i]
		if en.gone || state != "" && en.state != code || f.Kind != "" && job.IDKind(en.id) != f.Kind {
			continue
		}
		if len(jobs) == limit {
			next = jobs[len(jobs)-1].ID
			break
		}
		if en.j == nil {
			missing = append(missing, len(jobs))
			members = append(members, en.member())
			jobs = append(jobs, Job{ID: en.id})
			continue
		}
		jobs = append(jobs, v.resource(en.j))
	}
	v.mu.RUnlock()
	// The records a page needs that the view no longer holds are read a
	// few at once: one after the other, a page of 50 took 100-200 ms
	// right after a restart.
	errs := make([]error, len(missing))
	sem := make(chan struct{}, listReads)
	var wg sync.WaitGroup
	groups := &store.GroupReads{Jobs: v.records()}
	for n, k := range missing {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			j, err := v.readJob(ctx, jobs[k].ID, members[n], groups)
			switch {
			case errors.Is(err, store.ErrNotFound):
				jobs[k].ID = "" // deleted since
			case err != nil:
				errs[n] = job.Unavailable("job store", fmt.Errorf("read job %s: %w", jobs[k].ID, err))
			default:
				jobs[k] = v.Resource(j)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, "", err
		}
	}
	jobs = slices.DeleteFunc(jobs, func(j Job) bool { return j.ID == "" })
	return jobs, next, nil
}

// listReads bounds the records one page of List reads from the store at
// once.
const listReads = 8

// Workers returns every live worker, ordered by key.
func (v *View) Workers() []job.WorkerStatus {
	return v.workerList(true)
}

// WorkerCount returns how many live workers the view knows.
func (v *View) WorkerCount() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.workers)
}

// Running returns every live worker's status as the worker wrote it, phase
// included for map-only jobs: what the coordinator's backups compare with
// jobs' phases.
func (v *View) Running() []job.WorkerStatus {
	return v.workerList(false)
}

func (v *View) workerList(shown bool) []job.WorkerStatus {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]job.WorkerStatus, 0, len(v.workers))
	for _, w := range v.workers {
		s := w.status
		if shown {
			s = v.shownStatus(s)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Index < out[j].Index
	})
	return out
}

// QueuedJob is one job's share of the queue.
type QueuedJob = client.QueuedJob

// QueueDepth returns how many tasks wait for a worker, from counters kept
// as jobs and workers change.
func (v *View) QueueDepth() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.left - v.running
}

// Unfinished returns how many jobs are scheduled, queued or running.
func (v *View) Unfinished() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.active)
}

// UnfinishedOf returns the unfinished jobs of kind (any, when "") in state
// (any unfinished one, when ""), oldest first.
func (v *View) UnfinishedOf(kind string, state job.State) []string {
	v.mu.RLock()
	type made struct {
		id string
		at time.Time
	}
	var out []made
	for id, u := range v.active {
		if kind != "" && u.j.Kind != kind {
			continue
		}
		if u.j.IsGroup() {
			// A group's unfinished members, each a job.
			for n, m := range u.j.Members {
				if s := m.Shown(); !m.Moved && !m.Deleted && !s.Terminal() && (state == "" || s == state) {
					out = append(out, made{job.MemberID(id, n+1), u.j.CreatedAt})
				}
			}
			continue
		}
		if state == "" || u.j.State == state {
			out = append(out, made{id, u.j.CreatedAt})
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b made) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	ids := make([]string, len(out))
	for i, m := range out {
		ids[i] = m.id
	}
	return ids
}

// Counts returns how many jobs are in each state.
func (v *View) Counts() map[job.State]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[job.State]int, len(v.counts))
	for s, n := range v.counts {
		if n > 0 {
			out[s] = n
		}
	}
	return out
}

// SeedWorker is a worker in the seed's contract.
type SeedWorker struct {
	Id    int
	Busy  bool
	JobId string
}

// SeedWorkers returns the workers in the seed's shape; Id is the worker's
// position in key order.
func (v *View) SeedWorkers() []SeedWorker {
	ws := v.Workers()
	out := make([]SeedWorker, len(ws))
	for i, w := range ws {
		out[i] = SeedWorker{Id: i, Busy: w.Busy, JobId: w.JobID}
		if w.Member != "" {
			out[i].JobId = w.Member
		}
	}
	return out
}

// SeedQueue returns the seed's queue: one job id per waiting task.
func (v *View) SeedQueue() []string {
	jobs, _, depth := v.Queue(math.MaxInt)
	out := make([]string, 0, depth)
	for _, q := range jobs {
		for range q.Waiting {
			out = append(out, q.Job)
		}
	}
	return out
}

// SeedResultsLimit bounds the seed's results map to the newest jobs, so a
// long history does not make every message huge.
const SeedResultsLimit = 200

// SeedResults returns the seed's results: job id → results of its finished
// partitions, in partition order, for the newest jobs whose records the
// view holds.
func (v *View) SeedResults() map[string][]int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string][]int64{}
	for i := len(v.sorted) - 1; i >= 0 && len(out) < SeedResultsLimit; i-- {
		if j := v.sorted[i].j; j != nil {
			out[j.ID] = j.DoneValues()
		}
	}
	return out
}

// TaskTotals returns how many tasks of unfinished jobs wait for a worker
// and how many run, from counters kept as jobs and workers change.
func (v *View) TaskTotals() (queued, running int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.left - v.running, v.running
}

// ReadingJob returns an unfinished job that reads dataset name, if any.
func (v *View) ReadingJob(name string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, u := range v.active {
		if slices.Contains(u.j.Input, name) {
			return u.j.ID, true
		}
	}
	return "", false
}

// UsingKind returns an unfinished job of kind name, if any.
func (v *View) UsingKind(name string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, u := range v.active {
		if u.j.Kind == name {
			return u.j.ID, true
		}
	}
	return "", false
}

// HasKind reports whether the store holds a job of kind name, finished or
// not: an uploaded kind's module writes its jobs' outputs, and is kept
// while they are. It walks the jobs oldest first, a chunk at a time
// (OldestOfKind: a view still reading the stored jobs says yes); until
// 2026-12-07 it walked them newest first under one hold of the lock.
func (v *View) HasKind(name string) bool {
	_, found := v.OldestOfKind(name, time.Unix(0, math.MaxInt64))
	return found
}

// Undone returns the unfinished jobs that have tasks to run, each with
// the number of its tasks not done (waiting or running) in its phase.
func (v *View) Undone() map[string]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[string]int)
	for id, u := range v.active {
		if left, _ := v.share(u.j); left > 0 {
			out[id] = left
		}
	}
	return out
}

// Unqueued returns the unfinished jobs whose tasks are not all known to be
// queued: a submit or a phase change in progress, or interrupted.
func (v *View) Unqueued() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, len(v.unqueued))
	for id := range v.unqueued {
		out = append(out, id)
	}
	return out
}

// Holding returns the unfinished jobs whose tasks are to be taken out of
// the queue, as their kind is paused (hold); the held ones whose kind is
// no longer paused (release); and those queued in another lane than their
// kind's now (relane: a concurrency limit set or removed). Scheduled jobs
// wait for their time first. Every server asks four times a second: with
// no job held or laned and no kind of an unfinished job paused or limited
// it answers from counts, without a look at each job.
func (v *View) Holding(paused func(kind string) bool, laneOf func(kind string) string) (hold, release, relane []string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.controlled == 0 && !v.anyKind(func(kind string) bool { return paused(kind) || laneOf(kind) != "" }) {
		return nil, nil, nil // nothing held or laned, no kind paused or limited: no job to look at
	}
	for id, u := range v.active {
		j := u.j
		switch p := paused(j.Kind); {
		case j.State == job.Scheduled:
		case p && !j.Held:
			hold = append(hold, id)
		case !p && j.Held:
			release = append(release, id)
		case j.Enqueued && !j.Held && j.Lane != laneOf(j.Kind):
			relane = append(relane, id)
		}
	}
	return hold, release, relane
}

// anyKind reports whether fn holds for a kind of an unfinished job.
// v.mu must be held.
func (v *View) anyKind(fn func(kind string) bool) bool {
	for kind := range v.activeKinds {
		if fn(kind) {
			return true
		}
	}
	return false
}

// Due returns the scheduled jobs whose time is now or past.
func (v *View) Due(now time.Time) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for id, at := range v.runAt {
		if !at.After(now) {
			out = append(out, id)
		}
	}
	return out
}

// walkChunk is how many entries a walk of the jobs (walkOldest) looks at
// under one hold of the view's lock: a walk of the millions of finished
// jobs a week of retention holds (tens of milliseconds) would otherwise
// hold up every change the view applies, and every read queued behind
// them, once a round.
var walkChunk = 8192

// walkOldest calls fn on the view's entries oldest first, with v.mu held
// for reading, walkChunk of them under one hold, until fn says stop or
// none is left; the view may change between chunks, and the walk resumes
// after the last entry it saw (where it is, or where it was before a
// compaction took it).
func (v *View) walkOldest(fn func(en *entry) (stop bool)) {
	var last *entry // the last entry looked at
	for v.walkFrom(&last, fn) {
	}
}

// walkFrom is walkOldest's walk of one chunk, from the entry after *last:
// it moves *last on and reports whether entries are left to walk.
func (v *View) walkFrom(last **entry, fn func(en *entry) (stop bool)) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i := 0
	if *last != nil {
		if i = v.index(*last); i < len(v.sorted) && v.sorted[i] == *last {
			i++
		}
	}
	end := min(len(v.sorted), i+walkChunk)
	for _, en := range v.sorted[i:end] {
		if fn(en) {
			return false
		}
	}
	if end > i {
		*last = v.sorted[end-1]
	}
	return end < len(v.sorted)
}

// Expired returns the finished jobs that finished before t, the groups
// whose last member did (a group's members go with it), and the members
// that did whose group did not (another of its jobs ended later, or
// runs): each job expires at its own time, as its resource says. It walks
// the jobs oldest first (walkOldest), and stops at the first created at
// or after t: a job finishes after it is made (one whose server's clock
// ran behind its submitter's goes a round later).
func (v *View) Expired(before time.Time) []string {
	var out []string
	v.walkOldest(v.expiredBy(before.UnixNano(), map[string]bool{}, &out))
	return out
}

// expiredBy is Expired's look at one entry, with v.mu held: it appends to
// out, and says stop at the first entry created at or after t.
func (v *View) expiredBy(t int64, groups map[string]bool, out *[]string) func(*entry) bool {
	return func(en *entry) bool {
		if en.created >= t {
			return true
		}
		if en.gone || en.finished == 0 || en.finished >= t {
			return false
		}
		if !en.member() {
			*out = append(*out, en.id)
			return false
		}
		group, _, _ := job.GroupOf(en.id)
		switch g, ok := v.groups[group]; {
		case !ok || groups[group]:
		case g.finished != 0 && g.finished < t:
			groups[group] = true
			*out = append(*out, group)
		default:
			*out = append(*out, en.id)
		}
		return false
	}
}

// OldestOfKind returns when the oldest job of kind the view holds was
// made, looking no further than jobs made before before (found is false
// when it holds none before then). A view still reading the stored jobs
// at its start answers found with the zero time: any job may be there.
func (v *View) OldestOfKind(kind string, before time.Time) (made time.Time, found bool) {
	v.mu.RLock()
	loading := v.loading
	v.mu.RUnlock()
	if loading {
		return time.Time{}, true
	}
	t := before.UnixNano()
	v.walkOldest(func(en *entry) bool {
		if en.created >= t {
			return true
		}
		if !en.gone && job.IDKind(en.id) == kind {
			made, found = time.Unix(0, en.created), true
			return true
		}
		return false
	})
	return made, found
}

// AwaitGone returns once the view no longer holds job id, or when ctx ends.
func (v *View) AwaitGone(ctx context.Context, id string) {
	for {
		changed := v.Changed()
		v.mu.RLock()
		_, ok := v.byID[id]
		v.mu.RUnlock()
		if !ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// age is the part of a job id that sorts by creation.
func age(id string) string {
	if i := strings.IndexByte(id, '_'); i >= 0 {
		return id[i+1:]
	}
	return id
}
