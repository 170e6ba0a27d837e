// Package worker runs tasks: it pulls them from the task queue, runs the
// kind's map function, publishes the result and acknowledges the task. The
// in-process workers of a server and a remote worker run this same code.
package worker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/metrics"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Config is what a Pool needs.
type Config struct {
	Store *store.Store
	// Datasets reads the blocks of map tasks' input.
	Datasets    *dataset.Store
	Kinds       *job.Registry
	Concurrency int
	// Name identifies the pool; its workers are keyed Name.0, Name.1, …
	Name   string
	Host   string
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// RetryBackoff is the wait before a failed task's second attempt; it
	// doubles with each attempt, up to a minute.
	RetryBackoff time.Duration
	// SortBuffer bounds the memory of one map task's output, in bytes;
	// the default shrinks to fit Concurrency buffers in half of
	// MemoryLimit (mr.SortBufferWithin).
	SortBuffer int64
	// MemoryLimit is the process's soft memory limit (0: none).
	MemoryLimit int64
	// TempDir holds map spills ("" means the system's).
	TempDir string
	// Modules runs the tasks of uploaded kinds (nil: the pool runs only
	// built-in kinds).
	Modules TaskKinds
	// Paused reports whether a kind is paused (nil: none is). A pool
	// starts no task of a paused kind: it holds the task (parks it) until
	// its job takes it out of the queue, or the kind resumes. Its job's
	// server takes the waiting tasks of a paused kind's jobs out of the
	// queue a job at a time; with thousands queued, that took seconds,
	// while workers went on starting them.
	Paused func(kind string) bool
	// PriorityAging bounds how long a lane of the queue (a priority) may
	// go without a task taken from it while higher lanes keep the pool
	// busy: past it, the pool's next fetch looks there first
	// (DefaultPriorityAging when zero).
	PriorityAging time.Duration
	// recheck is how often a pool of slow tasks looks again at the queue
	// without a worker's wake (fetchWait when zero): tests make it long,
	// so that a lost wake shows as a stall.
	recheck time.Duration
	// parkLimit is how long a task of a paused kind stays parked
	// (parkLimit when zero): tests make it short.
	parkLimit time.Duration
	// waitedLong is how long a fetched task may wait for a worker before
	// the pool asks whether it is still in the queue (leftQueue).
	waitedLong time.Duration
	// aloneWait is how long a task whose last runs were lost waits for the
	// pool's others to end before it runs beside them (alone.go; 0: a
	// minute).
	aloneWait time.Duration
	// storeAgainFor is how long results the store did not take are tried
	// again before their tasks run again (results.go; storeAgainFor when
	// zero).
	storeAgainFor time.Duration
	// storeAgainWait is the wait before the first try again (a second
	// when zero): tests make it short.
	storeAgainWait time.Duration
	// heldLong is how long a task of a fetch sized for fast tasks may wait
	// in the pool for a worker before it goes back to the queue (heldLong
	// when zero).
	heldLong time.Duration
	// failingWarnAfter is how long fetches fail before the pool warns
	// (fetchFailingWarnAfter when zero): tests change it.
	failingWarnAfter time.Duration
	// TaskTimeout bounds one attempt of a task (0: none for built-in
	// kinds, an hour for uploaded ones).
	TaskTimeout time.Duration
	// Room, when set, returns the bytes the store can still take: a task
	// whose output the store had no room for is not run again until it
	// has room for as much (Task.NoRoomBytes).
	Room func() (int64, error)
	// RoomWait is how long a task whose output the store has no room for
	// (store.ErrNoRoom) waits for room, running again now and then, before
	// it fails its job (DefaultRoomWait when zero).
	RoomWait time.Duration
	// abandonAfter is how long a task's code may run on once its context
	// ended (abandonAfter when zero): tests make it short.
	abandonAfter time.Duration
}

// abandonAfter is how long a task's code may run on once told to stop
// (its timeout, its job canceled, the worker stopping) before its worker
// gives it up. A built-in or uploaded kind stops at once; a kind compiled
// in that never looks at its context cannot be stopped in Go, only left:
// its attempt fails (or is given back, when the worker stops) and the
// worker goes on, while the code runs on in the process.
const abandonAfter = 10 * time.Second

// TaskKinds gives the kind of a task of an uploaded kind: its pinned
// module's, on an instance that release frees.
type TaskKinds interface {
	TaskKind(ctx context.Context, t job.Task) (k job.Kind, release func(), err error)
}

// uploadedTimeout bounds a task of an uploaded kind by default.
const uploadedTimeout = time.Hour

// Pool is a set of workers sharing one task subscription.
type Pool struct {
	cfg  Config
	log  *slog.Logger
	rep  *reporter
	keys []string // worker i's key in the workers bucket

	hardCtx    context.Context // canceled to abandon running tasks
	hardCancel context.CancelFunc
	// leaveCtx parents the pool's calls to the store: canceled leaveGrace
	// past the deadline of its stop, so that a stop ends within that
	// grace of its deadline even when the store does not answer.
	leaveCtx    context.Context
	leaveCancel context.CancelFunc
	stopOnce    sync.Once
	repCancel   context.CancelFunc
	// replaced receives a *ReplacedError once another process took this
	// pool's name (Replaced).
	replaced  chan error
	unsubs    []func()
	wg        sync.WaitGroup
	repWG     sync.WaitGroup
	results   chan finished
	resultsWG sync.WaitGroup
	// resultsMu orders the close of results, when the pool stops, with
	// the sends of the goroutine that stores them (retry), which go on
	// after it: resultsClosed says it is closed.
	resultsMu     sync.Mutex
	resultsClosed bool

	pace     pace
	lanes    lanes         // when each priority lane last gave a task
	assigned atomic.Int32  // tasks handed to workers (running or in the channel)
	taken    atomic.Int64  // when a worker last took a task from the channel (unix ns)
	idleWake chan struct{} // a worker became idle
	ackWait  time.Duration
	// released are the statuses of dead processes' workers whose tasks
	// this pool gave back at its start (releaseDeadRuns).
	releasedMu sync.Mutex
	released   []job.WorkerStatus
	env        *mr.Env

	startedMu   sync.Mutex
	startedBuf  map[string][]job.TaskStarted
	startedWake chan struct{}
	stopping    chan struct{}
	stopCtx     context.Context // canceled when stopping is closed
	stopCancel  context.CancelFunc

	laterMu      sync.Mutex
	waiting      map[*time.Timer]func() // retries held before they are queued again, results to store again (after)
	laterStopped bool
	laterWG      sync.WaitGroup

	// tasks is the workers' channel; alone holds the other tasks off
	// while a suspect runs (alone.go).
	tasks chan *lease
	alone alone

	parkMu sync.Mutex
	parked map[*lease]parkedTask // fetched tasks of paused kinds, not started

	mu       sync.Mutex
	running  map[string]map[int]runningTask // job id → worker index → its task
	canceled map[string]canceledJob         // jobs told to stop
	// noticesFrom is when the pool subscribed to cancel notices: it may
	// not have heard of a cancel before then (Pool.unheard).
	noticesFrom time.Time
	// held maps the sequence of each task message the pool holds to its
	// lease, from its fetch to its ack or release; acked holds the
	// sequences of the last messages it acked, oldest first in
	// ackedRing. A delivery of a message held or acked here, made
	// because its lease ran out while the pool still had it (the process
	// was paused, or starved of CPU), is not run again.
	held      map[uint64]*lease
	acked     map[uint64]struct{}
	ackedRing []uint64
}

// hold registers l as the pool's lease of its message, unless the pool
// holds an earlier delivery of it (see track).
func (p *Pool) hold(l *lease) {
	seq := l.msg().Seq()
	if seq == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.held[seq]; !ok {
		p.held[seq] = l
	}
}

// let forgets l once it ended, acked or not.
func (p *Pool) let(l *lease, seq uint64, acked bool) {
	if seq == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[seq] == l {
		delete(p.held, seq)
	}
	if !acked {
		return
	}
	if len(p.ackedRing) == ackedKept {
		delete(p.acked, p.ackedRing[0])
		p.ackedRing = p.ackedRing[1:]
	}
	p.acked[seq] = struct{}{}
	p.ackedRing = append(p.ackedRing, seq)
}

// ackedKept is how many acked messages a pool remembers.
const ackedKept = 4096

// New returns a pool; Start starts its workers.
func New(cfg Config) *Pool {
	if cfg.parkLimit <= 0 {
		cfg.parkLimit = parkLimit
	}
	if cfg.waitedLong <= 0 {
		cfg.waitedLong = waitedLong
	}
	if cfg.failingWarnAfter <= 0 {
		cfg.failingWarnAfter = fetchFailingWarnAfter
	}
	if cfg.heldLong <= 0 {
		cfg.heldLong = heldLong
	}
	if cfg.aloneWait <= 0 {
		cfg.aloneWait = aloneWait
	}
	if cfg.storeAgainFor <= 0 {
		cfg.storeAgainFor = storeAgainFor
	}
	if cfg.storeAgainWait <= 0 {
		cfg.storeAgainWait = time.Second
	}
	if cfg.recheck <= 0 {
		cfg.recheck = fetchWait
	}
	p := &Pool{
		cfg:         cfg,
		log:         cfg.Logger.With("pool", cfg.Name),
		running:     map[string]map[int]runningTask{},
		held:        map[uint64]*lease{},
		parked:      map[*lease]parkedTask{},
		acked:       map[uint64]struct{}{},
		canceled:    map[string]canceledJob{},
		waiting:     map[*time.Timer]func(){},
		stopping:    make(chan struct{}),
		startedBuf:  map[string][]job.TaskStarted{},
		startedWake: make(chan struct{}, 1),
		idleWake:    make(chan struct{}, 1),
		replaced:    make(chan error, 1),
		rep: &reporter{
			kv:        cfg.Store.Workers,
			interval:  100 * time.Millisecond,
			heartbeat: store.WorkerTTL / 3,
			status:    make([]job.WorkerStatus, cfg.Concurrency),
			dirty:     make([]bool, cfg.Concurrency),
		},
	}
	p.stopCtx, p.stopCancel = context.WithCancel(context.Background())
	p.alone.cond = sync.NewCond(&p.alone.mu)
	context.AfterFunc(p.stopCtx, func() {
		p.alone.mu.Lock()
		defer p.alone.mu.Unlock()
		p.alone.cond.Broadcast() // a suspect waiting to run alone gives its task back
	})
	p.leaveCtx, p.leaveCancel = context.WithCancel(context.Background())
	p.rep.leave = p.leaveCtx
	sortBuffer := mr.SortBufferWithin(cfg.SortBuffer, cfg.MemoryLimit, cfg.Concurrency)
	if sortBuffer != cfg.SortBuffer {
		p.log.Info("map tasks spill their output past a smaller buffer than the default, so that the workers' buffers fit in half the memory limit; raise --"+flags.MemoryLimit+" or set --"+flags.SortBuffer+" to change it",
			"sort_buffer_mib", sortBuffer>>20, "workers", cfg.Concurrency, "memory_limit_mib", cfg.MemoryLimit>>20)
	}
	p.env = &mr.Env{Open: cfg.Datasets.Open, Shuffle: cfg.Store.Shuffle, Output: cfg.Store.Output, SortBuffer: sortBuffer, TempDir: cfg.TempDir, Log: p.log}
	now := time.Now().UTC()
	for i := range p.rep.status {
		p.keys = append(p.keys, fmt.Sprintf("%s.%d", cfg.Name, i))
		p.rep.status[i] = job.WorkerStatus{Key: p.keys[i], Pool: cfg.Name, Index: i, Host: cfg.Host, PID: os.Getpid(), PIDNS: pidNamespace(), StartedAt: now}
		p.rep.dirty[i] = true
	}
	return p
}

// Start subscribes to the task queue and starts the workers.
func (p *Pool) Start(ctx context.Context) error {
	// A running task tells the queue it is alive every third of the
	// queue's ack wait, which the server that created it decided.
	var info store.StreamInfo
	err := store.Retry(ctx, 30*time.Second, func(ctx context.Context) (err error) {
		info, err = p.cfg.Store.Tasks.Info(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the task queue: %w", err)
	}
	p.ackWait = info.AckWait
	p.noticesFrom = time.Now()
	unsub, err := p.cfg.Store.Notices.OnCancelJob(p.cancelJob)
	if err != nil {
		return fmt.Errorf("subscribe to cancel notices: %w", err)
	}
	p.unsubs = append(p.unsubs, unsub)
	if unsub, err = p.cfg.Store.Notices.OnStopTask(p.stopTask); err != nil {
		p.unsubscribe()
		return fmt.Errorf("subscribe to task stop notices: %w", err)
	}
	p.unsubs = append(p.unsubs, unsub)
	if err := p.nameFree(ctx); err != nil {
		p.unsubscribe()
		return err
	}
	p.releaseDeadRuns(ctx)
	// Announce the workers before taking work, so that a server that
	// started is seen with all its workers.
	// Retried for a while: a server that just rejoined its cluster may
	// find the bucket's leader being elected.
	ferr := store.Retry(ctx, 30*time.Second, func(ctx context.Context) error {
		return p.rep.flush(ctx, true, time.Now())
	})
	if ferr != nil {
		p.unsubscribe()
		return fmt.Errorf("announce workers: %w", ferr)
	}
	p.lanes.init(time.Now())
	p.hardCtx, p.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	var repCtx context.Context
	repCtx, p.repCancel = context.WithCancel(context.WithoutCancel(ctx))
	p.repWG.Go(func() { p.sendStarted(repCtx.Done()) })
	p.repWG.Go(func() {
		p.rep.run(repCtx, func(err error) {
			if _, ok := errors.AsType[*ReplacedError](err); ok {
				p.log.Error("another process runs a pool of workers of this name, having taken this one for dead while it was paused or cut off: this one stops", "err", err)
				p.replaced <- err
				return
			}
			p.log.Warn("could not report worker status; is NATS reachable?", "err", err)
		})
	})
	p.repWG.Go(func() { p.cleanTemp(repCtx.Done()) })
	p.repWG.Go(func() { p.stopEnded(repCtx.Done()) })
	p.results = make(chan finished, maxResultBatch)
	p.resultsWG.Go(p.publishResults)
	// A buffer lets the next fetch overlap the work on the previous one.
	tasks := make(chan *lease, p.cfg.Concurrency)
	p.tasks = tasks
	var feeders sync.WaitGroup
	for f := range fetchers {
		feeders.Go(func() { p.feed(f, tasks) })
	}
	p.wg.Go(func() {
		feeders.Wait()
		close(tasks)
	})
	for i := range p.cfg.Concurrency {
		p.wg.Go(func() { p.work(i, tasks) })
	}
	if p.cfg.Paused != nil {
		p.wg.Go(p.tendParked)
	}
	p.log.Info("workers started", "workers", p.cfg.Concurrency, "host", p.cfg.Host,
		"tasks_waiting", info.Waiting, "tasks_in_progress", info.Leased, "ack_wait", p.ackWait)
	return nil
}

func (p *Pool) work(i int, tasks <-chan *lease) {
	for l := range tasks {
		p.taken.Store(time.Now().UnixNano())
		select {
		case <-p.stopping:
			// The feeder's select may pick a worker over the stop.
			p.giveBack(l)
		default:
			p.run(i, l)
		}
		p.assigned.Add(-1)
		p.handedBack()
		select {
		case p.idleWake <- struct{}{}:
		default:
		}
	}
}

// run runs one task from start to acknowledgement. Only the task's own
// failures count toward its job's --max-attempts: a run whose worker died
// before it ended (the queue delivers the task again) is recorded as lost,
// and one under which the store failed as interrupted; both run again.
func (p *Pool) run(i int, l *lease) {
	t, err := taskOf(l.msg())
	if err != nil {
		p.log.Error("dropping an unreadable task message; it was not written by this version of mrcluster", "job", l.msg().Key(), "err", err)
		l.release()
		_ = l.msg().Term()
		return
	}
	delivered := l.delivered()
	attempt := t.Runs + delivered
	// The run's log, made when a line is written: most runs write none,
	// and a With a run was 1.5 % of small jobs' allocations.
	var runLog *slog.Logger
	log := func() *slog.Logger {
		if runLog == nil {
			runLog = p.log.With("job", t.Job, "phase", t.Phase, "partition", t.Partition, "attempt", attempt, "worker", i)
		}
		return runLog
	}
	if p.cfg.Paused != nil && p.cfg.Paused(t.Kind) {
		p.park(l, t)
		log().Debug("a task of a paused kind is held here, not started, until its job takes it out of the queue or the kind resumes")
		return
	}
	if p.leftQueue(l) {
		log().Info("a task fetched with others left the queue while it waited here for a worker (its kind was paused or moved lanes, its job ended, or another delivery of it finished); it is not run: its job queues it again when it wants it")
		l.ack()
		return
	}
	if t.Backup && p.needless(t) {
		log().Info("a backup copy of a slow task is not run: the task finished, or its job ended, while the copy waited in the queue")
		l.ack()
		return
	}
	ctx, cancel := context.WithCancelCause(p.hardCtx)
	defer cancel(nil)
	switch p.track(t, i, cancel, l) {
	case ended:
		l.ack() // the job ended: drop its task
		return
	case done:
		log().Info("the queue delivered again a task this pool has just finished (its lease ran out while the process was paused or starved); it is not run again")
		l.ack()
		return
	case adopted:
		// The queue delivered again a message whose earlier delivery the
		// pool still holds (running, its result being stored, or waiting
		// for a retry): its lease was not renewed in time (the process
		// was paused, or starved of CPU). The earlier delivery's lease
		// answers for this one; a second run would be for nothing.
		log().Info("the queue delivered again a task this pool holds (its lease ran out while the process was paused or starved); the attempt under way answers for it")
		return
	}
	defer p.untrack(t.Job, i)
	if lost := t.Lost + delivered - 1; lost >= suspectLostRuns && (t.MaxLostRuns <= 0 || lost < t.MaxLostRuns) && p.cfg.Concurrency > 1 {
		shown := t.Job
		if t.Member != "" {
			shown = t.Member
		}
		alone := p.beAlone(func(busy int) {
			p.rep.set(i, func(s *job.WorkerStatus) { s.WaitsAlone = shown })
			log().Info("this task's last runs in a row ended with their worker lost: it runs alone in its pool, so that if it is what kills the process no other task is lost with it; the pool lets the tasks under way end, gives back those it holds and fetches none until it ends",
				"lost_runs", lost, "waits_for", busy)
		}, func(busy int) {
			log().Warn("a task whose last runs were lost with their worker waited for its pool's other tasks to end, in vain: it runs beside them, and if it takes the process down they are lost with it",
				"lost_runs", lost, "waited", p.cfg.aloneWait, "beside", busy)
		})
		p.rep.set(i, func(s *job.WorkerStatus) { s.WaitsAlone = "" })
		if !alone {
			log().Debug("a task whose last runs were lost with their worker waits in the queue while another such task runs alone here", "lost_runs", lost)
			l.gate() // counted until its give-back ends: stored, tried again, or given up
			p.giveBack(l)
			return
		}
		defer p.unalone()
	} else {
		if !p.enter() {
			log().Debug("a task goes back to the queue: a task whose last runs were lost with their worker runs alone in this pool")
			// Counted until its give-back ends (its lease acked or let
			// go, after tries again if the store does not take it): the
			// suspect waits for it to be back in the queue.
			l.gate()
			p.giveBack(l)
			return
		}
		// Counted until its lease ends (its result stored, or it went
		// back), or it waits for a retry: a suspect that started while
		// its result was on its way would take it down too.
		l.gate()
	}

	start := time.Now().UTC()
	worker := p.keys[i]
	t.Carried = job.Carry(t.Carried, p.noteLost(t, delivered)...)
	if lost := t.Lost + delivered - 1; t.MaxLostRuns > 0 && lost >= t.MaxLostRuns {
		p.poisoned(i, l, t, attempt, lost, log())
		return
	}
	notice := job.TaskStarted{Job: t.Job, Member: t.Member, Partition: t.Partition, Phase: t.Phase, Attempt: attempt, Worker: worker, StartedAt: start}
	p.noteStarted(notice)
	p.rep.set(i, func(s *job.WorkerStatus) {
		s.Busy, s.JobID, s.Partition, s.Phase, s.Attempt, s.TaskStartedAt = true, t.Job, t.Partition, t.Phase, attempt, &start
		s.Member = t.Member
		s.Epoch, s.Backup, s.Lease = t.Epoch, t.Backup, l.msg().Lease()
	})
	progress := &job.Progress{}
	p.rep.track(i, progress)
	ctx = job.WithProgress(ctx, progress)
	value, out, err := int64(0), (*mr.Outcome)(nil), p.stillNoRoom(t)
	if err == nil {
		value, out, err = p.call(ctx, t)
	}
	p.unnoteStarted(notice)
	ran := time.Since(start)
	p.pace.observe(ran)

	switch {
	case p.hardCtx.Err() != nil:
		// The worker is being stopped hard: give the task back.
		p.giveBack(l)
		p.idle(i, false)
		return
	case errors.Is(context.Cause(ctx), errStopped):
		// Another copy of the task (a backup, a delivery again after a
		// pause) finished first and counts: this run says so in the
		// history, which otherwise showed nothing of it.
		p.results <- finished{result: job.TaskResult{Job: t.Job, Partition: t.Partition, Attempt: attempt, Worker: worker, StartedAt: start,
			FinishedAt: time.Now().UTC(), Phase: t.Phase, Backup: t.Backup, Failures: t.Failures, Epoch: t.Epoch,
			Outcome: job.OutcomeStopped, Error: "stopped: another copy of this task finished first, and its result counts"}, shared: t.LogInRecord}
		l.ack()
		p.idle(i, false)
		return
	case ctx.Err() != nil:
		// The job ended while the task ran.
		l.ack()
		p.idle(i, false)
		return
	}
	r := job.TaskResult{Job: t.Job, Partition: t.Partition, Attempt: attempt, Worker: worker, Value: value, StartedAt: start,
		FinishedAt: time.Now().UTC(), Phase: t.Phase, Backup: t.Backup, Failures: t.Failures, Epoch: t.Epoch}
	next := t
	next.Runs, next.Lost, next.NoRoomSince, next.NoRoomBytes = attempt, 0, 0, 0 // this run ended with a word
	var storeErr *job.StoreError
	switch {
	case errors.Is(err, mr.ErrMissingInput):
		if p.jobEnded(t.Job) {
			log().Debug("dropping a task of a job that has ended; its inputs are gone", "err", err)
			l.ack()
			p.idle(i, false)
			return
		}
		r.Unretried = true
		if again, ok := lostMap(&r, t, err); ok {
			err = fmt.Errorf("%w (deleted or lost from the store); %s", err, again)
			break
		}
		// The input will not come back: the job cannot finish.
		err = fmt.Errorf("%w (deleted or lost from the store); the job cannot finish: submit it again", err)
	case errors.Is(err, store.ErrDamaged):
		// Read again, a damaged input is damaged again: never a failure
		// of the store to run the task again for (it looped for ever).
		r.Unretried = true
		if again, ok := lostMap(&r, t, err); ok {
			log().Error("the output of a map task is damaged in the store; the map tasks whose outputs were lost run again", "err", err, "lost", 1+len(r.MoreLost))
			err = fmt.Errorf("%w; %s", err, again)
			break
		}
		log().Error("an input of the task is damaged in the store; the job cannot finish", "err", err)
		err = fmt.Errorf("%w; the job cannot finish: submit it again", err)
	case errors.Is(err, job.ErrSkipRetry) || errors.Is(err, dataset.ErrLineTooLong):
		// The kind said so, or the input is what it is: another attempt
		// would fail the same way.
		r.Unretried = true
	case localDiskFull(err):
		// Not the task's fault: it runs again, maybe on another worker
		// (the task goes back to the queue), once the operator has freed
		// space; counted as a failure, a job failed in seconds on one
		// worker's full disk.
		delay := diskFullDelay(attempt - t.Failures)
		log().Error("the disk of this worker's --temp-dir is full; the task will run again, here or on another worker, without counting as a failed attempt: free space there",
			"temp_dir", mr.TempDir(p.cfg.TempDir), "err", err, "retry_in", delay)
		p.interrupted(i, l, r, t, next, err, delay)
		return
	case errors.As(err, &storeErr) && errors.Is(err, store.ErrNoRoom):
		if next.NoRoomSince = t.NoRoomSince; next.NoRoomSince == 0 {
			// The wait for room starts now, as the store refused: not
			// when the run began (a run longer than the wait failed its
			// job at its first refusal, never having waited).
			next.NoRoomSince = time.Now().UnixMilli()
		}
		next.NoRoomBytes = t.NoRoomBytes
		if refused := (*store.NoRoomError)(nil); errors.As(err, &refused) {
			next.NoRoomBytes = refused.Size
		}
		waited, wait := time.Since(time.UnixMilli(next.NoRoomSince)), p.roomWait()
		if waited < wait {
			delay := min(roomDelay(attempt-t.Failures), wait-waited)
			log().Error("the store has no room for the task's output; the task waits for room and runs again, without counting as a failed attempt: delete datasets or finished jobs (mrcluster delete), or give the data directory more disk",
				"err", err, "retry_in", delay, "fails_in", (wait - waited).Round(time.Second))
			p.interrupted(i, l, r, t, next, err, delay)
			return
		}
		r.Unretried = true
		err = fmt.Errorf("the store has had no room for the task's output for %v (%w): the job fails, and what it stored leaves the store; "+
			"delete datasets or finished jobs, or give the server's data directory more disk, then run the job again", waited.Round(time.Second), err)
	case errors.As(err, &storeErr):
		delay := p.backoff(1)
		log().Warn("the data store failed under the task; it will run again, without counting as a failed attempt", "err", err, "retry_in", delay)
		p.interrupted(i, l, r, t, next, err, delay)
		return
	}
	p.cfg.Metrics.WorkerTask(t.Kind, ran, err != nil)
	if err != nil {
		r.Failures++
		r.Error = job.ClipError(err.Error())
	}
	if err != nil && !r.Unretried && r.Failures < t.MaxAttempts {
		delay := p.backoff(r.Failures)
		log().Warn("task failed; it will be retried", "err", err, "failures", r.Failures, "max_attempts", t.MaxAttempts, "retry_in", delay)
		r.Outcome = job.OutcomeFailed
		p.results <- finished{result: r, shared: t.LogInRecord}
		next.Failures = r.Failures
		next.Carried = job.Carry(next.Carried, r)
		p.later(l, delay, next)
		p.idle(i, true)
		return
	}
	if out != nil && err == nil {
		r.Commit, r.Counters, r.Preview, r.PartBytes = out.Commit, &out.Counters, out.Preview, out.PartBytes
	}
	if err != nil {
		log().Warn("task failed on its last attempt; its job fails", "err", err, "failures", r.Failures, "max_attempts", t.MaxAttempts)
	}
	p.results <- finished{result: r, carried: t.Carried, lease: l, shared: t.LogInRecord}
	p.idle(i, err != nil)
}

// poisoned fails task t without running it: its last lost runs in a row,
// attempt's the next, ended with their worker lost (t.MaxLostRuns of them).
// Whatever took those workers down (the out-of-memory killer, a crash in
// native code, a machine that reboots) may well be the task itself, and it
// would take down every worker it reaches, for ever, with the tasks beside
// it; a job is failed rather than the cluster (Sidekiq Pro's poison pills).
func (p *Pool) poisoned(i int, l *lease, t job.Task, attempt, lost int, log *slog.Logger) {
	now := time.Now().UTC()
	err := fmt.Errorf("its last %d runs in a row ended with their worker lost (the process crashed or was killed, by the out-of-memory killer for one, or was cut off or paused past its lease): "+
		"the task may be what kills its workers, so it is not run again (the server's --%s %d); look at the workers' logs and memory, then retry the job", lost, flags.MaxLostRuns, t.MaxLostRuns)
	log.Error("a task was lost with its worker too many times in a row; its job fails", "lost_runs", lost, "kind", t.Kind)
	p.cfg.Metrics.WorkerTask(t.Kind, 0, true)
	r := job.TaskResult{Job: t.Job, Partition: t.Partition, Attempt: attempt, Worker: p.keys[i], StartedAt: now, FinishedAt: now,
		Phase: t.Phase, Backup: t.Backup, Failures: t.Failures + 1, Epoch: t.Epoch, Unretried: true, Error: job.ClipError(err.Error())}
	p.results <- finished{result: r, carried: t.Carried, lease: l, shared: t.LogInRecord}
	p.idle(i, true)
}

// interrupted records r, the result of task t, as interrupted by err (not
// a failure of the task) and queues next after delay, carrying the record
// (a store that failed under the task may well refuse it now).
func (p *Pool) interrupted(i int, l *lease, r job.TaskResult, t, next job.Task, err error, delay time.Duration) {
	r.Outcome, r.Error = job.OutcomeInterrupted, job.ClipError(err.Error())
	p.results <- finished{result: r, shared: t.LogInRecord}
	next.Carried = job.Carry(next.Carried, r)
	p.later(l, delay, next)
	p.idle(i, false)
}

// stillNoRoom returns a store error when task t's last output did not fit
// in the store and still does not: t is then not run, since its code
// would make the same output for nothing (a reduce of minutes, every
// minute, for the half hour of its wait).
func (p *Pool) stillNoRoom(t job.Task) error {
	if t.NoRoomBytes <= 0 || p.cfg.Room == nil {
		return nil
	}
	room, err := p.cfg.Room()
	if err != nil || room >= t.NoRoomBytes {
		return nil
	}
	return &job.StoreError{Err: fmt.Errorf("not run: the store has room for %d bytes, and the task's last output was %d (%w)", max(room, 0), t.NoRoomBytes, store.ErrNoRoom)}
}

// DefaultRoomWait is how long a task waits for the store to have room for
// its output (Config.RoomWait) before it fails its job, whose data then
// leaves the store. Waiting, not failing at once: space freed meanwhile (a
// deletion, retention, another job's data deleted as it ends) lets the job
// finish. Not for good: an output larger than the store can ever hold would
// keep its job running, and the store full, until someone noticed.
const DefaultRoomWait = 30 * time.Minute

func (p *Pool) roomWait() time.Duration {
	if p.cfg.RoomWait > 0 {
		return p.cfg.RoomWait
	}
	return DefaultRoomWait
}

// roomDelay is how long a task the store had no room for waits before it
// runs again, after runs attempts that did not fail: 5 s, doubling up to a
// minute. Shorter than a full --temp-dir's: the store's room comes back
// when anyone deletes data, and a run that meets none costs a question of
// the room, not a write (store.Roomy), but each adds to the job's history.
func roomDelay(runs int) time.Duration {
	return min(5*time.Second<<min(max(runs-1, 0), 4), time.Minute)
}

// diskFullDelay is how long a task interrupted by a full --temp-dir waits
// before it is queued again, after runs attempts that did not fail: 10 s,
// doubling up to 2 minutes (a task too large for every worker's disk runs
// on until an operator acts, and each run adds to its job's history).
func diskFullDelay(runs int) time.Duration {
	return min(10*time.Second<<min(max(runs-1, 0), 4), 2*time.Minute)
}

// localDiskFull reports whether err is a write to a full local disk (or
// past a quota): a map's spills, a reduce's inputs or staged output.
func localDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// lostMap marks r, the result of task t, as a reduce that could not read
// the outputs of map tasks (err names them), which its job runs again;
// again says which run again.
func lostMap(r *job.TaskResult, t job.Task, err error) (again string, ok bool) {
	var in *mr.InputError
	if t.Phase != job.PhaseReduce || !errors.As(err, &in) || in.Index < 0 || in.Index >= len(t.Maps) {
		return "", false
	}
	r.LostMap, r.LostCommit = in.Index+1, t.Maps[in.Index]
	names := []string{strconv.Itoa(in.Index)}
	for _, m := range in.Lost {
		if m != in.Index && m >= 0 && m < len(t.Maps) && len(r.MoreLost) < maxLostReported {
			r.MoreLost = append(r.MoreLost, job.LostOutput{Map: m + 1, Commit: t.Maps[m]})
			names = append(names, strconv.Itoa(m))
		}
	}
	switch n := len(names); {
	case n == 1:
		return "the map task runs again", true
	case n > maxLostNamed:
		return fmt.Sprintf("map tasks %s and %d more, whose outputs are lost, run again", strings.Join(names[:maxLostNamed], ", "), n-maxLostNamed), true
	}
	return fmt.Sprintf("map tasks %s and %s, whose outputs are lost, run again", strings.Join(names[:len(names)-1], ", "), names[len(names)-1]), true
}

// A reduce's result names at most maxLostReported lost map outputs besides
// the first (a job may have 50,000 maps, and a result must fit in one
// message: the others are found in the next round), and its message at
// most maxLostNamed of them.
const (
	maxLostReported = 1000
	maxLostNamed    = 10
)

// jobEnded reports whether job id has ended or is gone; a store that does
// not answer says no.
func (p *Pool) jobEnded(id string) bool {
	j, err := p.record(id)
	if errors.Is(err, store.ErrNotFound) {
		return true
	}
	return err == nil && j.State.Terminal()
}

// record reads job id's record.
func (p *Pool) record(id string) (*job.Job, error) {
	ctx, cancel := p.storeCall(mr.StoreCallTimeout)
	defer cancel()
	j, _, err := p.cfg.Store.Jobs.Get(ctx, id)
	return j, err
}

// needless reports whether the job's record shows that task t, a backup
// copy, has nothing left to do: its job ended or was retried, or another
// copy finished it. A store that does not answer, or a record not found (a
// replica behind), says no: the copy runs, and its result counts once.
func (p *Pool) needless(t job.Task) bool {
	j, err := p.record(t.Job)
	if err != nil {
		return false
	}
	return j.Epoch > t.Epoch || j.Epoch == t.Epoch && (j.State.Terminal() || j.TaskDone(t.Phase, t.Partition))
}

// backoff is the wait before the attempt after the given one.
func (p *Pool) backoff(attempt int) time.Duration {
	d := p.cfg.RetryBackoff
	if d <= 0 {
		d = time.Second
	}
	for range attempt - 1 {
		if d *= 2; d >= time.Minute {
			return time.Minute
		}
	}
	return d
}

// later queues task t again after delay, in place of the leased message,
// which stays leased meanwhile: the wait before a retry is held by this
// pool, not by the queue, whose delayed redeliveries live in the NATS
// server's memory and are not told apart from a lost worker's. A pool
// that stops queues its waiting retries at once; a pool that dies leaves
// the message to be delivered again after the ack wait, as a lost run.
func (p *Pool) later(l *lease, delay time.Duration, t job.Task) {
	// A retry held here does not hold a suspect back (alone.go): it may be
	// lost with it.
	l.ungate()
	if !p.after(delay, func() { p.requeue(l, t) }) {
		p.laterWG.Go(func() { p.requeue(l, t) })
	}
}

// after calls fn after delay, or when the pool stops if that comes first
// (flushLater), and reports true; a pool stopping already calls nothing
// and reports false.
func (p *Pool) after(delay time.Duration, fn func()) bool {
	p.laterMu.Lock()
	defer p.laterMu.Unlock()
	if p.laterStopped {
		return false
	}
	var tm *time.Timer
	tm = time.AfterFunc(delay, func() {
		p.laterMu.Lock()
		_, mine := p.waiting[tm]
		delete(p.waiting, tm)
		if mine {
			p.laterWG.Add(1) // before flushLater's Wait: it takes laterMu first
		}
		p.laterMu.Unlock()
		if mine {
			defer p.laterWG.Done()
			fn()
		}
	})
	p.waiting[tm] = fn
	return true
}

// flushLater calls every function waiting in after now and waits for them,
// and for those whose time came as the pool stopped.
func (p *Pool) flushLater() {
	p.laterMu.Lock()
	p.laterStopped = true
	var now []func()
	for tm, fn := range p.waiting {
		// Whether its timer fired or not: one whose callback has not
		// taken laterMu yet finds itself gone, and calls nothing.
		tm.Stop()
		now = append(now, fn)
		delete(p.waiting, tm)
	}
	p.laterMu.Unlock()
	for _, fn := range now {
		fn()
	}
	p.laterWG.Wait()
}

// requeue publishes t as a new task message and acks the leased one. When
// the publish fails, the lease is let go: the message comes back after the
// ack wait (and its run is then counted as lost, the safe side). When the
// leased message has left the queue meanwhile, its job took its tasks out
// (its kind paused, the job canceled or failed): the copy would run
// against that, so it is not queued.
func (p *Pool) requeue(l *lease, t job.Task) {
	ctx, cancel := p.storeCall(mr.StoreCallTimeout)
	defer cancel()
	if held, err := p.cfg.Store.Tasks.Holds(ctx, queueSeq(l.msg())); err == nil && !held {
		p.log.Info("a task to run again left the queue while it waited (its kind was paused, or its job ended); it is not queued again: its job queues it when it wants it",
			"job", t.Job, "phase", t.Phase, "partition", t.Partition)
		l.ack()
		return
	}
	msgs, err := store.TaskMessages([]job.Task{t}, false)
	if err == nil {
		msgs[0].ID = copyID("again", l, t)
		err = p.cfg.Store.Tasks.Publish(ctx, msgs[0])[0]
	}
	if err != nil {
		if again, before := p.holdOn(l, func() { p.requeue(l, t) }); again {
			if before == 0 {
				p.log.Warn("could not queue a task again; trying again in a while, the task is held here meanwhile", "job", t.Job, "phase", t.Phase, "partition", t.Partition, "err", err)
			}
			return
		}
		p.log.Warn("could not queue a task again; it comes back after the ack wait", "job", t.Job, "phase", t.Phase, "partition", t.Partition, "err", err)
		l.release()
		return
	}
	l.ack()
}

const (
	// waitedLong is how long a fetched task may wait in the pool for a
	// worker before the pool asks whether it is still in the queue
	// before running it.
	waitedLong = time.Second
	// heldLong is how long a task fetched for fast tasks may wait in the
	// pool for a worker before it goes back to the queue, for others: the
	// fetch was sized for a batch's budget of the tasks' run time
	// (batchBudget), so a second is fifty times what it was sized for.
	heldLong = time.Second
	// leftQueueTimeout bounds that question: a store that does not answer
	// (an election) delays the task's start by no more.
	leftQueueTimeout = 2 * time.Second
)

// leftQueue reports whether the message l holds, fetched more than
// waitedLong ago and not started yet, has left the queue meanwhile: its
// job took its waiting tasks out (its kind paused, or moved to a lane of
// its own; the job canceled or failed) and will queue them again when it
// wants them. A pool of fast tasks fetches many at once, and one slow task
// among them makes the others wait; they ran during a pause. A task that
// did not wait is not asked about (one request per task would halve a
// pool's rate), nor is one when the store does not answer within
// leftQueueTimeout.
func (p *Pool) leftQueue(l *lease) bool {
	return time.Since(l.at) >= p.cfg.waitedLong && p.gone(p.leaveCtx, l)
}

// gone reports whether the message l holds has left the queue, asking
// the queue within leftQueueTimeout: false when it does not answer.
func (p *Pool) gone(ctx context.Context, l *lease) bool {
	ctx, cancel := context.WithTimeout(ctx, leftQueueTimeout)
	defer cancel()
	held, err := p.cfg.Store.Tasks.Holds(ctx, queueSeq(l.msg()))
	return err == nil && !held
}

// giveBackAll gives ls back, those of one message (a bundle's parts) with
// one call of giveBack each.
func (p *Pool) giveBackAll(ls []*lease) {
	for len(ls) > 0 {
		n := 1
		for n < len(ls) && queueSeq(ls[n].msg()) == queueSeq(ls[0].msg()) {
			n++
		}
		p.giveBack(ls[:n]...)
		ls = ls[n:]
	}
}

// giveBack returns tasks the pool will not run to the queue, durably: a
// copy of each is published, then the original acked. (A nak is not
// enough: the server keeps naks in memory, so after a restart a naked task
// would wait a whole ack wait.) A crash between the two leaves a
// duplicate, which the coordinator ignores. Several leases given back at
// once are the parts of one bundle: one look whether it is still queued,
// one publish for their copies.
func (p *Pool) giveBack(ls ...*lease) {
	ctx, cancel := p.storeCall(5 * time.Second)
	defer cancel()
	if held, err := p.cfg.Store.Tasks.Holds(ctx, queueSeq(ls[0].msg())); err == nil && !held {
		// Taken out of the queue meanwhile (see requeue).
		for _, l := range ls {
			l.ack()
		}
		p.log.Debug("a task to give back had left the queue; not queued again", "job", ls[0].msg().Key(), "tasks", len(ls))
		return
	}
	msgs := make([]store.Message, len(ls))
	for i, l := range ls {
		msgs[i] = p.copyBack(l)
	}
	for i, err := range p.cfg.Store.Tasks.Publish(ctx, msgs...) {
		if err != nil {
			l := ls[i]
			if again, before := p.holdOn(l, func() { p.giveBack(l) }); again {
				if before == 0 {
					p.log.Warn("could not give a task back to the queue; trying again in a while, the task is held here meanwhile", "job", msgs[i].Key, "err", err)
				}
				continue
			}
			p.log.Warn("could not give a task back to the queue; it is delivered again, as a lost run", "job", msgs[i].Key, "err", err)
			l.release()
			_ = l.msg().Nak(0)
			continue
		}
		ls[i].ack()
		p.log.Debug("gave a task back to the queue", "job", msgs[i].Key)
	}
}

// copyID names the copy of l's task t that a pool publishes in place of
// l's message (what: why), the same each time the pool tries: a copy the
// store took without a word (its server paused, a leader changed) is not
// stored twice when the pool publishes it again within the store's
// window of duplicates (two minutes), so the task does not run twice.
func copyID(what string, l *lease, t job.Task) string {
	d := l.msg()
	return what + "." + strconv.FormatUint(queueSeq(d), 10) + "." + strconv.Itoa(d.Delivered()) + "." + t.Job + "." + string(t.Phase) + "." + strconv.Itoa(t.Partition)
}

// copyBack returns the message that gives l's task back to the queue.
func (p *Pool) copyBack(l *lease) store.Message {
	d := l.msg()
	// The copy goes to the task's own lane, as its encoding says (a
	// limited kind's: the lane of the delivery is not enough, since a kind
	// lane's deliveries read as the highest priority, and a copy published
	// by that went round the kind's limits).
	m := store.Message{Key: d.Key(), Data: d.Data(), Priority: d.Priority()}
	if t, err := taskOf(d); err == nil {
		if delivered := l.delivered(); delivered > 1 {
			// The copy given back carries the runs lost before this delivery.
			t.Carried = job.Carry(t.Carried, p.noteLost(t, delivered)...)
			t.Runs += delivered - 1
			t.Lost += delivered - 1
		}
		if msgs, err := store.TaskMessages([]job.Task{t}, false); err == nil {
			m = msgs[0]
			m.ID = copyID("back", l, t)
		}
	}
	// It was at the head of its lane when fetched: it goes before the
	// lane's new work (its later lane), not behind what was queued since.
	m.Later = true
	return m
}

// call runs the task's map or reduce, turning a panic into an error so a
// bad function fails its task, not the worker.
func (p *Pool) call(ctx context.Context, t job.Task) (v int64, out *mr.Outcome, err error) {
	timeout, whose := p.cfg.TaskTimeout, "--task-timeout"
	switch {
	case t.Timeout > 0:
		timeout, whose = t.Timeout, "the job's timeout"
	case timeout == 0 && t.Module != "":
		timeout = uploadedTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		defer func() {
			if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("timed out after %s (%s): %w", timeout, whose, err)
			}
		}()
	}
	var k job.Kind
	release := func() {}
	switch {
	case t.Module != "" && p.cfg.Modules == nil:
		return 0, nil, fmt.Errorf("worker pool %s cannot run uploaded kinds", p.cfg.Name)
	case t.Module != "":
		// Released by the code's goroutine once it returns, not before.
		if k, release, err = p.cfg.Modules.TaskKind(ctx, t); err != nil {
			return 0, nil, fmt.Errorf("kind %q (module %.12s): %w", t.Kind, t.Module, err)
		}
	default:
		var ok bool
		if k, ok = p.cfg.Kinds.Lookup(t.Kind); !ok {
			return 0, nil, fmt.Errorf("kind %q is not registered on worker pool %s; start the worker with that kind", t.Kind, p.cfg.Name)
		}
	}
	if !k.ReadsData && t.Phase != job.PhaseMap {
		release()
		return 0, nil, fmt.Errorf("kind %q on worker pool %s reads no data, but the task is a %s task", t.Kind, p.cfg.Name, t.Phase)
	}
	type answer struct {
		v   int64
		out *mr.Outcome
		err error
	}
	done := make(chan answer, 1)
	go func() {
		var a answer
		defer func() {
			if r := recover(); r != nil {
				what := t.Phase
				p.log.Warn(string(what)+" function panicked", "job", t.Job, "partition", t.Partition, "panic", r, "stack", string(debug.Stack()))
				a = answer{err: fmt.Errorf("%s function panicked: %v", what, r)}
			}
			release()
			done <- a
		}()
		switch {
		case !k.ReadsData && t.Member != "":
			// A group's member: the kind's code sees the job it is.
			own := t
			own.Job, own.Partition, own.Partitions, own.Member = t.Member, 0, 1, ""
			a.v, a.err = k.Map(ctx, own)
		case !k.ReadsData:
			a.v, a.err = k.Map(ctx, t)
		case t.Phase == job.PhaseReduce:
			o, err := p.env.Reduce(ctx, k, t)
			a = answer{o.Counters.ReduceOutputRecords, &o, err}
		default:
			o, err := p.env.Map(ctx, k, t)
			a = answer{o.Counters.MapOutputRecords, &o, err}
		}
	}()
	select {
	case a := <-done:
		return a.v, a.out, a.err
	case <-ctx.Done():
	}
	grace := cmp.Or(p.cfg.abandonAfter, abandonAfter)
	if p.hardCtx.Err() != nil {
		grace = min(grace, time.Second) // the shutdown's time is up already
	}
	select {
	case a := <-done:
		return a.v, a.out, a.err
	case <-time.After(grace):
		p.log.Error("a task's code did not stop when told to, and is left running in this process: its kind's map or reduce function must return once its context is done; restart the worker to end it",
			"job", t.Job, "kind", t.Kind, "phase", t.Phase, "partition", t.Partition, "why", context.Cause(ctx), "waited", grace)
		return 0, nil, fmt.Errorf("%w; its %s function did not return within %s after it was told to stop, and was given up (it ignores its context)", context.Cause(ctx), t.Phase, grace)
	}
}

// noteLost records in the job's history the runs of task t lost before
// this delivery of its message: earlier deliveries that ended without a
// word from their worker (it died, was cut off, or paused past its lease).
// It returns the records, which the task carries (job.Task.Carried).
func (p *Pool) noteLost(t job.Task, delivered int) []job.TaskResult {
	now := time.Now().UTC()
	var lost []job.TaskResult
	for a := t.Runs + 1; a < t.Runs+delivered; a++ {
		p.log.Info("an earlier run of this task ended without a word to the queue (its worker lost, or its acknowledgement); it runs again, and this is not a failed attempt",
			"job", t.Job, "phase", t.Phase, "partition", t.Partition, "lost_attempt", a)
		r := job.TaskResult{Job: t.Job, Partition: t.Partition, Phase: t.Phase, Attempt: a, Backup: t.Backup,
			Outcome: job.OutcomeLost, Failures: t.Failures, Epoch: t.Epoch, StartedAt: now, FinishedAt: now,
			Error: "the queue heard no end of this attempt: its worker stopped answering (crashed, cut off or paused), or its acknowledgement was lost after its result was stored; the task ran again, and counts once"}
		p.results <- finished{result: r, shared: t.LogInRecord}
		lost = append(lost, r)
	}
	return lost
}

// lease is a task message the pool holds. From its fetch to its ack (or its
// return to the queue) it tells the queue every AckWait/3 that it is alive,
// so that no task waiting in the pool, running, or waiting for its result
// to be stored is given to a second worker while this one lives.
type lease struct {
	at   time.Time // when the message arrived
	pool *Pool

	mu sync.Mutex
	m  store.Delivery
	hb *heartbeat
	// acked is set once the lease ended with an ack, released once it
	// was let go without one (the message comes back after the ack wait).
	acked, released bool
	// gated: its task counts in the pool's alone.busy (gate).
	gated bool
	// failing is when a call to the store for its task (a give-back, a
	// retry's queueing) first failed, tries how many have (holdOn).
	failing time.Time
	tries   int
}

func (p *Pool) newLease(m store.Delivery) *lease {
	now := time.Now()
	p.served(m.Priority(), now)
	l := &lease{m: m, hb: p.keepAlive(m), at: now, pool: p}
	p.hold(l)
	return l
}

// msg is the delivery the lease holds now (see adopt).
func (l *lease) msg() store.Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m
}

// delivered is how many times the queue delivered this message.
func (l *lease) delivered() int { return l.msg().Delivered() }

func (l *lease) ack() {
	m := l.end(true)
	_ = m.Ack()
	l.pool.let(l, m.Seq(), true) // after l.mu: track takes p.mu, then leases'
	l.ungate()
}

// release stops renewing the lease without an ack.
func (l *lease) release() {
	d := l.end(false)
	if pt, ok := d.(*part); ok {
		pt.letGo()
	}
	l.pool.let(l, d.Seq(), false)
	l.ungate()
}

// gate counts the lease's task among those a suspect waits for (alone.go)
// until ungate.
func (l *lease) gate() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gated = true
}

// ungate ends what gate began, once.
func (l *lease) ungate() {
	l.mu.Lock()
	gated := l.gated
	l.gated = false
	l.mu.Unlock()
	if gated {
		l.pool.leave()
	}
}

// end stops renewing the lease, marks it acked or released, and returns
// the delivery it held.
func (l *lease) end(acked bool) store.Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked, l.released = l.acked || acked, l.released || !acked
	l.hb.stop()
	return l.m
}

// adopt makes l, the lease of a running attempt, answer for o, a later
// delivery of the same message: o's delivery is acked with l's, and
// renewed meanwhile. A lease already acked acks o at once (the message's
// work is done); one let go does not adopt (false).
func (l *lease) adopt(o *lease) bool {
	o.mu.Lock()
	m, hb := o.m, o.hb
	o.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.released:
		return false
	case l.acked:
		hb.stop()
		_ = m.Ack()
	default:
		l.hb.stop()
		l.m, l.hb = m, hb
	}
	return true
}

// keepAlive tells the queue every AckWait/3 that the message is held.
func (p *Pool) keepAlive(m store.Delivery) *heartbeat {
	every := p.ackWait / 3
	h := &heartbeat{}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t = time.AfterFunc(every, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.stopped {
			return
		}
		_ = m.InProgress()
		h.t.Reset(every)
	})
	return h
}

type heartbeat struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (h *heartbeat) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.t.Stop()
}

func (p *Pool) idle(i int, failed bool) {
	p.rep.track(i, nil)
	p.rep.set(i, func(s *job.WorkerStatus) {
		s.Busy, s.JobID, s.Partition, s.Phase, s.Attempt, s.TaskStartedAt = false, "", 0, "", 0, nil
		s.Member = ""
		s.Epoch, s.Backup, s.Lease, s.Progress = 0, false, "", nil
		if failed {
			s.TasksFailed++
		} else {
			s.TasksDone++
		}
	})
}

type runningTask struct {
	phase     job.Phase
	partition int
	epoch     int
	cancel    context.CancelCauseFunc
	since     time.Time // when it started
	lease     *lease
}

// errStopped is the cause of a run's end when another copy of its task
// finished first (stopTask).
var errStopped = errors.New("another copy of the task finished first")

// canceledJob is a job told to stop: its tasks of epoch and before (a
// retry queues the next epoch's), and when the notice came.
type canceledJob struct {
	epoch int
	at    time.Time
}

// What track found.
const (
	tracked = iota // the task runs on worker i
	ended          // its job was canceled: drop it
	adopted        // the pool holds this message's earlier delivery
	done           // the pool acked this message already
)

// track notes that worker i runs task t, held by l; see the constants.
func (p *Pool) track(t job.Task, i int, cancel context.CancelCauseFunc, l *lease) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.canceled[t.Job]; ok && t.Epoch <= c.epoch {
		return ended
	}
	if c, ok := p.canceled[t.Member]; ok && t.Member != "" && t.Epoch <= c.epoch {
		return ended // a group's member, canceled
	}
	if seq := l.msg().Seq(); seq != 0 {
		if _, ok := p.acked[seq]; ok {
			return done
		}
		if h, ok := p.held[seq]; ok && h != l && h.adopt(l) {
			return adopted
		}
		if p.held[seq] == nil {
			p.held[seq] = l // the earlier delivery it did not adopt was let go
		}
	}
	if p.running[t.Job] == nil {
		p.running[t.Job] = map[int]runningTask{}
	}
	p.running[t.Job][i] = runningTask{phase: t.Phase, partition: t.Partition, epoch: t.Epoch, cancel: cancel, since: time.Now(), lease: l}
	return tracked
}

// stopTask stops the running copies of one task: another copy (a backup,
// or the original a backup raced) has finished it.
func (p *Pool) stopTask(id string, phase job.Phase, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.running[id] {
		if r.phase == phase && r.partition == n {
			r.cancel(errStopped)
		}
	}
}

func (p *Pool) unsubscribe() {
	for _, u := range p.unsubs {
		u()
	}
	p.unsubs = nil
}

func (p *Pool) untrack(id string, i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running[id], i)
	if len(p.running[id]) == 0 {
		delete(p.running, id)
	}
}

// noticeMemory is how long a pool remembers a cancel notice, dropping the
// job's tasks it meets in the queue unrun.
const noticeMemory = 10 * time.Minute

// cancelJob stops the job's running tasks and makes the pool drop its
// waiting ones. Notices older than noticeMemory are forgotten.
func (p *Pool) cancelJob(id string, epoch int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if c, ok := p.canceled[id]; !ok || c.epoch <= epoch {
		p.canceled[id] = canceledJob{epoch: epoch, at: now}
	}
	for jid, c := range p.canceled {
		if now.Sub(c.at) > noticeMemory {
			delete(p.canceled, jid)
		}
	}
	if group, n, ok := job.GroupOf(id); ok {
		// A group's member: its one task, not the group's others (and
		// below, the tasks of a member with a record of its own).
		for _, r := range p.running[group] {
			if r.partition == n-1 && r.epoch <= epoch {
				r.cancel(nil)
			}
		}
	}
	for _, r := range p.running[id] {
		if r.epoch > epoch {
			continue // queued by a retry after the notice's epoch
		}
		r.cancel(nil)
	}
}

// endedEvery is how often a pool asks the store whether the jobs of its
// tasks running that long have ended. A job's end is told to the workers by
// a notice (cancelJob) that a worker misses when it is cut off or
// reconnecting at that moment, or whose subscription the server dropped as
// too slow: the task would run to its own end, which for a task of hours,
// or one waiting on something that never comes, is never.
var endedEvery = 30 * time.Second

// stopEnded stops, every endedEvery, the running tasks whose job the store
// shows finished (of their epoch or later) or retried (a later epoch), or
// whose task it shows done by another copy, as the missed notice would
// have. A finished job's record leaves the jobs bucket once archived, and
// a process that keeps no index of the archive (a worker process of its
// own) then finds no job: a task of a job not found is stopped only when
// the queue's leader no longer holds its message, which the job's end
// took out (or another copy of the task finished). Not found alone stops
// nothing: a replica behind in a cluster answers so for a job it has not
// read yet.
func (p *Pool) stopEnded(done <-chan struct{}) {
	t := time.NewTicker(endedEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		for id, tasks := range p.longRunning(time.Now().Add(-endedEvery)) {
			p.stopIfEnded(id, tasks)
		}
	}
}

// stopIfEnded stops the tasks of job id, running here for a while, if the
// job has ended (see stopEnded).
func (p *Pool) stopIfEnded(id string, tasks []runningTask) {
	ctx, cancel := p.storeCall(mr.StoreCallTimeout)
	defer cancel()
	epoch := tasks[0].epoch
	for _, r := range tasks {
		epoch = min(epoch, r.epoch)
	}
	j, _, err := p.cfg.Store.Jobs.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		for _, r := range tasks {
			if p.gone(ctx, r.lease) {
				p.log.Info("stopping a task whose job has ended or was deleted (no record of it here, and its message left the queue); the notice of its end was missed", "job", id, "phase", r.phase, "partition", r.partition)
				r.cancel(nil)
			}
		}
	case err != nil:
		// No answer: the next round asks again.
	case j.State.Terminal() && j.Epoch >= epoch:
		p.log.Info("stopping the tasks of a job that has ended; its notice was missed", "job", id, "state", j.State)
		p.cancelJob(id, j.Epoch)
	case j.Epoch > epoch:
		p.log.Info("stopping the tasks of a job's earlier run; the job was retried and its notice missed", "job", id, "epoch", j.Epoch)
		p.cancelJob(id, j.Epoch-1)
	case !j.State.Terminal():
		// A copy of a task another copy finished (a backup, or the
		// original a backup beat, or a delivery again after a pause)
		// whose stop notice was missed: it would run to its own end for
		// nothing. Its own result cannot be the one recorded, for a run
		// leaves the running tasks only after its result is handed on,
		// and one that has ended is not stopped by its cancel.
		for _, r := range tasks {
			if r.epoch == j.Epoch && j.TaskDone(r.phase, r.partition) {
				p.log.Info("stopping a copy of a task that another copy finished; its stop notice was missed", "job", id, "phase", r.phase, "partition", r.partition)
				r.cancel(errStopped)
			}
		}
	}
}

// longRunning returns the tasks running since before, by job.
func (p *Pool) longRunning(before time.Time) map[string][]runningTask {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]runningTask{}
	for id, tasks := range p.running {
		for _, r := range tasks {
			if !r.since.After(before) {
				out[id] = append(out[id], r)
			}
		}
	}
	return out
}

// Replaced receives a *ReplacedError when another process runs a pool of
// this one's name, having taken it for dead (it was paused, or cut off,
// longer than its status lives): the two would run side by side. Its
// statuses are no longer written; the owner of the pool stops it.
func (p *Pool) Replaced() <-chan error { return p.replaced }

// Stop stops taking tasks and waits for the running ones to finish; when ctx
// ends first, running tasks are abandoned and go back to the queue (a task
// whose code ignores its context is left running in the process after a
// second more: see abandonAfter). Only the first call does anything.
func (p *Pool) Stop(ctx context.Context) error {
	if p.hardCancel == nil {
		return nil // never started
	}
	p.stopOnce.Do(func() { p.stop(ctx) })
	return nil
}

func (p *Pool) stop(ctx context.Context) {
	// What the store has not answered leaveGrace past the stop's deadline
	// (results of tasks that ended, tasks given back, retries held) is
	// given up: those tasks come back after the queue's ack wait.
	// (A timer that fires after the stop ended cancels what is canceled.)
	defer context.AfterFunc(ctx, func() { time.AfterFunc(leaveGrace, p.leaveCancel) })()
	close(p.stopping)
	p.stopCancel()
	for i := range p.cfg.Concurrency {
		p.rep.set(i, func(s *job.WorkerStatus) { s.Stopping = true })
	}
	if err := p.rep.flush(ctx, false, time.Now()); err != nil {
		if _, ok := errors.AsType[*ReplacedError](err); ok {
			// A pool of the name started as this one was leaving:
			// its statuses stay.
			p.log.Info("another process took this pool's name as it was stopping", "err", err)
		} else {
			p.log.Warn("could not report that the workers are stopping", "err", err)
		}
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.log.Warn("shutdown timeout: abandoning running tasks; they go back to the queue")
		p.hardCancel()
		<-done
	}
	p.unsubscribe()
	p.flushLater()
	p.resultsMu.Lock()
	p.resultsClosed = true
	close(p.results)
	p.resultsMu.Unlock()
	p.resultsWG.Wait()
	p.laterWG.Wait() // the retries of results that could not be stored
	p.hardCancel()
	p.repCancel()
	p.repWG.Wait()
	p.leaveCancel()
	p.log.Info("workers stopped")
}

// leaveGrace is how long a stop past its deadline still waits for the
// store: to store the results of tasks that ended, give back those
// abandoned and queue the retries held. Whatever it has not done by then
// the queue does after its ack wait (the tasks run again).
const leaveGrace = 2 * time.Second

// storeCall is the context of one call of the pool to the store, of at
// most d.
func (p *Pool) storeCall(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.leaveCtx, d)
}

// cleanTempEvery is how often a pool looks for the local files of tasks
// whose process died, after a look at its start.
const cleanTempEvery = 10 * time.Minute

// cleanTemp removes, at once and then every cleanTempEvery until done,
// the directories of tasks under the pool's TempDir that no running task
// holds (mr.CleanTemp): a worker killed in the middle of a map leaves its
// spills behind, and each crash would leave more.
func (p *Pool) cleanTemp(done <-chan struct{}) {
	t := time.NewTicker(cleanTempEvery)
	defer t.Stop()
	for {
		switch n, bytes, err := mr.CleanTemp(p.cfg.TempDir); {
		case err != nil:
			p.log.Warn("could not remove the local files of tasks whose process died; remove them by hand", "err", err)
		case n > 0:
			p.log.Info("removed the local files of tasks whose process died", "dirs", n, "mib", bytes>>20, "temp_dir", mr.TempDir(p.cfg.TempDir))
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// alive reports whether process pid runs on this host, other than this
// process (one of an earlier run may have had its pid: in a container,
// say, every run is pid 1).
func alive(pid int) bool {
	if pid == os.Getpid() {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// stopped reports whether process pid of this host is stopped (SIGSTOP,
// Ctrl-Z): state T or t in /proc (false where there is no /proc).
func stopped(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state …": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && (stat[i+2] == 'T' || stat[i+2] == 't')
}

// ErrNameInUse is what the errors of a pool whose name another process's
// pool has are (errors.Is): its start's (nameFree) and *ReplacedError. A
// worker process exits with a status of its own then, which a service
// manager can be told not to restart on: started again, it would be
// refused again.
var ErrNameInUse = errors.New("the name of this pool of workers is another process's")

// nameInUse is an error of ErrNameInUse with its own message.
type nameInUse string

func (e nameInUse) Error() string        { return string(e) }
func (e nameInUse) Is(target error) bool { return target == ErrNameInUse }

// nameFree returns an error when another running pool has this pool's
// name (two worker processes given the same --name, as two copies of one
// service file would): their statuses would overwrite each other, the
// dashboard would show half the workers, and a task running on one could
// look idle to the cluster. A status left by a process that died (its
// heartbeat stopped, as after a crash and a restart within the status's
// time to live) does not count: one of a process of this host that no
// longer runs is passed over at once, another is waited out for one
// heartbeat; one of this host that is stopped (SIGSTOP, Ctrl-Z) is live,
// though its heartbeat does not move.
func (p *Pool) nameFree(ctx context.Context) error {
	key, mine := p.keys[0], p.rep.status[0].StartedAt
	read := func() (job.WorkerStatus, bool) {
		var w job.WorkerStatus
		rctx, cancel := context.WithTimeout(ctx, mr.StoreCallTimeout)
		defer cancel()
		e, err := p.cfg.Store.Workers.Get(rctx, key)
		// Statuses expire from the bucket (store.WorkerTTL); their times
		// are compared only with each other: clocks of two machines differ.
		if err != nil || json.Unmarshal(e.Value, &w) != nil || w.StartedAt.Equal(mine) || w.Stopping {
			return w, false // none, unreadable (the store is the start's to report), ours, or leaving
		}
		return w, true
	}
	before, ok := read()
	if !ok || before.Host == p.cfg.Host && before.PID > 0 && !alive(before.PID) {
		return nil // none, or a process of this host that is gone: no need to wait
	}
	if before.Host == p.cfg.Host && before.PID > 0 && stopped(before.PID) {
		// Its heartbeat does not move, but it is no dead process: once
		// continued it would run beside this one.
		return nameInUse(fmt.Sprintf("a pool of workers named %s is stopped on this host (process %d, paused by SIGSTOP or Ctrl-Z): continue it (kill -CONT %d) or end it, or give this one another --name",
			p.cfg.Name, before.PID, before.PID))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(p.rep.heartbeat + time.Second):
	}
	after, ok := read()
	if !ok || !after.StartedAt.Equal(before.StartedAt) || !after.LastSeen.After(before.LastSeen) {
		return nil // its heartbeat stopped: a process that died
	}
	return nameInUse(fmt.Sprintf("a pool of workers named %s is running already (on host %s, since %s): give this one another --name, or stop that one",
		p.cfg.Name, after.Host, after.StartedAt.Format(time.RFC3339)))
}
