// Package view keeps this server's read model of the cluster: every job
// record and every live worker, as watched from the JetStream buckets. It
// answers the API's reads, turns changes into events and tells websockets
// when to send a new snapshot. It holds nothing that is not in JetStream.
package view

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
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
}

// View is the read model.
type View struct {
	cfg Config
	log *slog.Logger

	mu      sync.RWMutex
	jobs    map[string]*job.Job
	active  map[string]*job.Job // the unfinished jobs: what the queue and the admission check read
	sorted  []*job.Job          // oldest first
	workers map[string]worker
	changed chan struct{}

	// Task starts are sent as one event per job every startedEvery, so a
	// cluster running thousands of tasks a second does not flood clients.
	startedMu sync.Mutex
	started   map[string][]job.TaskStarted

	ready   chan struct{}
	readyWG sync.WaitGroup
	stop    context.CancelFunc
	wg      sync.WaitGroup
	unsub   func()
}

type worker struct {
	status job.WorkerStatus
	seen   time.Time // by this server's clock, so remote clocks do not matter
}

// New returns an empty view; Start fills it.
func New(cfg Config) *View {
	return &View{
		cfg:     cfg,
		log:     cfg.Logger,
		jobs:    map[string]*job.Job{},
		active:  map[string]*job.Job{},
		workers: map[string]worker{},
		changed: make(chan struct{}),
		started: map[string][]job.TaskStarted{},
		ready:   make(chan struct{}),
	}
}

// Start watches the buckets. It returns at once; Ready closes once the
// stored state has been read.
func (v *View) Start(ctx context.Context) error {
	ctx, v.stop = context.WithCancel(context.WithoutCancel(ctx))
	jw, err := v.cfg.Store.Jobs.KV.Watch(ctx)
	if err != nil {
		return fmt.Errorf("watch jobs: %w", err)
	}
	ww, err := v.cfg.Store.Workers.Watch(ctx)
	if err != nil {
		jw.Stop()
		return fmt.Errorf("watch workers: %w", err)
	}
	v.unsub, err = v.cfg.Store.Notices.OnTasksStarted("", func(s []job.TaskStarted) {
		v.startedMu.Lock()
		v.started[s[0].Job] = append(v.started[s[0].Job], s...)
		v.startedMu.Unlock()
	})
	if err != nil {
		jw.Stop()
		ww.Stop()
		return fmt.Errorf("subscribe to task starts: %w", err)
	}
	v.readyWG.Add(2)
	go func() { v.readyWG.Wait(); close(v.ready) }()
	v.wg.Go(func() { v.watch(ctx, jw, v.applyJob) })
	v.wg.Go(func() { v.watch(ctx, ww, v.applyWorker) })
	v.wg.Go(func() { v.prune(ctx) })
	v.wg.Go(func() { v.flushStarted(ctx) })
	return nil
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
func (v *View) Await(ctx context.Context, id string) {
	for {
		changed := v.Changed()
		v.mu.RLock()
		_, ok := v.jobs[id]
		v.mu.RUnlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// notify must be called with v.mu held for writing.
func (v *View) notify() {
	close(v.changed)
	v.changed = make(chan struct{})
}

func (v *View) watch(ctx context.Context, w store.Watcher, apply func(*store.Entry, bool)) {
	defer w.Stop()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if initial {
					initial = false
					v.readyWG.Done()
				}
				continue
			}
			apply(e, initial)
		}
	}
}

func (v *View) applyJob(e *store.Entry, initial bool) {
	if e.Deleted {
		v.mu.Lock()
		j, ok := v.jobs[e.Key]
		if ok {
			delete(v.jobs, e.Key)
			delete(v.active, e.Key)
			i := v.index(j)
			v.sorted = append(v.sorted[:i], v.sorted[i+1:]...)
			v.notify()
		}
		v.mu.Unlock()
		if ok && !initial {
			v.cfg.Hub.Publish(event.Event{Type: "job.deleted", Data: map[string]string{"id": e.Key}})
		}
		return
	}
	j, err := store.DecodeJob(e.Value)
	if err != nil {
		v.log.Warn("skipping unreadable job record", "key", e.Key, "err", err)
		return
	}
	v.mu.Lock()
	prev := v.jobs[j.ID]
	v.jobs[j.ID] = j
	if j.State.Terminal() {
		delete(v.active, j.ID)
	} else {
		v.active[j.ID] = j
	}
	if prev == nil {
		i := v.index(j)
		v.sorted = append(v.sorted, nil)
		copy(v.sorted[i+1:], v.sorted[i:])
		v.sorted[i] = j
	} else {
		v.sorted[v.index(j)] = j
	}
	v.notify()
	var events []event.Event
	if !initial {
		events = v.jobEvents(prev, j)
	}
	v.mu.Unlock()
	for _, ev := range events {
		v.cfg.Hub.Publish(ev)
	}
}

// jobEvents turns a record change into events; v.mu must be held. The
// watcher may skip revisions (the bucket keeps only the newest), so a job
// can first be seen already finished: every event is derived from the
// difference, with a job not seen before compared to a fresh one.
func (v *View) jobEvents(prev, j *job.Job) []event.Event {
	res := v.resource(j, v.runningByJob())
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

// index returns where j is or belongs in v.sorted.
func (v *View) index(j *job.Job) int {
	return sort.Search(len(v.sorted), func(i int) bool { return !less(v.sorted[i], j) })
}

func less(a, b *job.Job) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
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
	v.workers[e.Key] = worker{status: s, seen: time.Now()}
	changed := !known || !sameActivity(prev.status, s)
	var events []event.Event
	if changed {
		v.notify()
		if !initial {
			events = append(v.runningChanged(busyJob(prev.status), busyJob(s)), event.Event{Type: "worker.status", Data: v.shownStatus(s)})
		}
	}
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
	running := v.runningByJob()
	for _, id := range ids {
		if j, ok := v.jobs[id]; ok && id != "" && !j.State.Terminal() {
			out = append(out, event.Event{Type: "job.progress", Data: v.resource(j, running)})
		}
	}
	return out
}

// sameActivity reports whether two statuses differ only in their heartbeat.
func sameActivity(a, b job.WorkerStatus) bool {
	a.LastSeen, b.LastSeen = time.Time{}, time.Time{}
	if (a.TaskStartedAt == nil) != (b.TaskStartedAt == nil) || a.TaskStartedAt != nil && !a.TaskStartedAt.Equal(*b.TaskStartedAt) {
		return false
	}
	a.TaskStartedAt, b.TaskStartedAt = nil, nil
	return a == b
}

func (v *View) removeWorker(key string) {
	v.mu.Lock()
	w, ok := v.workers[key]
	var events []event.Event
	if ok {
		delete(v.workers, key)
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
			var gone []string
			v.mu.RLock()
			for k, w := range v.workers {
				if now.Sub(w.seen) > store.WorkerTTL {
					gone = append(gone, k)
				}
			}
			v.mu.RUnlock()
			for _, k := range gone {
				v.log.Warn("worker stopped heartbeating; forgetting it", "worker", k)
				v.removeWorker(k)
			}
		}
	}
}

// TasksStarted is the data of a task.started event: the tasks of one job
// that started since its previous event.
type TasksStarted struct {
	Job   string            `json:"job"`
	Tasks []job.TaskStarted `json:"tasks"`
}

const startedEvery = 100 * time.Millisecond

func (v *View) flushStarted(ctx context.Context) {
	t := time.NewTicker(startedEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v.startedMu.Lock()
		started := v.started
		if len(started) == 0 {
			v.startedMu.Unlock()
			continue
		}
		v.started = map[string][]job.TaskStarted{}
		v.startedMu.Unlock()
		v.mu.RLock()
		for id, tasks := range started {
			if j, ok := v.jobs[id]; ok && !j.ReadsData() {
				for i := range tasks {
					tasks[i].Phase = "" // a map-only job has no phase to show
				}
			}
		}
		v.mu.RUnlock()
		for id, tasks := range started {
			v.cfg.Hub.Publish(event.Event{Type: "task.started", Data: TasksStarted{Job: id, Tasks: tasks}})
		}
	}
}
