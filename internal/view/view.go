// Package view keeps this server's read model of the cluster: every job
// record and every live worker, as watched from the JetStream buckets. It
// answers the API's reads, turns changes into events and tells websockets
// when to send a new snapshot. It holds nothing that is not in JetStream.
package view

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mapx"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Config is what a View needs.
type Config struct {
	Store  *store.Store
	Hub    *event.Hub
	Logger *slog.Logger
	// Retention, when set, is how long finished jobs are kept: job
	// resources say when theirs expires.
	Retention time.Duration
	// Recent is how many finished jobs the view keeps whole, newest
	// finished first (0: DefaultRecent); older ones are read from the
	// store when asked for.
	Recent int
}

// maxMarkers bounds the markers of deleted jobs a start's read keeps.
const maxMarkers = 100_000

// DefaultRecent is how many finished jobs a view keeps whole by default.
const DefaultRecent = 2000

// View is the read model.
type View struct {
	cfg Config
	log *slog.Logger

	mu sync.RWMutex
	// Every job has an entry, small enough for hundreds of thousands; the
	// whole record is kept for unfinished jobs and the Recent newest
	// finished ones.
	byID   map[string]*entry
	sorted []*entry // oldest first; deleted entries stay (gone) until the next compaction
	gone   int      // deleted entries in sorted
	// loading is set while the stored records are read at start: entries
	// are appended in the store's order and sorted once at the end.
	loading bool
	recent  []*entry // finished entries that hold their record, oldest finish first
	// order lists the queued and running jobs oldest first, for Queue;
	// orderStale counts the entries in it that left those states (queue.go).
	order      []*entry
	orderStale int

	// What the queue, the admission check and the repair loop read, kept
	// as records change, never counted by a scan.
	active   map[string]unfinished // the unfinished jobs
	unqueued map[string]struct{}   // unfinished jobs whose tasks are not all known to be queued
	runAt    map[string]time.Time  // scheduled jobs, by when they run
	counts   map[job.State]int
	busy     map[string]int // busy workers by job
	left     int            // tasks of unfinished jobs not done yet
	running  int            // of those, the ones a worker runs

	// activeKinds counts the unfinished jobs by kind, controlled those
	// held or in a kind's lane: with no kind of theirs paused or limited
	// and none controlled, Holding has nothing to look at.
	activeKinds map[string]int
	controlled  int
	// goneIDs remembers when the last keepGone deleted jobs were created,
	// by id, in a ring: a page's cursor may name a job deleted since the
	// page was read (a script deleting what it lists), and the next page
	// starts where that job was. Copies, not the entries: an entry would
	// keep its whole block of the slab.
	goneIDs  map[string]int64
	goneRing []string
	goneNext int
	// groups are the groups whose record the view has seen (group.go).
	groups map[string]groupInfo
	// markers are the deleted jobs whose markers the start's read met.
	markers []string
	// tail holds, while the stored records are read at start, the last
	// finished jobs' records as stored (read whole once all are read: the
	// others are only skimmed).
	tail []stored

	// The most byID, active and unqueued held since they were last copied
	// small (mapx): a burst of jobs grows them, maps do not shrink.
	byIDHigh, activeHigh, unqueuedHigh int

	// slab holds the entries and their ids, packed (slab.go); codes
	// names the entries' states.
	slab  slab
	codes stateCodes

	// fills are the jobs whose finished record the archive delivered while
	// this view held them unfinished (or not at all), oldest first.
	fills []fill
	// rechecks are the fills whose job the bucket held unfinished: read
	// again once its copy has settled (fillOne), each at its own time.
	rechecks []fill

	workers map[string]worker
	lost    lostRuns // the tasks workers ran when their processes went
	changed chan struct{}
	waiters map[string][]waiter // by job id (AwaitEpoch)
	hist    history             // what the cluster did per minute, the last hour

	// Task starts are sent as one event per job every startedEvery, so a
	// cluster running thousands of tasks a second does not flood clients.
	startedMu sync.Mutex
	started   map[string][]job.TaskStarted
	// unseen holds the start notices of jobs whose record the view has
	// not seen yet, since when (publishStarted alone uses it).
	unseen map[string]time.Time

	ready   chan struct{}
	readyWG sync.WaitGroup
	stop    context.CancelFunc
	wg      sync.WaitGroup
	unsub   func()
}

// unfinished is an unfinished job's record and its revision in the store.
type unfinished struct {
	j   *job.Job
	rev uint64
}

// entry is what the view keeps of every job: what orders, counts, filters
// and expires it, and its record while the job is unfinished or recent.
type entry struct {
	id       string
	created  int64    // unix nanoseconds
	finished int64    // unix nanoseconds; 0 while unfinished
	j        *job.Job // nil once evicted: read it from the store
	epoch    int32    // the record's (0 for one only skimmed at start)
	state    stateCode
	gone     bool // deleted
	recent   bool // in View.recent
	bits     uint8
}

// An entry's bits.
const (
	bitOrdered uint8 = 1 << iota // in View.order
	bitMember                    // a group's member, its record made from its group's
)

func (en *entry) ordered() bool { return en.bits&bitOrdered != 0 }
func (en *entry) member() bool  { return en.bits&bitMember != 0 }

// set sets or clears bit b.
func (en *entry) set(b uint8, on bool) {
	if on {
		en.bits |= b
	} else {
		en.bits &^= b
	}
}

type worker struct {
	status job.WorkerStatus
	seen   time.Time // by this server's clock, so remote clocks do not matter
	rev    uint64    // of its status in the bucket
	// shown is when its last worker.status event went out.
	shown time.Time
}

// showEvery is how often an idle worker's heartbeat is passed on as an
// event, though nothing changed: a page takes a worker it has not heard
// of for 10 s for one that stopped answering.
const showEvery = 4 * time.Second

// New returns an empty view; Start fills it.
func New(cfg Config) *View {
	return &View{
		cfg:         cfg,
		log:         cfg.Logger,
		byID:        map[string]*entry{},
		loading:     true,
		active:      map[string]unfinished{},
		activeKinds: map[string]int{},
		groups:      map[string]groupInfo{},
		unqueued:    map[string]struct{}{},
		runAt:       map[string]time.Time{},
		counts:      map[job.State]int{},
		busy:        map[string]int{},
		workers:     map[string]worker{},
		changed:     make(chan struct{}),
		waiters:     map[string][]waiter{},
		started:     map[string][]job.TaskStarted{},
		ready:       make(chan struct{}),
	}
}

// Start watches the buckets. It returns at once; Ready closes once the
// stored state has been read.
func (v *View) Start(ctx context.Context) error {
	start := ctx
	ctx, v.stop = context.WithCancel(context.WithoutCancel(ctx))
	jw, err := store.StartWatch(start, ctx, v.cfg.Store.Jobs.Watch)
	if err != nil {
		return fmt.Errorf("watch jobs: %w", err)
	}
	ww, err := store.StartWatch(start, ctx, v.cfg.Store.Workers.Watch)
	if err != nil {
		jw.Stop()
		return fmt.Errorf("watch workers: %w", err)
	}
	v.unsub, err = v.cfg.Store.Notices.OnTasksStarted("", func(s []job.TaskStarted) {
		v.startedMu.Lock()
		for _, t := range s {
			if t.Member != "" {
				// A group's task: the job it runs, as shown.
				t.Job, t.Partition, t.Member = t.Member, 0, ""
			}
			v.started[t.Job] = append(v.started[t.Job], t)
		}
		v.startedMu.Unlock()
	})
	if err != nil {
		jw.Stop()
		ww.Stop()
		return fmt.Errorf("subscribe to task starts: %w", err)
	}
	v.readyWG.Add(2)
	go func() { v.readyWG.Wait(); close(v.ready) }()
	v.wg.Go(func() { v.watch(ctx, jw, v.applyJobs, v.loaded) })
	v.wg.Go(func() {
		v.watch(ctx, ww, func(batch []*store.Entry, initial bool) {
			for _, e := range batch {
				v.applyWorker(e, initial)
			}
		}, func() {})
	})
	v.wg.Go(func() { v.prune(ctx) })
	v.wg.Go(func() { v.fill(ctx) })
	v.wg.Go(func() { v.flushStarted(ctx) })
	return nil
}

// Markers returns, once, the deleted jobs whose markers the read at start
// met: left by a server that stopped before it purged them.
func (v *View) Markers() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.markers
	v.markers = nil
	return m
}

// Stop stops watching.
func (v *View) Stop(context.Context) error {
	if v.stop == nil {
		return nil
	}
	v.unsub()
	v.stop()
	v.wg.Wait()
	return nil
}

// Ready is closed once the view has read the stored state.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Changed returns a channel closed at the next change. Take it before
// reading a snapshot, so no change falls between the two.
func (v *View) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

// Await returns once the view holds job id, or when ctx ends.
func (v *View) Await(ctx context.Context, id string) { v.AwaitEpoch(ctx, id, 0) }

// AwaitEpoch returns once the view holds job id in epoch (its retries) or
// a later one, or when ctx ends. It waits for a change of that job only:
// waking every submit in flight at every change of any job (as a wait on
// Changed does) cost 16 wake-ups and lock round trips per change with 16
// clients submitting.
func (v *View) AwaitEpoch(ctx context.Context, id string, epoch int) {
	v.mu.Lock()
	if holds(v.byID[id], epoch) {
		v.mu.Unlock()
		return
	}
	w := waiter{epoch: epoch, ch: make(chan struct{})}
	v.waiters[id] = append(v.waiters[id], w)
	v.mu.Unlock()
	select {
	case <-w.ch:
	case <-ctx.Done():
		v.mu.Lock()
		ws := slices.DeleteFunc(v.waiters[id], func(o waiter) bool { return o.ch == w.ch })
		if len(ws) == 0 {
			delete(v.waiters, id)
		} else {
			v.waiters[id] = ws
		}
		v.mu.Unlock()
	}
}

// waiter is an AwaitEpoch in progress.
type waiter struct {
	epoch int
	ch    chan struct{} // closed once the view holds the job in epoch
}

// holds reports whether entry en is there and in epoch or later.
func holds(en *entry, epoch int) bool {
	return en != nil && !en.gone && (epoch == 0 || en.j != nil && en.j.Epoch >= epoch)
}

// wake ends the waits for en that it now satisfies. v.mu must be held for
// writing.
func (v *View) wake(en *entry) {
	ws, ok := v.waiters[en.id]
	if !ok {
		return
	}
	ws = slices.DeleteFunc(ws, func(w waiter) bool {
		if holds(en, w.epoch) {
			close(w.ch)
			return true
		}
		return false
	})
	if len(ws) == 0 {
		delete(v.waiters, en.id)
	} else {
		v.waiters[en.id] = ws
	}
}

// notify must be called with v.mu held for writing.
func (v *View) notify() {
	close(v.changed)
	v.changed = make(chan struct{})
}

// maxBatch bounds the entries watch hands to apply at once.
const maxBatch = 256

// watch hands w's entries to apply, in order, in batches of those that
// are already there (one at a time when they come one at a time).
func (v *View) watch(ctx context.Context, w store.Watcher, apply func([]*store.Entry, bool), loaded func()) {
	defer w.Stop()
	initial := true
	batch := make([]*store.Entry, 0, maxBatch)
	for {
		var e *store.Entry
		var ok bool
		select {
		case <-ctx.Done():
			return
		case e, ok = <-w.Updates():
		}
		end := ok && e == nil // the end of the stored entries
		batch = batch[:0]
		for ok && e != nil {
			batch = append(batch, e)
			if len(batch) == maxBatch {
				break
			}
			select {
			case e, ok = <-w.Updates():
				end = ok && e == nil
			default:
				e = nil // no more for now
			}
		}
		if len(batch) > 0 {
			apply(batch, initial)
			clear(batch) // the records are not held while waiting
		}
		if end && initial {
			initial = false
			loaded()
			v.readyWG.Done()
		}
		if !ok {
			return
		}
	}
}

// stored is a job record as the store holds it.
type stored struct {
	id   string
	data []byte
}

// head is what the view keeps of a finished job whose record it does not
// hold.
type head struct {
	ID         string     `json:"id"`
	State      job.State  `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// records is the job bucket's records (nil in tests of the view alone,
// which give it records by hand: Watched then decodes them).
func (v *View) records() *store.Jobs {
	if v.cfg.Store == nil {
		return nil
	}
	return v.cfg.Store.Jobs
}

// decodeJob reads a record, or at start (skim) only the head of a finished
// job's, which costs a sixth as much: light reports that j is only a head.
func (v *View) decodeJob(e *store.Entry, skim bool) (j *job.Job, light bool) {
	if skim && !mayBeGroup(e) {
		if h, ok := skimHead(e.Value); ok && h.ID == e.Key && h.State.Terminal() {
			return &job.Job{ID: h.ID, State: h.State, CreatedAt: h.CreatedAt, FinishedAt: h.FinishedAt}, true
		}
	}
	j, err := v.records().Watched(e)
	if err != nil {
		v.log.Warn("skipping unreadable job record", "key", e.Key, "err", err)
		return nil, false
	}
	if j.State.Terminal() {
		// Read from the store when asked for (the coordinator's Tasks).
		// An unfinished job's stays: the coordinator writes its next
		// revision from this one (Record).
		j.TaskLog = nil
	}
	return j, false
}

// applyJobs applies a batch of job records, decoded in parallel when there
// are many (the read of every record at start is most of a restart).
func (v *View) applyJobs(batch []*store.Entry, initial bool) {
	if !initial {
		// A finished record from the archive is appended before the
		// bucket's write, which may yet fail: not the job's state until
		// the bucket says so, and the bucket's watch delivers it within
		// milliseconds. A job still unfinished here fillAfter later is
		// read from the store (fill): this watch missed the bucket's
		// record (it fell more than the bucket's ten seconds behind).
		// (The batch is the watch's buffer, cleared after: taken out in
		// place.)
		if slices.ContainsFunc(batch, func(e *store.Entry) bool { return e.Archived }) {
			v.mu.Lock()
			now := time.Now()
			batch = slices.DeleteFunc(batch, func(e *store.Entry) bool {
				if !e.Archived {
					return false
				}
				if !v.heldFinished(e.Key) {
					v.fills = append(v.fills, fill{id: e.Key, at: now})
				}
				return true
			})
			v.mu.Unlock()
		}
	}
	jobs := make([]*job.Job, len(batch))
	light := make([]bool, len(batch))
	decode := func(i int) {
		if e := batch[i]; !e.Deleted {
			jobs[i], light[i] = v.decodeJob(e, initial)
		} else {
			v.records().Watched(e) // forgets what this process wrote before
		}
	}
	if len(batch) < 32 {
		for i := range batch {
			decode(i)
		}
	} else {
		var wg sync.WaitGroup
		n := runtime.GOMAXPROCS(0)
		for k := range n {
			wg.Go(func() {
				for i := k; i < len(batch); i += n {
					decode(i)
				}
			})
		}
		wg.Wait()
	}
	for i, e := range batch {
		if e.Deleted || jobs[i] != nil {
			v.applyJob(e, jobs[i], light[i], initial)
		}
		if light[i] {
			// Records arrive in the order of their last write: the last
			// ones are those of the jobs that finished last.
			v.tail = append(v.tail, stored{e.Key, e.Value})
			if len(v.tail) >= 2*v.recentLimit() {
				v.tail = append(v.tail[:0], v.tail[len(v.tail)-v.recentLimit():]...)
			}
		}
	}
}

// applyJob applies one entry of the jobs bucket: j is its record, decoded
// (nil for a deletion), or with light only the head of a finished job's.
func (v *View) applyJob(e *store.Entry, j *job.Job, light, initial bool) {
	if !e.Deleted && j.IsGroup() {
		v.applyGroup(e, j, initial)
		return
	}
	if e.Deleted {
		v.mu.Lock()
		if initial && len(v.markers) < maxMarkers {
			v.markers = append(v.markers, e.Key)
		}
		if members, ok := v.removeGroup(e.Key); ok {
			v.notify()
			v.mu.Unlock()
			if !initial {
				for _, id := range members {
					v.cfg.Hub.Publish(event.Event{Type: "job.deleted", Data: map[string]string{"id": id}})
				}
			}
			return
		}
		en, ok := v.byID[e.Key]
		if ok {
			v.remove(en)
			v.notify()
		}
		v.mu.Unlock()
		if ok && !initial {
			v.cfg.Hub.Publish(event.Event{Type: "job.deleted", Data: map[string]string{"id": e.Key}})
		}
		return
	}
	v.mu.Lock()
	if !initial && v.stale(e, j) {
		v.mu.Unlock()
		return
	}
	prev := v.set(j, e.Revision, light)
	var events []event.Event
	if !initial {
		v.notify()
		if v.cfg.Hub.Listening() { // no dashboard or websocket open: no events to make
			events = v.jobEvents(prev, j)
		}
		v.hist.note(time.Now(), prev, j, v.left-v.running)
	}
	v.mu.Unlock()
	for _, ev := range events {
		v.cfg.Hub.Publish(ev)
	}
}

// fill is a job whose finished record the archive delivered, and when.
type fill struct {
	id    string
	at    time.Time
	tries int // reads of the store that failed
	// settles counts the reads that found the job unfinished in the
	// bucket (rechecks).
	settles int
}

// maxSettles bounds the reads of a job found unfinished in the bucket
// beside its finished copy: they come SettleAfter, then twice, four times
// ... as long after the one before (about ten minutes in all by default).
const maxSettles = 5

// maxFillTries bounds the reads of one job's record by fill.
const maxFillTries = 30

// fillAfter is how long after the archive's record a job still held
// unfinished is read from the store.
const fillAfter = 2 * time.Second

// fill reads from the store, and applies, the finished record of every
// job the archive said finished fillAfter ago that the view still holds
// unfinished: the bucket's watch missed its record.
func (v *View) fill(ctx context.Context) {
	t := time.NewTicker(fillAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v.mu.Lock()
		now := time.Now()
		var due []fill
		i := 0
		for ; i < len(v.fills) && now.Sub(v.fills[i].at) >= fillAfter; i++ {
			if !v.heldFinished(v.fills[i].id) {
				due = append(due, v.fills[i])
			}
		}
		if i == len(v.fills) {
			v.fills = nil // let a burst's go
		} else {
			v.fills = v.fills[i:]
		}
		v.rechecks = slices.DeleteFunc(v.rechecks, func(f fill) bool {
			if now.Before(f.at) {
				return false
			}
			if !v.heldFinished(f.id) {
				due = append(due, f)
			}
			return true
		})
		v.mu.Unlock()
		for i, f := range due {
			if !v.fillOne(ctx, f) {
				// The store does not answer: the others wait for the
				// next round rather than a deadline each.
				now := time.Now()
				v.mu.Lock()
				for _, f := range due[i+1:] {
					f.at = now
					v.fills = append(v.fills, f)
				}
				v.mu.Unlock()
				break
			}
		}
	}
}

// fillOne applies job f's finished record from the store; false when the
// store failed to answer (the job is noted again, up to maxFillTries).
func (v *View) fillOne(ctx context.Context, f fill) bool {
	if v.records() == nil {
		return true
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	j, rev, err := v.cfg.Store.Jobs.Get(rctx, f.id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return true // deleted since
	case err != nil && ctx.Err() == nil:
		if f.tries++; f.tries < maxFillTries {
			f.at = time.Now()
			v.mu.Lock()
			v.fills = append(v.fills, f)
			v.mu.Unlock()
			return false
		}
		v.log.Warn("could not read the record of a job the archive says finished, after a minute of tries; the dashboard shows it unfinished until this server restarts", "job", f.id, "err", err)
		return false
	case err != nil:
		return true // stopping
	case !j.State.Terminal():
		// Unfinished in the bucket: the archive's copy was early. Either
		// its bucket write failed, and the write of the results applied
		// again finishes the job (the bucket's watch tells it), or the
		// write was cut short past its copy's append (a server killed),
		// and the results applied again change nothing in a server that
		// reads the copy (a restarted one: superseded): the copy is the
		// job's state, which Get reads once no finishing write can still
		// be on its way (revived), and nothing of the bucket says so to
		// this watch (two servers of three held a job "running" for good
		// that the third read "succeeded", in a chaos test). So it is
		// read again then.
		if f.settles++; f.settles <= maxSettles {
			// Then later and later: a finishing write tried again
			// through a long partition may land after the first look.
			f.at = time.Now().Add(v.cfg.Store.Jobs.SettleAfter() << (f.settles - 1))
			v.mu.Lock()
			v.rechecks = append(v.rechecks, f)
			v.mu.Unlock()
		}
		return true
	}
	id := f.id
	j.TaskLog = nil
	v.log.Debug("a finished job's record came from the store, not from the watch of the jobs bucket (it fell behind)", "job", id, "state", j.State)
	v.applyJob(&store.Entry{Key: id, Revision: rev, Archived: rev == 0}, j, false, false)
	return true
}

// stale reports whether a record applied after the stored ones tells
// nothing new. A finished record read from the store by fill (an archived
// one: e.Archived) fills in a job held unfinished only; the bucket's
// records are the job's state, unless one is older than what is held (an
// earlier epoch, or an unfinished record of the epoch held finished: a
// watch that fell behind delivering what fill already applied) or the same
// finish again. v.mu must be held.
func (v *View) stale(e *store.Entry, j *job.Job) bool {
	en := v.byID[j.ID]
	if en == nil {
		return false
	}
	held, epoch := v.codes.state(en.state), int(en.epoch)
	if e.Archived {
		return held.Terminal() || epoch > j.Epoch
	}
	switch {
	case epoch > j.Epoch:
		return true
	case epoch < j.Epoch || !held.Terminal():
		return false
	case !j.State.Terminal():
		return true
	}
	return held == j.State && j.FinishedAt != nil && en.finished == j.FinishedAt.UnixNano()
}

// set stores record j, revision rev, and returns the record it replaces:
// nil for a job not seen before; for an evicted one, a record of its last
// state. With light, j is only the head of a finished job's record, which
// is not kept.
// v.mu must be held for writing.
func (v *View) set(j *job.Job, rev uint64, light bool) (prev *job.Job) {
	v.leaveActive(j.ID)
	prev = v.setEntry(j, light)
	v.setActive(j, rev)
	v.wake(v.byID[j.ID])
	return prev
}

// leaveActive takes unfinished job id, if it is one, out of the totals
// before its record changes. v.mu must be held for writing.
func (v *View) leaveActive(id string) {
	if old, ok := v.active[id]; ok {
		v.track(old.j, -1)
		v.leave(id)
	}
}

// setActive keeps record j, revision rev, as the unfinished job's or takes
// a finished one out of the unfinished: what the coordinator writes from,
// and the queue, the admission check and the repair read. Called after
// leaveActive. v.mu must be held for writing.
func (v *View) setActive(j *job.Job, rev uint64) {
	if j.State.Terminal() {
		delete(v.active, j.ID)
		delete(v.unqueued, j.ID)
		return
	}
	v.active[j.ID] = unfinished{j, rev}
	v.track(j, 1)
	mapx.Note(v.active, &v.activeHigh)
	if j.Enqueued || j.Held || j.State == job.Scheduled {
		delete(v.unqueued, j.ID) // a scheduled job's tasks are queued at its time
	} else {
		v.unqueued[j.ID] = struct{}{}
		mapx.Note(v.unqueued, &v.unqueuedHigh)
	}
	v.join(j.ID)
}

// setEntry stores record j in the job's entry (its state, order and
// counts) and returns the record it replaces, as set. v.mu must be held
// for writing.
func (v *View) setEntry(j *job.Job, light bool) (prev *job.Job) {
	en := v.byID[j.ID]
	if en == nil {
		en = v.slab.entry(j.ID, j.CreatedAt.UnixNano())
		v.byID[en.id] = en
		mapx.Note(v.byID, &v.byIDHigh)
		v.insert(en)
	} else {
		prev = en.j
		if prev == nil {
			prev = &job.Job{ID: j.ID, State: v.codes.state(en.state), Done: j.Done, Values: j.Values, ReduceDone: j.ReduceDone}
		}
		v.counts[v.codes.state(en.state)]--
	}
	wasInOrder := inQueueOrder(en)
	en.state, en.j, en.epoch = v.codes.code(j.State), j, int32(j.Epoch)
	en.set(bitMember, j.Group != "")
	v.noteOrder(en, wasInOrder)
	v.counts[j.State]++
	if j.State == job.Scheduled && j.RunAt != nil {
		v.runAt[j.ID] = *j.RunAt
	} else {
		delete(v.runAt, j.ID)
	}
	if j.State.Terminal() {
		if j.FinishedAt != nil {
			en.finished = j.FinishedAt.UnixNano()
		}
		if light && !en.recent {
			en.j = nil
		} else if !en.recent {
			v.keepRecent(en)
		}
	} else {
		en.finished = 0
	}
	return prev
}

// recentLimit is how many finished jobs keep their record.
func (v *View) recentLimit() int {
	if v.cfg.Recent <= 0 {
		return DefaultRecent
	}
	return v.cfg.Recent
}

// keepRecent adds a finished entry to the recent ones and evicts the
// record of the oldest past the bound. v.mu must be held for writing.
func (v *View) keepRecent(en *entry) {
	limit := v.recentLimit()
	en.recent = true
	v.recent = append(v.recent, en)
	for len(v.recent) > limit {
		old := v.recent[0]
		v.recent[0] = nil
		v.recent = v.recent[1:]
		old.recent = false
		if old.state.terminal() {
			old.j = nil
		}
	}
}

// track counts unfinished job j in (d 1) or out (d -1) of activeKinds
// and controlled. v.mu must be held for writing.
func (v *View) track(j *job.Job, d int) {
	if v.activeKinds[j.Kind] += d; v.activeKinds[j.Kind] == 0 {
		delete(v.activeKinds, j.Kind)
	}
	if j.Held || j.Lane != "" {
		v.controlled += d
	}
}

// remove forgets a deleted job. v.mu must be held for writing.
func (v *View) remove(en *entry) {
	if old, ok := v.active[en.id]; ok {
		v.track(old.j, -1)
	}
	v.counts[v.codes.state(en.state)]--
	v.leave(en.id)
	delete(v.active, en.id)
	delete(v.unqueued, en.id)
	delete(v.runAt, en.id)
	delete(v.byID, en.id)
	v.rememberGone(en)
	wasInOrder := inQueueOrder(en)
	en.gone, en.j = true, nil
	v.noteOrder(en, wasInOrder)
	v.gone++
	if v.gone > 1024 && 2*v.gone > len(v.sorted) {
		live := v.sorted[:0]
		for _, e := range v.sorted {
			if !e.gone {
				live = append(live, e)
			}
		}
		clear(v.sorted[len(live):])
		v.sorted, v.gone = live, 0
	}
}

// keepGone is how many deleted jobs the view remembers exactly, for the
// cursors that name them and for Deleted; a cursor naming one deleted
// earlier is placed by the time its id holds (List).
const keepGone = 8192

// rememberGone keeps where a deleted job was for the cursors that name it,
// forgetting the oldest past keepGone. v.mu must be held for writing.
func (v *View) rememberGone(en *entry) {
	if v.goneIDs == nil {
		v.goneIDs, v.goneRing = map[string]int64{}, make([]string, keepGone)
	}
	if old := v.goneRing[v.goneNext]; old != "" {
		delete(v.goneIDs, old)
	}
	id := strings.Clone(en.id)
	v.goneRing[v.goneNext], v.goneIDs[id] = id, en.created
	v.goneNext = (v.goneNext + 1) % keepGone
}

// insert puts a new entry in creation order. v.mu must be held for writing.
func (v *View) insert(en *entry) {
	if v.loading {
		v.sorted = append(v.sorted, en)
		return
	}
	i := v.index(en)
	v.sorted = append(v.sorted, nil)
	copy(v.sorted[i+1:], v.sorted[i:])
	v.sorted[i] = en
}

// loaded ends the start's read of the stored records: the entries were
// appended in the store's order, and are sorted once.
func (v *View) loaded() {
	// The records of the jobs that finished last are read whole: the
	// newest finished jobs are those most asked for.
	var whole []*job.Job // newest first
	seen := map[string]bool{}
	for i := len(v.tail) - 1; i >= 0 && len(whole) < v.recentLimit(); i-- {
		if r := v.tail[i]; !seen[r.id] {
			seen[r.id] = true
			if j, _ := v.decodeJob(&store.Entry{Key: r.id, Value: r.data}, false); j != nil {
				whole = append(whole, j)
			}
		}
	}
	v.tail = nil
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, j := range slices.Backward(whole) {
		if en := v.byID[j.ID]; en != nil && en.j == nil && !en.recent && v.codes.state(en.state) == j.State {
			en.j = j
			v.keepRecent(en)
		}
	}
	sort.Slice(v.sorted, func(a, b int) bool { return less(v.sorted[a], v.sorted[b]) })
	v.sortOrder()
	v.loading = false
	v.notify()
}

// share returns how many of an unfinished job's tasks are not done yet and
// how many of those a worker runs: a job's running and queued counts
// derive from the workers. v.mu must be held.
func (v *View) share(j *job.Job) (left, running int) {
	if j.State == job.Scheduled {
		return 0, 0 // nothing queued before its time
	}
	total, done := j.Partitions, j.Done
	if j.ReadsData() {
		total += j.Reducers
		done += j.ReduceDone
		if j.Phase == job.PhaseMap {
			total -= j.Reducers  // not queued before the maps are done
			done -= j.ReduceDone // done before a lost map output was made again
		}
	}
	left = total - done - j.Failed
	return left, min(v.busy[j.ID], left)
}

// join adds unfinished job id's share to the totals, leave takes it out:
// every change of a job or of its busy workers is a leave, the change,
// then a join. v.mu must be held for writing.
func (v *View) join(id string) {
	if u, ok := v.active[id]; ok {
		l, r := v.share(u.j)
		v.left += l
		v.running += r
	}
}

func (v *View) leave(id string) {
	if u, ok := v.active[id]; ok {
		l, r := v.share(u.j)
		v.left -= l
		v.running -= r
	}
}

// setBusy moves the count of workers busy with job id by delta. v.mu
// must be held for writing.
func (v *View) setBusy(id string, delta int) {
	if id == "" {
		return
	}
	v.leave(id)
	if v.busy[id] += delta; v.busy[id] <= 0 {
		delete(v.busy, id)
	}
	v.join(id)
}

// job returns job id's record when the view holds it. v.mu must be held.
func (v *View) job(id string) *job.Job {
	if en, ok := v.byID[id]; ok {
		return en.j
	}
	return nil
}

// jobEvents turns a record change into events; v.mu must be held. The
// watcher may skip revisions (the bucket keeps only the newest), so a job
// can first be seen already finished: every event is derived from the
// difference, with a job not seen before compared to a fresh one.
func (v *View) jobEvents(prev, j *job.Job) []event.Event {
	res := v.resource(j)
	var out []event.Event
	if prev == nil {
		out = append(out, event.Event{Type: "job.submitted", Data: res})
		prev = &job.Job{State: job.Queued}
	}
	if j.Done > prev.Done {
		parts := j.Values.NewlySet(prev.Values)
		out = append(out, event.Event{Type: "task.done", Data: TasksDone{Job: j.ID, Partitions: parts, Done: j.Done, Total: j.Partitions}})
	}
	switch {
	case j.State != prev.State:
		out = append(out, event.Event{Type: "job." + string(j.State), Data: res})
	case len(out) == 0 || out[len(out)-1].Type == "task.done":
		out = append(out, event.Event{Type: "job.progress", Data: res})
	}
	return out
}

// TasksDone is the data of a task.done event: the partitions finished
// since the previous event of the job.
type TasksDone struct {
	Job        string `json:"job"`
	Partitions []int  `json:"partitions"`
	Done       int    `json:"done"`
	Total      int    `json:"total"`
}

// index returns where en is or belongs in v.sorted.
func (v *View) index(en *entry) int {
	return sort.Search(len(v.sorted), func(i int) bool { return !less(v.sorted[i], en) })
}

func less(a, b *entry) bool {
	if a.created != b.created {
		return a.created < b.created
	}
	return a.id < b.id
}

func (v *View) applyWorker(e *store.Entry, initial bool) {
	if e.Deleted {
		v.removeWorker(e.Key)
		return
	}
	var s job.WorkerStatus
	if err := json.Unmarshal(e.Value, &s); err != nil {
		v.log.Warn("skipping unreadable worker status", "key", e.Key, "err", err)
		return
	}
	v.mu.Lock()
	prev, known := v.workers[e.Key]
	if known && otherProcess(prev.status, s) {
		v.lost.ended(e.Key, prev.status)
	}
	now := time.Now()
	w := worker{status: s, seen: now, rev: e.Revision, shown: prev.shown}
	changed := !known || !sameActivity(prev.status, s)
	if was, is := busyJob(prev.status), busyJob(s); was != is {
		v.setBusy(was, -1)
		v.setBusy(is, 1)
	}
	var events []event.Event
	if changed {
		v.notify()
		if !initial {
			events = v.runningChanged(busyJob(prev.status), busyJob(s))
		}
	}
	// A task's progress (written every few seconds) is shown as it
	// moves, but is no change of what the worker does.
	progressed := known && !sameProgress(prev.status.Progress, s.Progress)
	if !initial && (changed || progressed || now.Sub(prev.shown) >= showEvery) {
		events = append(events, event.Event{Type: "worker.status", Data: v.shownStatus(s)})
		w.shown = now
	}
	v.workers[e.Key] = w
	v.mu.Unlock()
	for _, ev := range events {
		v.cfg.Hub.Publish(ev)
	}
}

func busyJob(s job.WorkerStatus) string {
	if s.Busy {
		return s.JobID
	}
	return ""
}

// runningChanged returns a job.progress event for each unfinished job whose
// running count a worker's change moved: a job's running and queued tasks
// are derived from the workers, so their change is the job's change too.
// v.mu must be held.
func (v *View) runningChanged(ids ...string) []event.Event {
	var out []event.Event
	if len(ids) == 2 && ids[0] == ids[1] {
		return nil
	}
	for _, id := range ids {
		if u, ok := v.active[id]; ok && !u.j.IsGroup() { // a group's members show their own starts
			out = append(out, event.Event{Type: "job.progress", Data: v.resource(u.j)})
		}
	}
	return out
}

// sameActivity reports whether two statuses differ only in their heartbeat
// and their task's progress.
func sameActivity(a, b job.WorkerStatus) bool {
	a.LastSeen, b.LastSeen = time.Time{}, time.Time{}
	if (a.TaskStartedAt == nil) != (b.TaskStartedAt == nil) || a.TaskStartedAt != nil && !a.TaskStartedAt.Equal(*b.TaskStartedAt) {
		return false
	}
	a.TaskStartedAt, b.TaskStartedAt = nil, nil
	a.Progress, b.Progress = nil, nil
	return a == b
}

// sameProgress reports whether two statuses' progress is the same.
func sameProgress(a, b *float64) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

func (v *View) removeWorker(key string) {
	v.mu.Lock()
	w, ok := v.workers[key]
	var events []event.Event
	if ok {
		delete(v.workers, key)
		v.lost.ended(key, w.status)
		v.setBusy(busyJob(w.status), -1)
		v.notify()
		events = append(v.runningChanged(busyJob(w.status)), event.Event{Type: "worker.left", Data: map[string]string{"key": key}})
	}
	v.mu.Unlock()
	for _, ev := range events {
		v.cfg.Hub.Publish(ev)
	}
}

// prune forgets workers whose heartbeats stopped: the bucket drops their
// entries after the TTL without telling watchers.
func (v *View) prune(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			v.pruneWorkers(ctx, now)
			v.mu.Lock()
			v.byID = mapx.Shrunk(v.byID, &v.byIDHigh)
			v.active = mapx.Shrunk(v.active, &v.activeHigh)
			v.unqueued = mapx.Shrunk(v.unqueued, &v.unqueuedHigh)
			v.mu.Unlock()
		}
	}
}

// pruneWorkers forgets the workers not heard of for the bucket's TTL
// whose status the store no longer holds. Not heard of is not gone: the
// watch falls behind while the bucket elects a leader (a server of a
// cluster killed), and every server then forgot every worker for a
// moment: the dashboard showed none, and the repair loop, seeing no worker
// busy, took the queue for stuck. A status the store holds at a later revision
// than the last seen is taken as a heartbeat; one the store cannot be
// asked about now is asked about again at the next look. A status still
// there at the same revision is of a worker silent for its TTL, which the
// bucket is about to drop.
func (v *View) pruneWorkers(ctx context.Context, now time.Time) {
	stale := map[string]uint64{}
	v.mu.RLock()
	for k, w := range v.workers {
		if now.Sub(w.seen) > store.WorkerTTL {
			stale[k] = w.rev
		}
	}
	v.mu.RUnlock()
	// One deadline for the look: a store that does not answer holds the
	// loop 2 s, not 2 s per worker.
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for k, rev := range stale {
		if v.cfg.Store != nil {
			e, err := v.cfg.Store.Workers.Get(gctx, k)
			if err == nil && e.Revision > rev {
				v.log.Debug("a worker's heartbeat came by no watch for its TTL but the store holds a newer one; keeping it", "worker", k)
				v.applyWorker(&e, false)
				continue
			}
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				v.log.Debug("no heartbeat of a worker for its TTL, and its status cannot be read now; asking again in a second", "worker", k, "err", err)
				continue
			}
		}
		v.log.Warn("worker stopped heartbeating; forgetting it", "worker", k)
		v.removeWorker(k)
	}
}

// TasksStarted is the data of a task.started event: the tasks of one job
// that started since its previous event.
type TasksStarted struct {
	Job   string            `json:"job"`
	Tasks []job.TaskStarted `json:"tasks"`
}

const startedEvery = 100 * time.Millisecond

// holdUnseen is how long the start notices of a job the view has not seen
// wait for its record before they are published anyway.
const holdUnseen = 2 * time.Second

func (v *View) flushStarted(ctx context.Context) {
	t := time.NewTicker(startedEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			v.publishStarted(now)
		}
	}
}

// publishStarted publishes the start notices gathered since the last
// time, as one task.started event per job. Only flushStarted calls it.
func (v *View) publishStarted(now time.Time) {
	v.startedMu.Lock()
	started := v.started
	if len(started) == 0 {
		v.startedMu.Unlock()
		return
	}
	v.started = map[string][]job.TaskStarted{}
	v.startedMu.Unlock()
	held := map[string][]job.TaskStarted{}
	v.mu.RLock()
	for id, tasks := range started {
		if _, seen := v.byID[id]; !seen {
			// A submit stores its tasks before the record: a task may
			// start before the view sees its job. Its notice waits for
			// the record (job.submitted comes first), a while.
			if v.unseen == nil {
				v.unseen = map[string]time.Time{}
			}
			since, ok := v.unseen[id]
			if !ok {
				v.unseen[id], since = now, now
			}
			if now.Sub(since) < holdUnseen {
				held[id] = tasks
				delete(started, id)
				continue
			}
		}
		delete(v.unseen, id)
		if j := v.job(id); j != nil && !j.ReadsData() {
			for i := range tasks {
				tasks[i].Phase = "" // a map-only job has no phase to show
			}
		}
	}
	v.mu.RUnlock()
	if len(held) > 0 {
		v.startedMu.Lock()
		for id, tasks := range held {
			v.started[id] = append(tasks, v.started[id]...)
		}
		v.startedMu.Unlock()
	}
	for id, tasks := range started {
		v.cfg.Hub.Publish(event.Event{Type: "task.started", Data: TasksStarted{Job: id, Tasks: tasks}})
	}
}
