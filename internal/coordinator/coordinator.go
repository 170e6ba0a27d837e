// Package coordinator runs the life of jobs: it stores a submitted job and
// publishes its tasks, applies task results to the job record, reduces and
// finishes the job, and cancels it. Every write to a job record is a
// compare-and-set on its revision, so several servers can share the work.
package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mapx"
	"github.com/mrcluster/mrcluster/internal/metrics"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Config is what a Coordinator needs.
type Config struct {
	Store *store.Store
	// Datasets resolves a job's input.
	Datasets *dataset.Store
	Kinds    *job.Registry
	// Modules gives the kind of an uploaded kind's job, at the version it
	// pinned: its format writes the job's output.
	Modules interface {
		TaskKind(ctx context.Context, t job.Task) (job.Kind, func(), error)
	}
	// MaxAttempts is how many times a task may run before its failure
	// fails its job.
	MaxAttempts int
	// MaxLostRuns is how many runs of a task in a row may end with their
	// worker lost before the task fails its job (0: no bound).
	MaxLostRuns int
	Logger      *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Running returns the statuses of the cluster's workers; with
	// BackupAfter > 0, it lets the coordinator start backup copies of
	// tasks running for longer than BackupAfter and twice their phase's
	// median at the end of a phase.
	Running func() []job.WorkerStatus
	// State, when set, tells the state of a job as the read model last
	// saw it (ok false: it does not know the job): a start notice of a job
	// it knows has left the queued state costs no read of the record.
	State func(id string) (s job.State, ok bool)
	// Deleted, when set, reports whether the read model saw job id
	// deleted: its late results are dropped at once.
	Deleted func(id string) bool
	// Record, when set, returns the read model's record of unfinished
	// job id and its revision (not to be changed: a Clone is): a result of
	// a job past the cache of records (a backlog larger than it) is applied
	// to it, not to a record read from the store. A stale one fails the
	// compare-and-set, and the store is read then.
	Record      func(id string) (j *job.Job, rev uint64, ok bool)
	BackupAfter time.Duration
	// Unqueued returns the unfinished jobs not marked enqueued; with it,
	// the coordinator queues the tasks of those that stay so, unchanged,
	// for a whole RepairEvery: their submit or phase change was cut short
	// (a server died, or JetStream was electing a leader).
	Unqueued func() []string
	// Due returns the scheduled jobs whose time has come (run_at); with
	// it, every server queues their tasks, the first to move each job
	// to queued doing it.
	Due func(now time.Time) []string
	// LaneOf names the lane of the queue a kind's tasks go to: its own for
	// a kind with a concurrency limit, else "" (the priority lanes).
	LaneOf func(kind string) string
	// Paused reports whether a kind is paused; Holding lists the jobs
	// whose waiting tasks are to leave the queue (their kind paused) and
	// those to come back (resumed). With both, every server holds and
	// releases jobs, the first to change each record doing it.
	Paused      func(kind string) bool
	Holding     func(paused func(kind string) bool, laneOf func(kind string) string) (hold, release, relane []string)
	RepairEvery time.Duration
	// Retention is how long a finished job is kept: its record, task
	// history and outputs are deleted that long after it finished (0:
	// kept for ever). Expired lists the finished jobs that finished
	// before a time; the coordinator looks every RetentionEvery.
	Retention      time.Duration
	Expired        func(before time.Time) []string
	RetentionEvery time.Duration
	// GroupBatches stores a batch's small jobs in groups (group.go).
	GroupBatches bool
	// JobDeleted, when set, is told of every job this server deleted (a
	// user's delete, or its retention), once its record is gone.
	JobDeleted func(j *job.Job)
	// ForgetAfter is how long the marker a deleted job's record leaves
	// in the jobs bucket (so that every server's read model learns of the
	// deletion) is kept before it is purged (0: DefaultForgetAfter).
	ForgetAfter time.Duration
	// Markers, when set, lists at start the deleted jobs whose markers
	// are still stored (a server stopped before it purged them): this
	// one purges them ForgetAfter later.
	Markers func() []string
	// CachedRecords bounds the records of unfinished jobs the coordinator
	// keeps between their writes (0: DefaultCachedRecords). A record not
	// kept is read from the store when its job next changes.
	CachedRecords int
}

// DefaultCachedRecords is how many unfinished jobs' records a coordinator
// keeps by default: each is about 900 bytes, and a backlog of a million
// one-task jobs would otherwise hold them all.
const DefaultCachedRecords = 20_000

// DefaultForgetAfter is how long a deleted job's marker stays by default:
// a read model that falls further behind than that keeps the job until it
// restarts.
const DefaultForgetAfter = 10 * time.Minute

// maxTombs bounds the deleted jobs a coordinator remembers to forget; past
// it, markers stay (each costs a subject's room in JetStream).
const maxTombs = 100_000

// forgetBatch bounds the markers purged at one look.
const forgetBatch = 10_000

type tomb struct {
	id string
	at time.Time
}

// Coordinator owns job records.
type Coordinator struct {
	cfg Config
	log *slog.Logger
	// gather and gatherKeyed hold the single submits waiting to be
	// stored together (without and with an Idempotency-Key), memberOps
	// the commands waiting to be written to a group's record together
	// (group.go).
	gather, gatherKeyed gatherer
	memberOps           memberOps
	// applyFailures and retentionFailures pace the warnings of results
	// not applied and of expired jobs not deleted.
	applyFailures, retentionFailures pacer

	mu    sync.Mutex
	cache map[string]entry // last record this server wrote or read, by job id
	stubs []string         // the finished jobs in cache, oldest first: at most maxStubs
	// stubIDs holds the ids of stubs, packed: the records they came from
	// are gone.
	stubIDs mapx.Strings
	// records counts the unfinished jobs' records in cache: at most
	// cfg.CachedRecords. Records of jobs that finish on other servers go
	// stale there: dropFinishedRecords drops them.
	records int
	durs    map[string]durations // run times of finished tasks, by job, for backups
	// submitting holds the jobs this server is submitting, each with a
	// channel closed when its submit ends: their tasks are queued before
	// their record is stored, and their first results wait for it here.
	submitting map[string]chan struct{}
	// ending holds the jobs whose failure or cancel this server is
	// writing, until their queued and running tasks are stopped
	// (stopTasks), each with a channel closed then: a retry on this server
	// waits for it (see Retry).
	ending map[string]*ending
	// queuing counts, by job, this server's publishes of a job's tasks
	// not yet marked queued in its record: the repair loop passes over
	// those jobs (see queuingTasks).
	queuing map[string]int
	// unkeying holds the idempotency keys (bucket keys) marked withdrawing
	// whose jobs this server withdraws for a retry (withdrawKey).
	unkeying map[string]bool
	starts   map[string]started // the first start notice of queued jobs, for startLoop
	// unapplied notes, by job, when this server last failed to apply
	// stored results of the job because the store did not answer:
	// Reconcile leaves the job's tasks alone meanwhile (resultsWaiting).
	unapplied map[string]time.Time
	// behindAt is the results' acknowledged floor a look of Reconcile last
	// found below what it waited for, and behindSince since when it has
	// not moved (resultsBehind).
	behindAt    uint64
	behindSince time.Time
	// The most each map held since it was last copied small (mapx): a
	// burst of jobs grows them, and maps do not shrink by themselves.
	cacheHigh, dursHigh, startsHigh, submittingHigh int
	// tombs are the jobs this server deleted, oldest first: their markers
	// are purged ForgetAfter later.
	tombs []tomb

	stop    context.CancelFunc
	stopped <-chan struct{} // closed by Stop; nil until Start
	wg      sync.WaitGroup
	unsub   func()
}

type entry struct {
	job *job.Job // nil for a stub
	rev uint64
	// stub marks a finished job of which only the id and the epoch it
	// finished in are kept: no record of its own, which a burst of small
	// jobs would leave scattered among its garbage, each keeping a page
	// from being handed back.
	stub  bool
	epoch int
}

// New returns a coordinator; Start makes it apply results.
func New(cfg Config) *Coordinator {
	return &Coordinator{cfg: cfg, log: cfg.Logger, cache: map[string]entry{}, durs: map[string]durations{}, submitting: map[string]chan struct{}{}, ending: map[string]*ending{}, queuing: map[string]int{}, unkeying: map[string]bool{}, starts: map[string]started{}, unapplied: map[string]time.Time{}}
}

// Timeouts of the coordinator's calls to the store. No call waits without
// a deadline: a loop stuck in one call (a partition, a full disk) would
// stop the work of every job.
const (
	// SubmitTimeout bounds a submit: past it the client is told to try
	// again, and nothing of the job stays.
	SubmitTimeout = 4 * time.Second
	// storeTimeout bounds one call, or one batch of publishes.
	storeTimeout = 10 * time.Second
)

// submitTimeout bounds a submit of jobs with tasks in all, which carry
// params bytes of params: 4 s, and more for many (100 jobs of 1,000 tasks:
// 9.2 s; 64 MiB of params: 6.7 s more).
func submitTimeout(jobs, tasks int, params int64) time.Duration {
	return SubmitTimeout + time.Duration(jobs)*2*time.Millisecond + time.Duration(tasks)*50*time.Microsecond + time.Duration(params)*100*time.Nanosecond
}

// publishTimeout bounds the publish of n tasks.
func publishTimeout(n int) time.Duration {
	return storeTimeout + time.Duration(n)*time.Millisecond
}

// Submit publishes the tasks of a job of spec, which the caller validated
// (package service), and stores the job. It is all or nothing: it returns
// the job once it and every task are durably stored; on an error the tasks
// published are withdrawn and no job exists. A spec with an idempotency
// key that an earlier submit used within a day returns that submit's job,
// with Replayed set.
func (c *Coordinator) Submit(ctx context.Context, spec job.Spec) (*job.Job, error) {
	if c.groupable(spec) {
		return c.gathered(ctx, spec)
	}
	jobs, err := c.submitAll(ctx, []job.Spec{spec}, spec.IdempotencyKey, "")
	if err != nil {
		return nil, err
	}
	return jobs[0], nil
}

// MaxBatch bounds the jobs of one batch submit.
const MaxBatch = 1000

// SubmitBatch submits the jobs of specs, validated by the caller, all or
// nothing: their tasks are published together, then their records stored;
// on an error nothing of them stays. key, when set, makes a second batch
// with it within a day return the first one's jobs, with Replayed set.
func (c *Coordinator) SubmitBatch(ctx context.Context, specs []job.Spec, key string) ([]*job.Job, error) {
	return c.submitAll(ctx, specs, key, "batch\x00")
}

// submission is what a submit stores: its jobs' records, or their
// groups' (records, with recordSpecs), and the jobs' ids.
type submission struct {
	jobs        []*job.Job // when not in groups
	ids         []string
	records     []*job.Job
	recordIDs   []string
	recordSpecs []job.Spec
}

// prepare makes the jobs of specs, in groups when ranges says (makeGroups),
// and notes them as being submitted by this server (isSubmitting,
// awaitSubmit) until the returned func is called.
func (c *Coordinator) prepare(specs []job.Spec, ranges [][2]int, now time.Time) (*submission, func()) {
	s := &submission{jobs: make([]*job.Job, len(specs)), ids: make([]string, len(specs))}
	s.records, s.recordSpecs = s.jobs, specs
	done := make(chan struct{})
	c.mu.Lock()
	if ranges != nil {
		s.records, s.recordSpecs = makeGroups(specs, ranges, now, s.ids)
	} else {
		for i, spec := range specs {
			s.jobs[i] = job.New(job.NewID(spec.Kind, now), spec, now.UTC())
			s.ids[i] = s.jobs[i].ID
		}
	}
	s.recordIDs = make([]string, len(s.records))
	for i, r := range s.records {
		s.recordIDs[i] = r.ID
		c.submitting[r.ID] = done
	}
	for _, id := range s.ids {
		c.submitting[id] = done
	}
	mapx.Note(c.submitting, &c.submittingHigh)
	c.mu.Unlock()
	return s, func() {
		c.mu.Lock()
		for _, id := range s.ids {
			delete(c.submitting, id)
		}
		for _, id := range s.recordIDs {
			delete(c.submitting, id)
		}
		c.mu.Unlock()
		close(done)
	}
}

// withdrawRecords withdraws what the failed submit sub stored (recorded
// says which records were), its records at once, and reports whether
// every step was done.
func (c *Coordinator) withdrawRecords(sub *submission, recorded []bool) bool {
	var failed atomic.Bool
	parallel(len(sub.records), func(i int) {
		if !c.withdraw(sub.recordIDs[i], recorded[i], sub.records[i].FilesRef) {
			failed.Store(true)
		}
	})
	return !failed.Load()
}

// timeoutOf is the deadline of the submit of specs (submitTimeout).
func timeoutOf(specs []job.Spec) time.Duration {
	tasks, copies := 0, int64(0)
	for _, spec := range specs {
		tasks += spec.Partitions
		copies += spec.ParamCopies()
	}
	return submitTimeout(len(specs), tasks, copies)
}

// submitAll submits specs as one batch; keySpace keeps the keys of batches
// apart from those of single submits.
func (c *Coordinator) submitAll(ctx context.Context, specs []job.Spec, key, keySpace string) ([]*job.Job, error) {
	timeout := timeoutOf(specs)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ranges [][2]int
	if keySpace != "" {
		ranges = c.groupSpecs(specs)
	}
	sub, release := c.prepare(specs, ranges, time.Now())
	defer release()
	jobs, ids, records, recordIDs, recordSpecs := sub.jobs, sub.ids, sub.records, sub.recordIDs, sub.recordSpecs
	var claim *keyClaim
	if key != "" {
		claim = &keyClaim{key: keySpace + key, fingerprint: fingerprint(specs), ids: ids, specs: specs, timeout: timeout}
		prev, err := c.claimKey(ctx, claim)
		if err != nil || prev != nil {
			return prev, err
		}
	}
	recorded, err := c.submit(ctx, recordSpecs, records, false)
	if err != nil {
		// The key is marked withdrawing before the jobs are withdrawn, a
		// compare-and-set: a retry that found them all stored meanwhile
		// marked it done and was answered them, and they stay; a retry
		// that finds it withdrawing withdraws them too, frees the key and
		// takes it (claimKey). (The key used to be released before the
		// withdraw: a server that died withdrawing left a job that ran
		// beside the one its client's retry made, seen in the chaos test.)
		mark := keyUnknown
		if claim != nil {
			// Briefly: the store may be what failed, and the answer
			// waits for this (the mark is tried again after it).
			if mark = c.markWithdrawing(claim, time.Second); mark == keyAnswered {
				if again, rerr := c.replay(ctx, ids); rerr == nil {
					for _, j := range again {
						j.Replayed = false
					}
					return again, nil
				}
				return nil, err
			}
		}
		// What the submit stored is removed in the background: the answer
		// must not wait for a store that is failing (each step has a
		// deadline of its own). Until then its tasks may start; their
		// results wait for a record that never comes, and are dropped. A
		// batch's jobs are withdrawn in parallel: one after the other, a
		// thousand took seconds under load, while the client's retries
		// with the batch's key waited for their key.
		withdrawn := make(chan struct{})
		c.wg.Go(func() {
			defer close(withdrawn)
			if claim != nil && mark == keyUnknown {
				if mark = c.markLater(claim); mark != keyWithdraw {
					return // answered to a retry, and kept; or never known
				}
			}
			if c.withdrawRecords(sub, recorded) && claim != nil {
				c.releaseWithdrawn(claim)
			}
		})
		if claim == nil {
			// Without a key nothing but the withdraw stands between the
			// answer and a job no client knows of, should this server
			// die: it is awaited a moment, which is all it takes while
			// the store answers.
			select {
			case <-withdrawn:
			case <-time.After(withdrawWait):
			}
		}
		return nil, err
	}
	// The key is left pending: a retry finds the jobs stored and marks it
	// done then (claimKey), which spares every keyed submit a write.
	if claim != nil && ctx.Err() != nil && !c.stillHeld(claim) {
		// Stored past its deadline (its server stalled, or its client went
		// away): a retry took the key over meanwhile with jobs of its
		// own, which the client is answered. These are no one's.
		c.wg.Go(func() {
			parallel(len(records), func(i int) { c.withdraw(recordIDs[i], true, records[i].FilesRef) })
		})
		return nil, job.Errorf(job.EUnavailable, "the submit took longer than its %s, and a retry with its Idempotency-Key made the jobs it asked for meanwhile: send the same request again to get them", timeout.Round(time.Millisecond))
	}
	if ranges != nil {
		return members(records), nil // as stored
	}
	return jobs, nil
}

// stillHeld reports whether claim's key still names its jobs after their
// submit stored them all past its deadline, when a retry may have found
// the submit surely over, none of its jobs stored, and taken the key over
// (claimKey). It writes the key again as it is: a retry that read it
// before then fails its compare-and-set, and reads the jobs again, which
// it finds stored. A store that does not answer is taken for yes.
func (c *Coordinator) stillHeld(claim *keyClaim) bool {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	k := idempotencyKey(claim.key)
	for range 3 {
		e, err := c.cfg.Store.Idempotency.Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			return false
		} else if err != nil {
			return true
		}
		ids, _, done, taken, withdrawing := parseKeyValue(string(e.Value))
		switch {
		case !slices.Equal(ids, claim.ids) || withdrawing:
			return false
		case done || taken:
			return true // a retry was answered them, or is storing the rest
		}
		_, err = c.cfg.Store.Idempotency.Update(ctx, k, e.Value, e.Revision)
		if !errors.Is(err, store.ErrConflict) {
			return true
		}
	}
	return true
}

// submit stores jobs, made of specs: every task first, then the records;
// queued says the tasks are in the queue already (complete), and only the
// records are stored. On an error, recorded reports for each job whether
// its record is or may be stored (created before the failure, or a create
// whose answer was lost): all of them are withdrawn.
func (c *Coordinator) submit(ctx context.Context, specs []job.Spec, jobs []*job.Job, queued bool) (recorded []bool, err error) {
	recorded = make([]bool, len(jobs))
	var msgs []store.Message
	for i, j := range jobs {
		if j.MaxAttempts == 0 {
			j.MaxAttempts = max(c.cfg.MaxAttempts, 1)
		}
		j.MaxLostRuns = c.cfg.MaxLostRuns
		k, _ := c.cfg.Kinds.Lookup(j.Kind)
		// A small job keeps its task history in its record: the store
		// then holds one key for it, not two.
		j.LogInRecord = !k.ReadsData && j.Partitions <= job.MaxLogInRecordPartitions
		if k.ReadsData {
			j.Module = k.Module // an uploaded kind's version, pinned
			// Read at submit when the service chose the partition count
			// from them; a batch's jobs may share them.
			files := slices.Clone(specs[i].Files)
			if files == nil {
				var err error
				if files, err = c.cfg.Datasets.Resolve(ctx, specs[i].Input); err != nil {
					return recorded, err
				}
			}
			j.Input, j.Files, j.Reducers, j.Phase = specs[i].Input, files, max(specs[i].Reducers, 1), job.PhaseMap
			j.MapCommits = make([]string, j.Partitions)
			j.Counters = &job.Counters{}
			if len(files) > job.MaxInlineFiles {
				if err := c.storeFiles(ctx, j); err != nil {
					return recorded, err
				}
			}
		}
		// The tasks first, then the record that makes the job exist: a
		// submit cut short leaves at most tasks without a job, which are
		// withdrawn here and dropped by whoever meets them later.
		if j.State == job.Scheduled {
			continue // its tasks are queued at its time (scheduleLoop)
		}
		if c.paused(j.Kind) {
			j.Held = true // its tasks are queued when the kind resumes (holdLoop)
			continue
		}
		j.Enqueued = true
		if queued {
			j.Lane = c.laneOf(j.Kind)
			continue
		}
		tasks, lane, err := c.tasks(ctx, j)
		if err != nil {
			return recorded, err
		}
		j.Lane = lane
		m, err := store.TaskMessages(tasks, false)
		if err != nil {
			return recorded, err
		}
		msgs = append(msgs, m...)
	}
	if err := c.publish(ctx, msgs); err != nil {
		return recorded, err
	}
	for _, j := range jobs {
		if j.FilesRef != "" {
			j.Files = nil // in their object, not in the record
		}
	}
	// The records of a batch are created at once: their writes in flight
	// together (the store's CreateAll), or else in parallel, one round
	// trip to the store for many jobs, not one per job.
	errs := make([]error, len(jobs))
	var revs []uint64
	var createErrs []error
	batched := false
	if len(jobs) > 1 {
		revs, createErrs, batched = c.cfg.Store.Jobs.CreateAll(ctx, jobs)
	}
	parallel(len(jobs), func(i int) {
		j := jobs[i]
		var stored *job.Job
		var rev uint64
		var notStored bool
		var err error
		if batched {
			stored, rev, notStored, err = c.created(ctx, j, revs[i], createErrs[i])
		} else {
			stored, rev, notStored, err = c.create(ctx, j)
		}
		// A record that is or may be stored is withdrawn with the rest if
		// another one fails.
		recorded[i] = err == nil || !notStored
		if errs[i] = err; err != nil {
			return
		}
		jobs[i] = stored
		c.put(stored, rev)
		if j.IsGroup() {
			c.log.Info("jobs submitted in a group (one record for them all)", "first_job", job.MemberID(j.ID, 1), "jobs", len(j.Members), "kind", j.Kind, "group", j.ID)
			for range j.Members {
				c.cfg.Metrics.JobSubmitted(j.Kind)
			}
			return
		}
		c.log.Info("job submitted", "job", j.ID, "kind", j.Kind, "partitions", j.Partitions)
		c.cfg.Metrics.JobSubmitted(j.Kind)
	})
	for _, err := range errs {
		if err != nil {
			return recorded, err
		}
	}
	return recorded, nil
}

// create stores the record of j. notStored reports an error before any
// stream stored it.
func (c *Coordinator) create(ctx context.Context, j *job.Job) (_ *job.Job, rev uint64, notStored bool, err error) {
	rev, err = c.cfg.Store.Jobs.Create(ctx, j)
	return c.created(ctx, j, rev, err)
}

// created finishes the create of j's record whose first try answered rev
// or err: it tries again while nothing was stored, and looks for the
// record when the answer may have been lost.
func (c *Coordinator) created(ctx context.Context, j *job.Job, rev uint64, err error) (_ *job.Job, _ uint64, notStored bool, _ error) {
	for errors.Is(err, store.ErrNotStored) && ctx.Err() == nil {
		// No stream answered (a leader being elected): nothing was stored.
		if pause(ctx, 100*time.Millisecond) != nil {
			break
		}
		rev, err = c.cfg.Store.Jobs.Create(ctx, j)
	}
	notStored = errors.Is(err, store.ErrNotStored)
	if err != nil && !notStored {
		// The create may have been stored and its answer lost: look.
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		if stored, r, gerr := c.Get(gctx, j.ID); gerr == nil {
			j, rev, err = stored, r, nil
		}
		cancel()
	}
	if err != nil {
		return j, 0, notStored, unavailable(fmt.Errorf("store job %s: %w", j.ID, err))
	}
	return j, rev, false, nil
}

// withdraw removes what a failed submit of job id stored: its tasks, and
// its record when the create's answer was lost; it reports whether all of
// it is gone. Its client was told the submit failed, and may have sent it
// again as a new job: each step is tried again while the store gives no
// answer, for up to orphanAge (storeAgain), not given up after one try (a
// store electing a leader refuses writes for seconds; seen in the chaos
// test: the delete refused, the job run and stored beside its client's
// retry). What it cannot remove is dropped later: a task whose job record
// never appears is acked and dropped by the coordinator once its id is
// older than orphanAge.
func (c *Coordinator) withdraw(id string, record bool, files string) bool {
	deadline := time.Now().Add(orphanAge)
	ok := true
	for _, step := range c.withdrawSteps(id, record, files) {
		if err := c.storeAgain(deadline, step.fn); err != nil {
			c.log.Warn("could not remove "+step.what+" of a job whose submit failed; "+step.then, "job", id, "err", err)
			ok = false
		}
	}
	return ok
}

// withdrawStep is a step of the withdraw of a failed submit's job.
type withdrawStep struct {
	what, then string // what it removes, and what is left when it cannot
	fn         func(context.Context) error
}

// withdrawSteps are the steps of withdraw: the job's list of input files
// (files, when it has one), its record (when stored, or perhaps), and its
// tasks.
func (c *Coordinator) withdrawSteps(id string, record bool, files string) []withdrawStep {
	var steps []withdrawStep
	if files != "" {
		steps = append(steps, withdrawStep{"the list of input files", "it only takes room", func(ctx context.Context) error {
			if err := c.cfg.Store.Output.Delete(ctx, files); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		}})
	}
	if record {
		steps = append(steps, withdrawStep{"the record", "it may still run", func(ctx context.Context) error {
			if err := c.cfg.Store.Jobs.Delete(ctx, id); err != nil {
				return err
			}
			c.entomb(id) // its marker goes once every read model saw it
			return nil
		}})
	}
	return append(steps, withdrawStep{"the tasks", "they will be dropped when met", func(ctx context.Context) error { return c.cfg.Store.Tasks.Purge(ctx, id) }})
}

// withdrawKey withdraws jobs ids of a failed submit whose key k a retry
// found marked withdrawing at revision rev, and then frees the key (a
// compare-and-set), in the background, once at a time per key on this
// server: the failed submit's server may have died withdrawing them, or
// its store refused the deletes. Another server may do the same at once:
// the steps are idempotent.
func (c *Coordinator) withdrawKey(k string, rev uint64, ids []string) {
	c.mu.Lock()
	stopped := c.stopped
	if c.unkeying[k] {
		c.mu.Unlock()
		return
	}
	c.unkeying[k] = true
	c.mu.Unlock()
	c.wg.Go(func() {
		defer func() {
			c.mu.Lock()
			delete(c.unkeying, k)
			c.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), orphanAge)
		defer cancel()
		go func() {
			select {
			case <-stopped:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := c.withdrawAll(ctx, ids); err != nil {
			c.log.Warn("could not withdraw the jobs of a failed submit for a retry with its Idempotency-Key; the next retry tries again", "jobs", len(ids), "first", ids[0], "err", err)
			return
		}
		if err := c.cfg.Store.Idempotency.Delete(ctx, k, rev); err != nil && !errors.Is(err, store.ErrConflict) {
			c.log.Debug("the idempotency key of a withdrawn submit stays marked withdrawing; a retry with it withdraws again", "jobs", len(ids), "first", ids[0], "err", err)
		}
	})
}

// withdrawAll withdraws jobs ids of a failed submit, within ctx, each step
// once. Their records may be stored, and their lists of input files (an
// uploaded kind's job: its name follows its id). A group goes whole when
// ids name all its jobs (a batch's); a job of a group that has others (a
// gathered single submit's) goes alone (withdrawMember).
func (c *Coordinator) withdrawAll(ctx context.Context, ids []string) error {
	ids, alone, err := c.membersAlone(ctx, ids)
	if err != nil {
		return err
	}
	aerrs := make([]error, len(alone))
	parallel(len(alone), func(i int) {
		group, n, _ := job.GroupOf(alone[i])
		if err := c.withdrawMember(ctx, alone[i], group, n); err != nil {
			aerrs[i] = fmt.Errorf("remove job %s from its group: %w", alone[i], err)
		}
	})
	if err := errors.Join(aerrs...); err != nil {
		return err
	}
	ids = withGroups(ids)
	errs := make([]error, len(ids))
	parallel(len(ids), func(i int) {
		files := ""
		if k, ok := c.cfg.Kinds.Lookup(job.IDKind(ids[i])); ok && k.ReadsData {
			files = filesObject(ids[i])
		}
		for _, step := range c.withdrawSteps(ids[i], true, files) {
			if err := step.fn(ctx); err != nil {
				errs[i] = fmt.Errorf("remove %s of job %s: %w", step.what, ids[i], err)
				return
			}
		}
	})
	return errors.Join(errs...)
}

// storeAgain calls fn, each time with a deadline of storeTimeout, while it
// fails for want of an answer (no stream answered: a leader being
// elected; or its deadline passed), until deadline passes or the
// coordinator stops, waiting 250 ms doubling to 4 s between calls; it
// returns fn's last error. A store without room (a full disk) is tried
// again too, but no oftener than every noRoomWait: each refused write is
// an error in the NATS server's log, and a withdraw given up at the first
// refusal left a job to run, once the disk had room, that its client was
// told had failed. Any other error ends it at once. The first call is made
// whatever the deadline: a step after one that spent it is still tried
// once.
func (c *Coordinator) storeAgain(deadline time.Time, fn func(context.Context) error) error {
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	wait := 250 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := fn(ctx)
		cancel()
		noRoom := errors.Is(err, store.ErrNoRoom)
		if noRoom {
			wait = max(wait, noRoomWait)
		}
		transient := noRoom || errors.Is(err, store.ErrNotStored) || errors.Is(err, context.DeadlineExceeded)
		if !transient || time.Until(deadline) < wait {
			return err
		}
		select {
		case <-stopped:
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, max(4*time.Second, noRoomWait))
	}
}

// noRoomWait is storeAgain's wait after a refusal for want of room (tests
// shorten it).
var noRoomWait = 4 * time.Second

// orphanAge is how long after its id was made a job record may still be
// on its way: results and notices of a job younger than that wait for it,
// older ones are dropped.
const orphanAge = time.Minute

// keyClaim is an idempotency key claimed by a submit: the jobs ids it
// creates, and the fingerprint of what the client asked for.
type keyClaim struct {
	key         string
	fingerprint string // "" when the caller gave none
	ids         []string
	// specs are what the client asked for, and timeout the deadline of
	// their submit: a retry stores with them the jobs that an earlier
	// submit of the same request, which ended midway, did not (complete).
	specs   []job.Spec
	timeout time.Duration
}

// keyDone marks an idempotency key whose jobs a retry found all stored
// and was answered (claimKey); a submit that succeeds leaves its key
// pending. (Earlier versions marked it done themselves.)
const keyDone = " done"

// keyTaken marks an idempotency key whose submit ended without storing
// every job (its server died midway) and that a retry of the same request
// took over to store the rest (complete): the submit, if it was only
// stalled and fails now, keeps its jobs rather than withdraw them. The
// retry that stored them all marks the key done.
const keyTaken = " taken"

// keyWithdrawing marks the idempotency key of a submit that failed: its
// jobs are being withdrawn, or were, or its server died withdrawing them.
// A retry withdraws them too, frees the key, and takes it (claimKey,
// withdrawKey).
const keyWithdrawing = " withdrawing"

// withdrawWait bounds the wait of a failed submit without an idempotency
// key for the withdraw of what it stored, before it answers.
const withdrawWait = 2 * time.Second

// completeAfter is how long past its deadline a submit that holds a key
// is surely over, whatever the servers' clocks (within that) and the
// messages it left in flight: a retry then stores what it did not.
const completeAfter = 10 * time.Second

// keyFingerprint separates a key's jobs from its request's fingerprint.
const keyFingerprint = " request="

// value is what the bucket holds for the claim: "id,id request=fp done".
// Keys written before fingerprints existed hold no " request=".
func (k *keyClaim) value(done bool) []byte {
	v := strings.Join(k.ids, ",")
	if k.fingerprint != "" {
		v += keyFingerprint + k.fingerprint
	}
	if done {
		v += keyDone
	}
	return []byte(v)
}

// parseKeyValue reads a bucket value written by keyClaim.value, taken
// over (keyTaken), or marked withdrawing (keyWithdrawing).
func parseKeyValue(v string) (ids []string, fingerprint string, done, taken, withdrawing bool) {
	v, done = strings.CutSuffix(v, keyDone)
	v, taken = strings.CutSuffix(v, keyTaken)
	v, withdrawing = strings.CutSuffix(v, keyWithdrawing)
	v, fingerprint, _ = strings.Cut(v, keyFingerprint)
	return strings.Split(v, ","), fingerprint, done, taken, withdrawing
}

// fingerprint sums the fingerprints of a submit's specs: "" when none has
// one (a submit from code, not from a request).
func fingerprint(specs []job.Spec) string {
	h := sha256.New()
	some := false
	for _, s := range specs {
		some = some || s.Fingerprint != ""
		h.Write([]byte(s.Fingerprint))
		h.Write([]byte{0})
	}
	if !some {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// claimKey records claim's key as the idempotency key of its jobs (one, or
// a batch), as pending. When an earlier submit holds the key, it returns
// that submit's jobs once they are all stored, marking the key done, with a
// compare-and-set against the earlier submit's release: that submit,
// failing, then finds the key done and answers its jobs too rather than
// withdraw them (a submit that succeeds leaves its key pending, which
// spares it a write). While the jobs are not all stored it waits; a failed
// submit releases the key. One that never said (its server died midway) is
// over once its deadline is long past (completeAfter): if it stored some
// of its records, the retry, the same request, marks the key taken and
// stores the others, under their ids, and is answered them all (complete);
// if none, the retry takes the key over with new jobs. Without the
// request's specs (an older server's key) the key is taken over after
// orphanAge. Only jobs every one of which is stored are answered again. A
// key that an earlier submit used for a different request (another
// fingerprint) is refused: answering that submit's jobs would tell the
// client its new request was stored.
func (c *Coordinator) claimKey(ctx context.Context, claim *keyClaim) ([]*job.Job, error) {
	k := idempotencyKey(claim.key)
	kv := c.cfg.Store.Idempotency
	value := claim.value(false)
	inProgress := job.Errorf(job.EUnavailable, "a submit with this Idempotency-Key is still in progress; try again shortly")
	waited := false // a deadline met after waiting is the other submit's, not the store's
	for {
		_, err := kv.Create(ctx, k, value)
		if err == nil {
			return nil, nil
		}
		if waited && ctx.Err() != nil {
			return nil, inProgress
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, unavailable(fmt.Errorf("record idempotency key: %w", err))
		}
		e, err := kv.Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			continue // released meanwhile
		}
		if waited && ctx.Err() != nil {
			return nil, inProgress
		}
		if err != nil {
			return nil, unavailable(fmt.Errorf("read idempotency key: %w", err))
		}
		prev, fp, done, taken, withdrawing := parseKeyValue(string(e.Value))
		if withdrawing {
			// The submit that holds the key failed, and withdraws its
			// jobs, or its server died doing so: they are withdrawn
			// here too, in the background (a batch's thousand jobs may
			// take longer than this request has), and the key is freed,
			// for this request to take, or the client's next.
			c.withdrawKey(k, e.Revision, prev)
			if err := pause(ctx, 50*time.Millisecond); err != nil {
				return nil, inProgress
			}
			waited = true
			continue
		}
		pending := strings.TrimSuffix(string(e.Value), keyTaken) // the value as its submit wrote it, when not done
		t, ok := job.IDTime(prev[0])
		reused := fp != "" && claim.fingerprint != "" && fp != claim.fingerprint
		// The same request again: once the submit that holds the key is
		// surely over, what it did not store (its server died midway) is
		// stored now, under its ids. (The key used to be taken over
		// after orphanAge with new jobs, and the jobs that submit had
		// stored ran too, which no client was ever answered.)
		same := ok && !done && fp == claim.fingerprint && sameRequest(prev, claim.specs)
		ended := same && (taken || time.Since(t) > claim.timeout+completeAfter && !c.isSubmitting(prev[0]))
		stale := !same && (!ok || time.Since(t) > orphanAge)
		if reused && !done && !stale {
			return nil, keyReused(prev)
		}
		if !done && !stale && !ended && !c.seenAll(prev) {
			// The submit that holds the key is still storing its jobs,
			// as the read model shows: wait without reading them. A
			// retry of a batch read its thousand records every 50 ms,
			// loading the store that submit was waiting for.
			if err := pause(ctx, 50*time.Millisecond); err != nil {
				return nil, inProgress
			}
			waited = true
			continue
		}
		var jobs []*job.Job
		if ended {
			stored, err := c.stored(ctx, prev)
			if err != nil {
				return nil, err
			}
			if !taken && !slices.ContainsFunc(stored, func(j *job.Job) bool { return j != nil }) {
				// Nothing stored: the submit died before its records,
				// perhaps amid its tasks, which a completion would
				// queue twice. The key is taken over with new jobs;
				// the tasks of these, never to have a record, are
				// dropped when met.
				if _, err := kv.Update(ctx, k, value, e.Revision); err == nil {
					return nil, nil
				} else if !errors.Is(err, store.ErrConflict) {
					return nil, unavailable(fmt.Errorf("take over idempotency key: %w", err))
				}
				continue
			}
			if !taken {
				// Taken first: the submit, if it was only stalled and
				// fails now, then keeps its jobs (releaseKey).
				rev, err := kv.Update(ctx, k, []byte(pending+keyTaken), e.Revision)
				if errors.Is(err, store.ErrConflict) {
					continue
				} else if err != nil {
					return nil, unavailable(fmt.Errorf("take over idempotency key: %w", err))
				}
				e.Revision = rev
			}
			// What fails here leaves the key taken: the next retry
			// stores the rest.
			if jobs, err = c.complete(ctx, prev, claim.specs, stored, t); err != nil {
				return nil, err
			}
		} else {
			jobs, err = c.replay(ctx, prev)
		}
		switch {
		case err == nil:
			if !done {
				if _, err := kv.Update(ctx, k, []byte(pending+keyDone), e.Revision); errors.Is(err, store.ErrConflict) {
					continue // released, or marked, meanwhile
				} else if err != nil {
					return nil, unavailable(fmt.Errorf("mark idempotency key done: %w", err))
				}
			}
			if reused {
				return nil, keyReused(prev)
			}
			return jobs, nil
		case job.ErrorCode(err) != job.ENotFound:
			return nil, err
		case done || stale:
			// Its jobs are gone (deleted since), or never were all stored
			// by a submit that never said: the key is free.
			if _, err := kv.Update(ctx, k, value, e.Revision); err == nil {
				return nil, nil
			} else if !errors.Is(err, store.ErrConflict) {
				return nil, unavailable(fmt.Errorf("take over idempotency key: %w", err))
			}
			continue
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return nil, inProgress
		}
		waited = true
	}
}

// seenAll reports whether the read model knows every one of jobs ids
// (true without a read model: the records are read then).
func (c *Coordinator) seenAll(ids []string) bool {
	if c.cfg.State == nil {
		return true
	}
	for _, id := range ids {
		if _, ok := c.cfg.State(id); !ok {
			return false
		}
	}
	return true
}

// pause waits for d, or returns ctx's error first.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// keyReused is the error of a key an earlier, different request holds.
func keyReused(ids []string) error {
	what := "job " + ids[0]
	if len(ids) > 1 {
		what = fmt.Sprintf("%d jobs, the first %s", len(ids), ids[0])
	}
	return job.Errorf(job.EKeyReused, "this Idempotency-Key was used within the last %s for a different request (it created %s); nothing was stored: send a new key with a new request, or the same request to get its jobs", job.IdempotencyWindow, what)
}

// replay returns the jobs of an earlier submit, marked Replayed.
func (c *Coordinator) replay(ctx context.Context, ids []string) ([]*job.Job, error) {
	out, err := c.getAll(ctx, ids, false)
	if err != nil {
		return nil, err
	}
	for _, j := range out {
		j.Replayed = true
	}
	return out, nil
}

// getAllAtOnce is how many reads of a submit's jobs getAll has in flight.
const getAllAtOnce = 16

// getAll reads jobs ids, several at a time: a batch sent again after a
// crash reads up to 1,000 records (and, for one never stored, asks the
// archive how far it goes), which one after another did not fit in a
// submit's time on a loaded machine, and every retry of the batch timed
// out the same way (a CI run: 503s for a minute after a SIGKILL). With
// missingOK a job not found is nil; else it is the error.
func (c *Coordinator) getAll(ctx context.Context, ids []string, missingOK bool) ([]*job.Job, error) {
	out := make([]*job.Job, len(ids))
	errs := make([]error, len(ids))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, getAllAtOnce)
	var wg sync.WaitGroup
	groups := &store.GroupReads{Jobs: c.cfg.Store.Jobs}
	for i, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			var j *job.Job
			var err error
			if group, n, ok := job.GroupOf(id); ok {
				// A batch's members: each group read once.
				j, _, err = c.getMember(ctx, id, group, n, groups)
				if job.ErrorCode(err) == job.ENotFound {
					j, _, err = c.Get(ctx, id) // stored on its own (complete)
				}
			} else {
				j, _, err = c.Get(ctx, id)
			}
			if err != nil && !(missingOK && job.ErrorCode(err) == job.ENotFound) {
				errs[i] = err
				cancel() // the others are not needed
			}
			out[i] = j
		})
	}
	wg.Wait()
	// A read's own failure, rather than the cancellation it caused in the
	// others (or the caller's).
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case !errors.Is(err, context.Canceled):
			return nil, err
		case canceled == nil:
			canceled = err
		}
	}
	if canceled != nil {
		return nil, canceled
	}
	return out, nil
}

// sameRequest reports whether specs can be the request that made jobs ids:
// as many, each of its id's kind. (The fingerprints say the rest.)
func sameRequest(ids []string, specs []job.Spec) bool {
	if len(ids) != len(specs) {
		return false
	}
	for i, id := range ids {
		if !strings.HasPrefix(id, specs[i].Kind+"_") {
			return false
		}
	}
	return true
}

// isSubmitting reports whether this server's submit of job id is under way.
func (c *Coordinator) isSubmitting(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.submitting[id]
	return ok
}

// stored returns the records of jobs ids that are stored, nil for the
// others.
func (c *Coordinator) stored(ctx context.Context, ids []string) ([]*job.Job, error) {
	return c.getAll(ctx, ids, true)
}

// complete returns the jobs ids of an earlier submit of specs (the same
// request), made at claimed, that ended midway, marked Replayed; stored
// holds their records that were stored (some, or the key was taken by a
// retry before). It first stores the others, each under its id. Their
// tasks are in the queue already: a submit stores its records only once
// every task is, and a task whose job has no record yet runs, its result
// waiting for the record until orphanAge. Past it, those results were
// dropped, and the tasks are queued again (a task of them still waiting
// then runs twice, and counts once). A job stored meanwhile by that submit
// (a create conflicts) is read back. On an error what was stored stays,
// for the next retry to complete.
func (c *Coordinator) complete(ctx context.Context, ids []string, specs []job.Spec, stored []*job.Job, claimed time.Time) ([]*job.Job, error) {
	out := slices.Clone(stored)
	var missing []int
	for i, j := range out {
		if j == nil {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		sub := make([]job.Spec, len(missing))
		jobs := make([]*job.Job, len(missing))
		for k, i := range missing {
			created, _ := job.IDTime(ids[i])
			sub[k], jobs[k] = specs[i], job.New(ids[i], specs[i], created.UTC())
		}
		// A group's members are stored each on its own, under its id:
		// the tasks in the queue are their group's, which has no record
		// and never will, and are dropped when met.
		queued := time.Since(claimed) < orphanAge-completeAfter && !job.IsMember(ids[missing[0]])
		if _, err := c.submit(ctx, sub, jobs, queued); err != nil {
			return nil, err
		}
		for k, i := range missing {
			out[i] = jobs[k]
		}
		c.log.Info("a retry stored the jobs that an earlier submit of the same request, which ended midway (its server stopped), had not",
			"jobs", len(missing), "of", len(ids), "first", ids[missing[0]])
	}
	for _, j := range out {
		j.Replayed = true
	}
	return out, nil
}

// What became of a failed submit's key.
const (
	keyWithdraw = iota // marked withdrawing, or no longer naming its jobs: they are withdrawn
	keyAnswered        // marked done by a retry that was answered the jobs, or taken to complete them
	keyUnknown         // the store did not say
)

// markWithdrawing marks claim's key withdrawing after the submit of its
// jobs failed, unless a retry found the jobs all stored and marked it done
// (or took it to store the rest) first: both are compare-and-sets on the
// key. It gives up after timeout.
func (c *Coordinator) markWithdrawing(claim *keyClaim, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	k := idempotencyKey(claim.key)
	pending := string(claim.value(false))
	for range 3 {
		e, err := c.cfg.Store.Idempotency.Get(ctx, k)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return keyWithdraw
		case err != nil:
			return keyUnknown
		case string(e.Value) == string(claim.value(true)), string(e.Value) == pending+keyTaken:
			return keyAnswered
		case string(e.Value) != pending:
			return keyWithdraw // marked already, or another submit's now: taken over once ours were found missing
		}
		_, err = c.cfg.Store.Idempotency.Update(ctx, k, []byte(pending+keyWithdrawing), e.Revision)
		if err == nil {
			return keyWithdraw
		}
		if !errors.Is(err, store.ErrConflict) {
			return keyUnknown
		}
	}
	return keyUnknown
}

// releaseWithdrawn frees claim's key once its jobs are withdrawn, if it is
// still marked so (a retry may have taken it over meanwhile). Once: a key
// left withdrawing costs a retry only the withdraw again.
func (c *Coordinator) releaseWithdrawn(claim *keyClaim) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	k := idempotencyKey(claim.key)
	e, err := c.cfg.Store.Idempotency.Get(ctx, k)
	if err != nil || string(e.Value) != string(claim.value(false))+keyWithdrawing {
		return
	}
	if err := c.cfg.Store.Idempotency.Delete(ctx, k, e.Revision); err != nil && !errors.Is(err, store.ErrConflict) {
		c.log.Debug("the idempotency key of a withdrawn submit stays marked withdrawing; a retry with it withdraws again", "jobs", len(claim.ids), "first", claim.ids[0], "err", err)
	}
}

// releaseWait is the first wait of markLater (tests shorten it).
var releaseWait = time.Second

// markLater tries markWithdrawing again, backing off up to 30 s, until the
// store says (the key marked, or marked done by a retry that was answered
// the jobs) or the coordinator stops: the jobs of a failed submit are
// withdrawn only once their key is marked, as a retry on a server that
// still reaches the store may be answered them meanwhile (the partition
// test lost acknowledged jobs to a give-up after 15 s).
func (c *Coordinator) markLater(claim *keyClaim) int {
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	for wait := releaseWait; ; wait = min(2*wait, 30*releaseWait) {
		select {
		case <-stopped:
			c.log.Warn("stopped before the store said whether a retry was answered the jobs of a failed submit; they are left in place, and a retry with the submit's Idempotency-Key is answered them", "jobs", len(claim.ids), "first", claim.ids[0])
			return keyUnknown
		case <-time.After(wait):
		}
		if r := c.markWithdrawing(claim, storeTimeout); r != keyUnknown {
			return r
		}
		c.log.Debug("the idempotency key of a failed submit is not marked withdrawing yet; its jobs wait to be withdrawn", "jobs", len(claim.ids), "first", claim.ids[0])
	}
}

// idempotencyKey is the bucket key of a client's key: any string a client
// sends becomes a valid KV key.
func idempotencyKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// publishTasks publishes every task of j not done yet and waits until the
// stream has stored them all, within a deadline that follows their number.
// Map tasks go without a message id: the stream's duplicate tracking would
// cost a fifth of the cluster's task rate, and a map task published twice
// (only when a submit is interrupted and repaired) runs twice and counts
// once. Reduce tasks carry one: every server applying a last map result
// may start the reduce phase, and a reduce queued twice would run twice.
func (c *Coordinator) publishTasks(ctx context.Context, j *job.Job) (lane string, err error) {
	tasks, lane, err := c.tasks(ctx, j)
	if err != nil {
		return "", err
	}
	return lane, c.publishTaskList(ctx, j, tasks)
}

// publishTasksAgain is publishTasks for the tasks of a job taken out of
// the queue and queued again (its kind resumed, or moved to another lane):
// each goes on from the attempts its history holds, its failed ones
// counted against its max attempts, so that a pause neither gives a
// failing task a new count nor repeats its attempt numbers. When the
// history cannot be read, the tasks start their count again.
func (c *Coordinator) publishTasksAgain(ctx context.Context, j *job.Job) (lane string, err error) {
	tasks, lane, err := c.tasks(ctx, j)
	if err != nil {
		return "", err
	}
	rs, err := c.history(ctx, j)
	if err != nil && !errors.Is(err, store.ErrDamaged) {
		c.log.Warn("could not read a job's task history; its tasks queued again count their attempts from the start", "job", j.ID, "err", err)
	}
	job.GoOn(tasks, rs)
	return lane, c.publishTaskList(ctx, j, tasks)
}

// publishTaskList publishes tasks of j.
func (c *Coordinator) publishTaskList(ctx context.Context, j *job.Job, tasks []job.Task) error {
	msgs, err := store.TaskMessages(tasks, j.Phase == job.PhaseReduce)
	if err != nil {
		return err
	}
	if err := c.publish(ctx, msgs); err != nil {
		return fmt.Errorf("queue tasks of job %s: %w", j.ID, err)
	}
	return nil
}

// tasks returns the tasks of j not done yet, in the lane of the queue
// they go to: the kind's own for a kind with a concurrency limit.
func (c *Coordinator) tasks(ctx context.Context, j *job.Job) ([]job.Task, string, error) {
	lane := c.laneOf(j.Kind)
	files := j.Files
	if j.FilesRef != "" && files == nil && j.Phase == job.PhaseMap {
		var err error
		if files, err = c.loadFiles(ctx, j); err != nil {
			return nil, "", err
		}
	}
	tasks := j.TasksOf(files)
	for i := range tasks {
		tasks[i].Lane = lane
	}
	return tasks, lane, nil
}

// filesObject names the object of job id's list of input files.
func filesObject(id string) string { return id + "/input-files" }

// storeFiles moves the input files of j, a job being submitted, to an
// object of their own (job.MaxInlineFiles): Files keeps them until the
// record is written.
func (c *Coordinator) storeFiles(ctx context.Context, j *job.Job) error {
	data, err := json.Marshal(j.Files)
	if err != nil {
		return err
	}
	name := filesObject(j.ID)
	if err := c.cfg.Store.Output.Put(ctx, name, bytes.NewReader(data)); err != nil {
		return unavailable(fmt.Errorf("store the list of the %d input files of job %s: %w", len(j.Files), j.ID, err))
	}
	j.FilesRef = name
	return nil
}

// loadFiles reads the input files of j from their object.
func (c *Coordinator) loadFiles(ctx context.Context, j *job.Job) ([]job.InputFile, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	data, err := c.cfg.Store.Output.GetBytes(ctx, j.FilesRef)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrDamaged) {
		return nil, job.Errorf(job.EConflict, "the list of the input files of job %s (object %s) is gone from the store or damaged (%v): its map tasks cannot be made; submit it again", j.ID, j.FilesRef, err)
	}
	if err != nil {
		return nil, unavailable(fmt.Errorf("read the list of the input files of job %s: %w", j.ID, err))
	}
	var files []job.InputFile
	if err := json.Unmarshal(data, &files); err != nil {
		return nil, fmt.Errorf("decode the list of the input files of job %s: %w", j.ID, err)
	}
	return files, nil
}

// markQueued records that job id's tasks are queued, in lane; a job held
// or ended meanwhile is left as it is.
func (c *Coordinator) markQueued(ctx context.Context, id, lane string) (*job.Job, error) {
	return c.update(ctx, id, func(j *job.Job) bool {
		if j.Held || j.State.Terminal() || j.Enqueued && j.Lane == lane {
			return false
		}
		j.Enqueued, j.Lane = true, lane
		return true
	})
}

// publish stores msgs in the task queue, within a deadline that follows
// their number.
func (c *Coordinator) publish(ctx context.Context, msgs []store.Message) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout(len(msgs)))
	defer cancel()
	for _, err := range c.cfg.Store.Tasks.Publish(ctx, msgs...) {
		if err != nil {
			return unavailable(fmt.Errorf("queue tasks: %w", err))
		}
	}
	return nil
}

// Cancel drops a job's queued tasks, stops its running ones and marks it
// canceled.
func (c *Coordinator) Cancel(ctx context.Context, id string) (*job.Job, error) {
	if group, n, ok := job.GroupOf(id); ok {
		if own, err := c.ownRecord(ctx, id); err != nil {
			return nil, err
		} else if !own {
			return c.cancelMember(ctx, id, group, n)
		}
	}
	c.beginEnding(id)
	defer c.endEnding(id)
	var cerr error
	j, err := c.command(ctx, id, func(j *job.Job) bool {
		if j.IsGroup() {
			cerr = job.Errorf(job.ENotFound, "job %s not found", job.Quote(id)) // a group is no job
			return false
		}
		cerr = j.Cancel(time.Now().UTC())
		return cerr == nil
	})
	if err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	c.stopTasks(ctx, j)
	if j.ReadsData() {
		// What its finished tasks stored will never be read.
		c.wg.Go(func() { c.deleteObjects(context.WithoutCancel(ctx), j) })
	}
	return j, nil
}

// Retry moves failed or canceled job id back to queued, in its next epoch,
// and queues the tasks it did not finish (all of a data job's: its
// outputs were deleted when it ended). A job not failed or canceled is a
// conflict.
func (c *Coordinator) Retry(ctx context.Context, id string) (*job.Job, error) {
	// A job whose failure or cancel this server is writing has its tasks
	// stopped first: that stop purges the job's queued tasks, and, finding the
	// job retried, queues the retry's again, so that a retry's tasks
	// published before the purge and fetched by a worker ran twice (a
	// user retrying a job the moment it failed, on a loaded server). A
	// retry on another server still can meet that (see stopTasks).
	if group, n, ok := job.GroupOf(id); ok {
		if own, err := c.ownRecord(ctx, id); err != nil {
			return nil, err
		} else if !own {
			if err := c.promote(ctx, id, group, n); err != nil {
				return nil, err
			}
		}
	}
	c.awaitEnding(ctx, id)
	var rerr error
	j, err := c.command(ctx, id, func(j *job.Job) bool {
		if j.IsGroup() {
			rerr = job.Errorf(job.ENotFound, "job %s not found", job.Quote(id)) // a group is no job
			return false
		}
		rerr = j.Retry(time.Now().UTC())
		j.Held = rerr == nil && c.paused(j.Kind)
		return rerr == nil
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	if j.Held {
		c.log.Info("job retried; its kind is paused: its tasks are queued when it resumes", "job", id, "epoch", j.Epoch)
		return j, nil
	}
	c.log.Info("job retried: queuing its unfinished tasks", "job", id, "epoch", j.Epoch, "tasks", j.Pending())
	defer c.queuingTasks(id)()
	lane, err := c.publishTasks(ctx, j)
	if err != nil {
		// The record says queued and not enqueued: the repair loop of
		// every server queues its tasks within 20 s.
		c.log.Warn("could not queue a retried job's tasks; the repair loop will", "job", id, "err", err)
		return j, nil
	}
	if marked, err := c.markQueued(ctx, id, lane); err != nil {
		c.log.Warn("could not mark the retried job's tasks queued", "job", id, "err", err)
	} else if !marked.State.Terminal() {
		j = marked
	}
	// Else its tasks ran and it ended meanwhile (a task that fails at
	// once): the answer is the job as the retry made it, queued again,
	// as the README says; its end follows.
	return j, nil
}

// deleteObjects removes what a finished data job stored besides its
// output, and its output too unless it succeeded.
func (c *Coordinator) deleteObjects(ctx context.Context, j *job.Job) {
	mr.DeleteJobObjects(ctx, c.cfg.Store.Shuffle, j)
	if j.State != job.Succeeded {
		mr.DeleteJobOutput(ctx, c.cfg.Store.Output, j)
	}
}

// Delete removes finished job id and everything it stored: its outputs,
// its task history and its record (last, so that a delete cut short can
// be done again). An unfinished job is a conflict: cancel it first.
func (c *Coordinator) Delete(ctx context.Context, id string) error {
	j, _, err := c.Get(ctx, id)
	switch {
	case err != nil:
		return err
	case !j.State.Terminal():
		return job.Errorf(job.EConflict, "job %s is %s: cancel it first, then delete it", id, j.State)
	case j.Group != "":
		_, n, _ := job.GroupOf(id)
		return c.deleteMember(ctx, id, j.Group, n, slog.LevelInfo)
	}
	return c.remove(ctx, j)
}

// remove deletes finished job (or group) j and everything it stored: its
// outputs, its task history and its record (last, so that a delete cut
// short can be done again).
func (c *Coordinator) remove(ctx context.Context, j *job.Job) error {
	id := j.ID
	if !j.State.Terminal() {
		return job.Errorf(job.EConflict, "job %s is %s: cancel it first, then delete it", id, j.State)
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if j.ReadsData() {
		// Its intermediate data was deleted when it ended (M × R objects:
		// looking for each again took longer than a request may), and
		// leaves the store after 7 days in any case.
		mr.DeleteJobOutput(ctx, c.cfg.Store.Output, j)
		if j.FilesRef != "" {
			if err := c.cfg.Store.Output.Delete(ctx, j.FilesRef); err != nil && !errors.Is(err, store.ErrNotFound) {
				return unavailable(fmt.Errorf("delete the list of the input files of job %s: %w", id, err))
			}
		}
	}
	if err := c.cfg.Store.Tasks.Purge(ctx, id); err != nil {
		return unavailable(fmt.Errorf("delete the queued tasks of job %s: %w", id, err))
	}
	// A small job's history goes with its record (its result messages,
	// shared with other small jobs', leave the stream with age).
	if !j.LogInRecord {
		if err := c.cfg.Store.Results.Purge(ctx, id); err != nil {
			return unavailable(fmt.Errorf("delete the task history of job %s: %w", id, err))
		}
	}
	if err := c.cfg.Store.Jobs.Delete(ctx, id); err != nil {
		return unavailable(fmt.Errorf("delete job %s: %w", id, err))
	}
	c.forget(id)
	if c.cfg.JobDeleted != nil {
		c.cfg.JobDeleted(j)
	}
	c.mu.Lock()
	delete(c.durs, id)
	c.mu.Unlock()
	c.entomb(id)
	return nil
}

// entomb notes job id's deletion marker, written now, for forgetLoop.
func (c *Coordinator) entomb(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tombs) < maxTombs {
		c.tombs = append(c.tombs, tomb{id, time.Now()})
	}
}

// forgetLoop purges the markers of the jobs this server deleted, once
// every read model had the time to see them. A server that stops first
// leaves its last markers (a subject each, in JetStream's memory and on
// disk) behind, for the next server to start to find (Config.Markers).
func (c *Coordinator) forgetLoop(ctx context.Context) {
	after := c.cfg.ForgetAfter
	if after <= 0 {
		after = DefaultForgetAfter
	}
	every(ctx, min(after/4, time.Minute), func() {
		// Batch after batch while markers are due: a cluster deleting
		// hundreds of jobs a second must not fall behind by a batch a look.
		for ctx.Err() == nil && c.forgetDue(ctx, after) == forgetBatch {
		}
	})
}

// forgetDue purges the markers of at most forgetBatch tombs older than
// after, and returns how many it purged.
func (c *Coordinator) forgetDue(ctx context.Context, after time.Duration) int {
	c.mu.Lock()
	n := 0
	for n < len(c.tombs) && n < forgetBatch && time.Since(c.tombs[n].at) >= after {
		n++
	}
	due := make([]string, n)
	for i, t := range c.tombs[:n] {
		due[i] = t.id
	}
	c.mu.Unlock()
	if n == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout+time.Duration(n)*time.Millisecond)
	defer cancel()
	if err := c.cfg.Store.Jobs.KV.Forget(ctx, due...); err != nil {
		c.log.Debug("could not purge the markers of deleted jobs; trying again", "jobs", n, "err", err)
		return 0
	}
	c.mu.Lock()
	c.tombs = slices.Delete(c.tombs, 0, n)
	c.mu.Unlock()
	return n
}

// sharedPurgeEvery is how often the applied messages of the shared results
// subject are purged.
const sharedPurgeEvery = 10 * time.Second

// purgeShared removes the shared results messages already applied: their
// results are in their jobs' records (task logs), and a job deleted, by a
// user or its retention, must not leave its results in the stream for the
// stream's 7 days. Every server does it; one purge covers all of them.
func (c *Coordinator) purgeShared(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := c.cfg.Store.Results.PurgeAcked(ctx, store.SharedResults); err != nil {
		c.log.Debug("could not purge the applied shared results messages; trying again", "err", err)
	}
}

// retentionLoop deletes the jobs that finished more than Retention ago.
// Every server runs it; a job deleted by another meanwhile is skipped.
func (c *Coordinator) retentionLoop(ctx context.Context) {
	every(ctx, c.cfg.RetentionEvery, func() {
		// noted reports whether the deletes go on after one of id ended
		// with err.
		noted := func(id string, err error) bool {
			switch job.ErrorCode(err) {
			case "":
				c.log.Debug("deleted a job past its retention", "job", id, "retention", c.cfg.Retention)
			case job.ENotFound, job.EConflict:
				// Deleted by another server meanwhile, or retried.
			case job.EUnavailable:
				if !errors.Is(err, store.ErrBehind) {
					return c.retentionFailed(id, err)
				}
				// Its record is not where this server's index of the
				// archive says: another server deleted the job after this
				// round listed it (every server looks in its rounds), and
				// this one has yet to see the deletion; or the store's
				// leader is behind. The next round looks again; the jobs
				// after it go on (a cluster's servers warned of the race
				// and stopped their rounds at it).
				c.log.Debug("a job past its retention whose record this server cannot read yet (deleted by another server, or the store is behind); looking again next round", "job", id, "err", err)
			default:
				return c.retentionFailed(id, err)
			}
			return true
		}
		members := map[string][]string{} // by group
		for _, id := range c.cfg.Expired(time.Now().Add(-c.cfg.Retention)) {
			if ctx.Err() != nil {
				return
			}
			if group, _, ok := job.GroupOf(id); ok {
				members[group] = append(members[group], id)
				continue
			}
			// A job, or a group whose last member ended past retention.
			j, _, err := c.getRecord(ctx, id)
			if err == nil {
				err = c.remove(ctx, j)
			}
			if !noted(id, err) {
				return
			}
		}
		for group, ids := range members {
			if ctx.Err() != nil {
				return
			}
			errs := c.expireMembers(ctx, group, ids)
			for i, err := range errs {
				if !noted(ids[i], err) {
					return
				}
			}
		}
	})
}

// retentionFailed notes that the delete of job id past its retention
// failed with err, the store not answering, and returns false: the rest of
// the round waits for the next one rather than each wait for its deadline.
// One warning in warnEvery.
func (c *Coordinator) retentionFailed(id string, err error) bool {
	if others, ok := c.retentionFailures.note(time.Now()); ok {
		c.log.Warn("could not delete a job past its retention; will try again", "job", id, "err", err,
			"other_jobs_since_last_warning", others)
	} else {
		c.log.Debug("could not delete a job past its retention; will try again", "job", id, "err", err)
	}
	return false
}

// expireMembers deletes members ids of group, each past its retention
// while its group is not (another of its jobs ended later, or runs):
// each job goes at its own time, as its expires_at says, not with its
// group's last. Their deletes share the group's writes (onMember).
func (c *Coordinator) expireMembers(ctx context.Context, group string, ids []string) []error {
	errs := make([]error, len(ids))
	parallel(len(ids), func(i int) {
		_, n, _ := job.GroupOf(ids[i])
		errs[i] = c.deleteMember(ctx, ids[i], group, n, slog.LevelDebug)
	})
	return errs
}

// stopTasks removes a finished job's waiting tasks from the queue and tells
// workers to stop the running ones, of its epoch and before.
func (c *Coordinator) stopTasks(ctx context.Context, ended *job.Job) {
	id, epoch := ended.ID, ended.Epoch
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := c.cfg.Store.Tasks.Purge(ctx, id); err != nil {
		c.log.Warn("could not drop the queued tasks of a finished job; workers will skip them", "job", id, "err", err)
	} else if ended.State == job.Succeeded {
		// A succeeded job is never retried: no later epoch to look for.
	} else if j, _, err := c.getRecord(ctx, id); err == nil && j.Epoch > epoch && !j.State.Terminal() && !j.Held && j.State != job.Scheduled {
		// A retry came in between the end this purge is for and the
		// purge (a user quick on a failure another server applied): the
		// purge may have taken the next epoch's tasks, which the job's
		// record says are queued, so that nothing would queue them
		// again. They are queued again; a copy that survived runs
		// twice and counts once.
		defer c.queuingTasks(id)()
		if lane, err := c.publishTasks(ctx, j); err != nil {
			c.log.Warn("could not queue again the tasks of a job retried while its last run was being stopped", "job", id, "err", err)
		} else if _, err := c.markQueued(ctx, id, lane); err != nil {
			c.log.Warn("could not mark queued the tasks of a job retried while its last run was being stopped", "job", id, "err", err)
		}
	}
	if err := c.cfg.Store.Notices.CancelJob(id, epoch); err != nil {
		c.log.Warn("could not tell workers to stop a finished job's tasks", "job", id, "err", err)
	}
}

// Start makes the coordinator re-queue the tasks of jobs whose submit was
// interrupted, then apply task results until Stop.
func (c *Coordinator) Start(ctx context.Context) error {
	ctx, c.stop = context.WithCancel(context.WithoutCancel(ctx))
	c.mu.Lock()
	c.stopped = ctx.Done()
	c.mu.Unlock()
	if err := c.recover(ctx); err != nil {
		if c.cfg.Unqueued == nil || c.cfg.RepairEvery <= 0 {
			return err
		}
		// The repair loop queues them within two of its rounds: a store
		// electing a leader as this server starts is no reason to stop.
		c.log.Warn("could not queue at start the tasks of jobs whose submit was cut short; the repair loop tries again", "every", c.cfg.RepairEvery, "err", err)
	}
	msgs := make(chan store.Delivery, 1024)
	// Two fetch loops: while one batch is applied, the next is on its way.
	for range 2 {
		c.wg.Go(func() { c.fetchResults(ctx, msgs) })
	}
	var err error
	c.unsub, err = c.cfg.Store.Notices.OnTasksStarted("coordinator", func(s []job.TaskStarted) {
		if s[0].Member == "" {
			c.noteStarted(s[0]) // a job starts once
			return
		}
		for _, one := range s {
			c.noteStarted(one) // a group's members, each
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to task starts: %w", err)
	}
	c.wg.Go(func() { c.startLoop(ctx) })
	c.wg.Go(func() { c.applyLoop(ctx, msgs) })
	if c.cfg.BackupAfter > 0 && c.cfg.Running != nil {
		c.wg.Go(func() { c.backupLoop(ctx) })
	}
	if c.cfg.Unqueued != nil && c.cfg.RepairEvery > 0 {
		c.wg.Go(func() { c.repairLoop(ctx) })
	}
	if c.cfg.Due != nil {
		c.wg.Go(func() { c.scheduleLoop(ctx) })
	}
	if c.cfg.Holding != nil && c.cfg.Paused != nil {
		c.wg.Go(func() { c.holdLoop(ctx) })
	}
	if c.cfg.Retention > 0 && c.cfg.Expired != nil && c.cfg.RetentionEvery > 0 {
		c.wg.Go(func() { c.retentionLoop(ctx) })
	}
	if c.cfg.Markers != nil {
		now := time.Now()
		c.mu.Lock()
		for _, id := range c.cfg.Markers() {
			if len(c.tombs) < maxTombs {
				c.tombs = append(c.tombs, tomb{id, now})
			}
		}
		c.mu.Unlock()
	}
	c.wg.Go(func() { c.forgetLoop(ctx) })
	c.wg.Go(func() { every(ctx, sharedPurgeEvery, func() { c.purgeShared(ctx) }) })
	if c.cfg.State != nil {
		c.wg.Go(func() { every(ctx, sweepEvery, c.dropFinishedRecords) })
	}
	return nil
}

// sweepEvery is how often the cache is rid of records of jobs that
// finished on other servers.
const sweepEvery = 10 * time.Second

// dropFinishedRecords drops from the cache the records of unfinished jobs
// that the read model has seen finish, and the run times kept for their
// backups: their jobs changed on another server (the one that applied
// their last results), which this one's cache does not learn of. Their
// room goes to the jobs that still run. The read model's word is enough: a
// record dropped by mistake is read again from the store at its job's next
// change, and run times dropped by mistake only delay a backup copy.
func (c *Coordinator) dropFinishedRecords() {
	c.mu.Lock()
	ids := make([]string, 0, c.records+len(c.durs))
	for id, e := range c.cache {
		if !e.stub {
			ids = append(ids, id)
		}
	}
	for id := range c.durs {
		if e, ok := c.cache[id]; !ok || e.stub {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	var done []string
	for _, id := range ids { // the read model's lock is not taken under c.mu
		st, ok := c.cfg.State(id)
		if ok && st.Terminal() || !ok && c.cfg.Deleted != nil && c.cfg.Deleted(id) {
			done = append(done, id)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range done {
		if e, ok := c.cache[id]; ok && !e.stub {
			delete(c.cache, id)
			c.records--
		}
		delete(c.durs, id)
	}
}

// Stop stops applying results; results not applied stay in the stream.
func (c *Coordinator) Stop(ctx context.Context) error {
	if c.stop == nil {
		return nil
	}
	if c.unsub != nil {
		c.unsub()
	}
	c.stop()
	c.wg.Wait()
	return nil
}

// fetchResults pulls result messages until ctx ends.
func (c *Coordinator) fetchResults(ctx context.Context, msgs chan<- store.Delivery) {
	backoff := 100 * time.Millisecond
	size := maxFetch
	for ctx.Err() == nil {
		got := 0
		err := c.cfg.Store.Results.Fetch(ctx, size, time.Second, func(m store.Delivery) {
			got++
			select {
			case msgs <- m:
			case <-ctx.Done():
				// Not applied: redelivered after the consumer's ack wait.
			}
		})
		// After an empty fetch it asks for few: nats.go makes a buffer
		// of the size asked for each fetch, a quarter of what a quiet
		// server allocated. The next fetch after one that got something
		// asks for many again.
		size = maxFetch
		if got == 0 {
			size = idleFetch
		}
		if err == nil || ctx.Err() != nil {
			backoff = 100 * time.Millisecond
			continue
		}
		c.log.Debug("fetch results", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// The results one fetch asks for: many while results come, few after a
// fetch that found none.
const (
	maxFetch  = 1024
	idleFetch = 32
)

// recover publishes again the tasks of every job whose submit did not get
// to mark it enqueued: the server died between storing the job and its tasks.
//
// With Config.Unqueued (the read model, which has read every record by
// then) only those jobs are read; without it, every record is scanned: a
// second full read of 200,000 records cost a restart about as long as the
// read model's own.
func (c *Coordinator) recover(ctx context.Context) error {
	var pending []*job.Job
	if c.cfg.Unqueued != nil {
		for _, id := range c.cfg.Unqueued() {
			j, _, err := c.getRecord(ctx, id)
			if job.ErrorCode(err) == job.ENotFound {
				continue
			}
			if err != nil {
				return err // it names the job
			}
			if !j.Enqueued && !j.Held && !j.State.Terminal() && j.State != job.Scheduled {
				pending = append(pending, j)
			}
		}
		return c.requeue(ctx, pending)
	}
	w, err := store.StartWatch(ctx, ctx, c.cfg.Store.Jobs.KV.Watch)
	if err != nil {
		return fmt.Errorf("scan jobs: %w", err)
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if e.Deleted {
			continue
		}
		j, err := store.DecodeJob(e.Value)
		if err != nil {
			c.log.Warn("skipping unreadable job record", "key", e.Key, "err", err)
			continue
		}
		if !j.Enqueued && !j.Held && !j.State.Terminal() && j.State != job.Scheduled {
			pending = append(pending, j)
		}
	}
	return c.requeue(ctx, pending)
}

// requeue publishes the tasks of pending jobs and marks them queued.
func (c *Coordinator) requeue(ctx context.Context, pending []*job.Job) error {
	for _, j := range pending {
		c.log.Warn("re-queuing the tasks of a job whose submit was interrupted", "job", j.ID, "tasks", j.Partitions-j.Done)
		done := c.queuingTasks(j.ID)
		lane, err := c.publishTasks(ctx, j)
		if err == nil {
			_, err = c.markQueued(ctx, j.ID, lane)
		}
		done()
		if err != nil {
			return err
		}
	}
	return nil
}

// Reconcile queues again the tasks of the unfinished jobs undone (each
// with its number of tasks not done, as the read model counts them) that
// the task queue no longer holds, or holds where no lane will deliver
// them, and returns how many: a byte flipped in the queue's files makes
// JetStream drop the messages of that part of the file, and nothing else
// would ever queue them again (their jobs would wait for ever); so does
// one in the results' files, for a task acked once its result was stored. A task held by a worker is still
// in the queue, so only a task that cannot be read anywhere is queued
// again; a task queued twice runs twice and counts once.
func (c *Coordinator) Reconcile(ctx context.Context, undone map[string]int) (queuedAgain int, err error) {
	if len(undone) == 0 {
		return 0, nil
	}
	queued := map[taskKey]bool{}
	seen := map[string]int{} // tasks of each job in the queue
	err = c.cfg.Store.Tasks.Scan(ctx, func(data []byte) {
		ts, err := store.DecodeTasks(data)
		if err != nil {
			return
		}
		for _, t := range ts {
			if k := keyOf(t); undone[t.Job] > 0 && !queued[k] {
				queued[k] = true
				seen[t.Job]++
			}
		}
	})
	if err != nil {
		return 0, fmt.Errorf("read the task queue: %w", err)
	}
	// A task acknowledged before the read passed it had its result stored
	// before: by the read's end. The results stored by then must all be
	// applied before a task is taken for lost (a coordinator that died
	// holding some leaves them for its consumer's ack wait: a chaos run of
	// 2026-12-07 queued again a task whose result was applied 0.7 s later,
	// and it ran twice with nothing in its history to say why).
	stored, err := c.cfg.Store.Results.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the results' state: %w", err)
	}
	// A task not in the queue was lost, or ended while the queue was read
	// (workers take tasks meanwhile): it is queued again only if it still
	// is not done a moment later, nor running.
	missing := func(id string) ([]job.Task, *job.Job, error) {
		j, _, err := c.getRecord(ctx, id)
		if job.ErrorCode(err) == job.ENotFound {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read job %s: %w", id, err)
		}
		if !j.Enqueued || j.Held || j.State.Terminal() || j.State == job.Scheduled {
			return nil, nil, nil // queued by the repair loop, or not to be queued
		}
		if c.resultsWaiting(id) {
			c.log.Debug("leaving the tasks of a job alone: results of it are stored and wait for the store to take them", "job", id)
			return nil, nil, nil
		}
		running := map[taskKey]bool{}
		if c.cfg.Running != nil {
			for _, w := range c.cfg.Running() {
				if w.Busy && w.JobID == id {
					running[taskKey{id, w.Phase, w.Partition, j.Epoch}] = true
				}
			}
		}
		tasks, _, err := c.tasks(ctx, j)
		if err != nil {
			return nil, nil, err
		}
		var lost []job.Task
		for _, t := range tasks {
			if k := keyOf(t); !queued[k] && !running[k] {
				lost = append(lost, t)
			}
		}
		return lost, j, nil
	}
	var suspects []string
	for id, n := range undone {
		if seen[id] >= n {
			continue // all its tasks are there: no need to read its record
		}
		lost, _, err := missing(id)
		if err != nil {
			return 0, err
		}
		if len(lost) > 0 {
			suspects = append(suspects, id)
		}
	}
	if len(suspects) == 0 {
		return 0, nil
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(reconcileSettle):
	}
	applied, err := c.cfg.Store.Results.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the results' state: %w", err)
	}
	if c.resultsBehind(stored.Last, applied, time.Now()) {
		c.log.Debug("tasks look lost from the queue, but results stored before it was read are not applied yet; looking again later",
			"jobs", len(suspects), "results_up_to", stored.Last, "applied_up_to", applied.Acked)
		return 0, nil
	}
	for _, id := range suspects {
		lost, j, err := missing(id)
		if err != nil {
			return queuedAgain, err
		}
		if len(lost) == 0 {
			continue
		}
		c.log.Warn("queuing again tasks neither queued, running nor done: the store lost their message or their result (a damaged file)", "job", id, "phase", j.Phase, "tasks", len(lost))
		if rs, err := c.history(ctx, j); err == nil || errors.Is(err, store.ErrDamaged) {
			job.GoOn(lost, rs) // their attempts go on
		}
		// No dedupe id: the lost message's id may still be in the stream's
		// window, which would drop this one as its duplicate.
		msgs, err := store.TaskMessages(lost, false)
		if err != nil {
			return queuedAgain, err
		}
		if err := c.publish(ctx, msgs); err != nil {
			return queuedAgain, fmt.Errorf("queue the lost tasks of job %s: %w", id, err)
		}
		queuedAgain += len(lost)
	}
	return queuedAgain, nil
}

// reconcileSettle is how long Reconcile lets the results of tasks that
// ended while it read the queue arrive.
var reconcileSettle = 2 * time.Second

// resultsBehind reports whether Reconcile should wait for the results
// stored up to sequence last, which the results' consumer (info) has not
// all acknowledged: not once its acknowledged floor has stood still for
// behindFor, twice the consumer's ack wait at least, by when every lease
// of a dead coordinator ran out and its results were delivered again. A
// floor that stands still that long is stuck (a result JetStream will not
// serve, the consumer's own trouble), and a task that waits on it waits
// for ever: its tasks are taken for lost, and the warning says why.
func (c *Coordinator) resultsBehind(last uint64, info store.StreamInfo, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if info.Acked >= last {
		c.behindSince = time.Time{}
		return false
	}
	if c.behindSince.IsZero() || info.Acked != c.behindAt {
		c.behindAt, c.behindSince = info.Acked, now
	}
	if now.Sub(c.behindSince) < max(behindFor, 2*info.AckWait) {
		return true
	}
	c.log.Warn("results stored long ago are still not applied: the results' consumer has not moved past them; tasks that look lost are queued again, and may run twice",
		"acknowledged_up_to", info.Acked, "stored_up_to", last, "since", c.behindSince)
	return false
}

// behindFor is the least time resultsBehind waits for a results' floor that
// does not move.
var behindFor = time.Minute

// unappliedFor is how long after this server last failed to apply a job's
// stored results Reconcile takes none of its tasks for lost.
const unappliedFor = time.Minute

// noteUnapplied notes that results of job id, stored, could not be
// applied at now (the store did not answer); the notes of jobs that went
// unapplied longer than unappliedFor are dropped as they pile up.
func (c *Coordinator) noteUnapplied(id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unapplied[id] = now
	if len(c.unapplied) >= 1024 && len(c.unapplied)%1024 == 0 {
		for k, at := range c.unapplied {
			if now.Sub(at) > unappliedFor {
				delete(c.unapplied, k)
			}
		}
	}
}

// appliedNow drops job id's note of results not applied: they were.
func (c *Coordinator) appliedNow(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unapplied) > 0 {
		delete(c.unapplied, id)
	}
}

// resultsWaiting reports whether this server failed to apply stored
// results of job id within unappliedFor: the results are in the store and
// come again, so the tasks they are of are not lost. In a partition the
// queue looks stuck (tasks waiting, no worker busy) while the results of
// tasks that ran before it cannot be written into their job; a CI run of
// TestPartitions saw Reconcile queue such a task again (neither queued,
// running nor done in the record) and it ran twice with no reason
// recorded. Another server's failures are not known here.
func (c *Coordinator) resultsWaiting(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.unapplied[id]
	if ok && time.Since(at) > unappliedFor {
		delete(c.unapplied, id)
		return false
	}
	return ok
}

// taskKey names a task in Reconcile.
type taskKey struct {
	job       string
	phase     job.Phase
	partition int
	epoch     int
}

func keyOf(t job.Task) taskKey { return taskKey{t.Job, t.Phase, t.Partition, t.Epoch} }

// repairLoop queues the tasks of jobs left unqueued: a job seen without its
// enqueued mark at the same revision one period apart is stuck, as no
// submit or phase change takes that long. Several servers may do it at
// once: a task queued twice runs twice and counts once.
func (c *Coordinator) repairLoop(ctx context.Context) {
	seen := map[string]uint64{}
	every(ctx, c.cfg.RepairEvery, func() {
		next := map[string]uint64{}
		for _, id := range c.cfg.Unqueued() {
			if c.isQueuing(id) {
				continue // this server is queuing them: seen again after
			}
			j, rev, err := c.getRecord(ctx, id)
			if err != nil || j.Enqueued || j.Held || j.State.Terminal() || j.State == job.Scheduled {
				continue
			}
			if seen[id] != rev {
				next[id] = rev
				continue
			}
			c.log.Warn("queuing the tasks of a job whose submit or phase change was cut short", "job", id, "phase", j.Phase)
			lane, err := c.publishTasks(ctx, j)
			if err != nil {
				c.log.Warn("could not queue them yet; will try again", "job", id, "err", err)
				next[id] = rev
				continue
			}
			if _, err := c.markQueued(ctx, id, lane); err != nil {
				c.log.Warn("could not mark the job's tasks queued", "job", id, "err", err)
			}
		}
		seen = next
	})
}

// scheduleEvery is how often a server looks for scheduled jobs whose time
// has come: a job starts within it of its time.
const scheduleEvery = 250 * time.Millisecond

// scheduleLoop queues the tasks of scheduled jobs at their time. Every
// server of a cluster runs it: the one whose write moves a job from
// scheduled to queued (compare-and-set on the record) queues its tasks;
// if it dies before it marks them queued, the repair loop queues them.
func (c *Coordinator) scheduleLoop(ctx context.Context) {
	every(ctx, scheduleEvery, func() {
		now := time.Now().UTC()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for _, id := range c.cfg.Due(now) {
			var moved bool
			j, err := c.update(ctx, id, func(j *job.Job) bool {
				moved = j.Due(now)
				j.Held = moved && c.paused(j.Kind)
				return moved
			})
			if err != nil {
				c.log.Warn("could not start a scheduled job yet; will try again", "job", id, "err", err)
				continue
			}
			if !moved || j.Held {
				continue // another server did, or it was canceled; or its kind is paused
			}
			c.log.Info("scheduled job due: queuing its tasks", "job", id, "run_at", j.RunAt)
			done := c.queuingTasks(id)
			lane, err := c.publishTasks(ctx, j)
			if err != nil {
				done()
				c.log.Warn("could not queue a scheduled job's tasks; the repair loop will", "job", id, "err", err)
				continue
			}
			if _, err := c.markQueued(ctx, id, lane); err != nil {
				c.log.Warn("could not mark the job's tasks queued", "job", id, "err", err)
			}
			done()
		}
	})
}

// laneOf names the lane of kind's tasks ("": the priority lanes).
func (c *Coordinator) laneOf(kind string) string {
	if c.cfg.LaneOf == nil {
		return ""
	}
	return c.cfg.LaneOf(kind)
}

// paused reports whether kind is paused (never without Config.Paused).
func (c *Coordinator) paused(kind string) bool {
	return c.cfg.Paused != nil && c.cfg.Paused(kind)
}

// holdLoop takes the waiting tasks of paused kinds' jobs out of the queue,
// and puts those of resumed kinds back. Every server runs it: the one
// whose write marks a job held (or not) purges (or queues) its tasks; a
// server that dies between the two leaves a held job's tasks queued (they
// run), or a released job unqueued (the repair loop queues it).
func (c *Coordinator) holdLoop(ctx context.Context) {
	every(ctx, scheduleEvery, func() {
		hold, release, relane := c.cfg.Holding(c.paused, c.laneOf)
		if len(hold)+len(release)+len(relane) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// Oldest first, many at once: the oldest jobs' tasks are those
		// at the queue's head, which workers take next. One after the
		// other, a pause of a kind with 20,000 queued jobs took 20 s to
		// reach the last, and 2,000 of its tasks started after the
		// pause was answered.
		oldestFirst(hold)
		oldestFirst(release)
		oldestFirst(relane)
		// The look's deadline says which jobs to start on, not how long
		// one may take: a job whose record says held and whose tasks its
		// deadline left in the queue would have them run twice.
		each := func(fn func(context.Context, string) string, id string) string {
			if ctx.Err() != nil {
				return "" // the next look takes it
			}
			jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), holdJobTimeout)
			defer cancel()
			return fn(jctx, id)
		}
		var held, released, moved counts
		parallel(len(hold), func(i int) { held.note(each(c.hold, hold[i])) })
		parallel(len(release), func(i int) { released.note(each(c.release, release[i])) })
		parallel(len(relane), func(i int) { moved.note(each(c.relane, relane[i])) })
		for kind, n := range held.byKind() {
			c.log.Info("kind paused: its jobs' waiting tasks left the queue until it resumes", "kind", kind, "jobs", n)
		}
		for kind, n := range released.byKind() {
			c.log.Info("kind resumed: its jobs' tasks are queued again", "kind", kind, "jobs", n)
		}
		for kind, n := range moved.byKind() {
			c.log.Info("kind's concurrency limit changed: its jobs' waiting tasks moved lanes", "kind", kind, "jobs", n, "lane", c.laneOf(kind))
		}
	})
}

// holdJobTimeout bounds the writes that hold, release or move one job's
// tasks.
const holdJobTimeout = 5 * time.Second

// oldestFirst sorts job ids by when they were made: an id is its kind,
// '_', then a ULID, whose text sorts by time.
func oldestFirst(ids []string) {
	after := func(id string) string { return id[strings.LastIndexByte(id, '_')+1:] }
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(after(a), after(b)) })
}

// counts counts jobs by kind, from many goroutines.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

// note counts kind, unless it is "" (nothing done).
func (k *counts) note(kind string) {
	if kind == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.n == nil {
		k.n = map[string]int{}
	}
	k.n[kind]++
}

func (k *counts) byKind() map[string]int { return k.n }

// hold takes the waiting tasks of job id, whose kind is paused, out of the
// queue, and returns its kind ("" when nothing was done).
func (c *Coordinator) hold(ctx context.Context, id string) string {
	var held bool
	j, err := c.update(ctx, id, func(j *job.Job) bool {
		held = !j.Held && !j.State.Terminal() && j.State != job.Scheduled && c.paused(j.Kind)
		if held {
			j.Held, j.Enqueued = true, false
		}
		return held
	})
	if err != nil || !held {
		return ""
	}
	if err := c.cfg.Store.Tasks.Purge(ctx, id); err != nil {
		c.log.Warn("could not take a paused kind's job's tasks out of the queue; they may run", "job", id, "err", err)
		return ""
	}
	c.log.Debug("kind paused: the job's waiting tasks left the queue until it resumes", "job", id, "kind", j.Kind)
	return j.Kind
}

// release queues again the tasks of held job id, whose kind is no longer
// paused, and returns its kind ("" when nothing was done).
func (c *Coordinator) release(ctx context.Context, id string) string {
	var released bool
	j, err := c.update(ctx, id, func(j *job.Job) bool {
		released = j.Held && !c.paused(j.Kind)
		if released {
			j.Held, j.Enqueued = false, false
		}
		return released
	})
	if err != nil || !released || j.State.Terminal() {
		return ""
	}
	if _, ok := c.queueAgain(ctx, j, "could not queue a resumed kind's job's tasks; the repair loop will"); !ok {
		return ""
	}
	c.log.Debug("kind resumed: the job's tasks are queued again", "job", id, "kind", j.Kind, "tasks", j.Pending())
	return j.Kind
}

// relane moves the waiting tasks of job id to its kind's lane of now, and
// returns its kind ("" when nothing was done).
func (c *Coordinator) relane(ctx context.Context, id string) string {
	var moved bool
	j, err := c.update(ctx, id, func(j *job.Job) bool {
		moved = j.Enqueued && !j.Held && !j.State.Terminal() && j.Lane != c.laneOf(j.Kind)
		if moved {
			j.Enqueued = false // the repair loop queues them if this server dies now
		}
		return moved
	})
	if err != nil || !moved {
		return ""
	}
	if err := c.cfg.Store.Tasks.Purge(ctx, id); err != nil {
		c.log.Warn("could not take a job's tasks out of their old lane; the repair loop will queue them", "job", id, "err", err)
		return ""
	}
	lane, ok := c.queueAgain(ctx, j, "could not queue a job's tasks in its kind's new lane; the repair loop will")
	if !ok {
		return ""
	}
	c.log.Debug("kind's concurrency limit changed: the job's waiting tasks moved lanes", "job", id, "kind", j.Kind, "lane", lane)
	return j.Kind
}

// queueAgain publishes the waiting tasks of j again and marks them queued
// in their lane; a publish that fails is logged with notQueued (the repair
// loop queues them later) and reports false.
func (c *Coordinator) queueAgain(ctx context.Context, j *job.Job, notQueued string) (lane string, ok bool) {
	defer c.queuingTasks(j.ID)()
	lane, err := c.publishTasksAgain(ctx, j)
	if err != nil {
		c.log.Warn(notQueued, "job", j.ID, "err", err)
		return "", false
	}
	if _, err := c.markQueued(ctx, j.ID, lane); err != nil {
		c.log.Warn("could not mark the job's tasks queued", "job", j.ID, "err", err)
	}
	return lane, true
}

// applyLoop applies results in batches: one write per job per batch.
func (c *Coordinator) applyLoop(ctx context.Context, msgs <-chan store.Delivery) {
	batch := make([]store.Delivery, 0, 1024)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-msgs:
			batch = append(batch[:0], m)
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		c.applyBatch(ctx, batch)
		// Let go of the messages while waiting for the next: a quiet
		// server held the last burst's 1,024 result messages (13 KB each
		// for batches of small jobs' results).
		clear(batch)
	}
}

// applyBatch applies a batch of result messages. A message holds one
// job's results, or (store.SharedResults) several small jobs'; it is acked
// once every job it names is applied, else given back whole (applying a
// result twice changes nothing).
func (c *Coordinator) applyBatch(ctx context.Context, batch []store.Delivery) {
	type group struct {
		results []job.TaskResult
		msgs    []int // indexes in batch
		retry   time.Duration
	}
	byJob := map[string]*group{}
	var order []string
	handled := make([]bool, len(batch))
	for i, m := range batch {
		rs, err := store.DecodeResults(m.Data())
		if err != nil {
			c.log.Error("dropping an unreadable task result message; it was not written by this version of mrcluster", "job", m.Key(), "err", err)
			_ = m.Term()
			handled[i] = true
			continue
		}
		if m.Key() != store.SharedResults && !slices.ContainsFunc(rs, job.TaskResult.Final) {
			// Only history, which stays in the stream: lost or retried
			// attempts.
			_ = m.Ack()
			handled[i] = true
			continue
		}
		for _, r := range rs {
			g := byJob[r.Job]
			if g == nil {
				g = &group{}
				byJob[r.Job] = g
				order = append(order, r.Job)
			}
			g.results = append(g.results, r)
			if !slices.Contains(g.msgs, i) {
				g.msgs = append(g.msgs, i)
			}
		}
	}
	// Jobs are independent: their records are written in parallel, so
	// that a batch of many small jobs costs a few round trips to the store,
	// not one per job.
	parallel(len(order), func(i int) {
		g := byJob[order[i]]
		g.retry = c.applyJob(ctx, order[i], g.results)
	})
	retry := make([]time.Duration, len(batch))
	for _, g := range byJob {
		for _, i := range g.msgs {
			retry[i] = max(retry[i], g.retry)
		}
	}
	for i, m := range batch {
		switch {
		case handled[i]:
		case retry[i] > 0:
			_ = m.Nak(retry[i])
		default:
			_ = m.Ack()
		}
	}
}

// maxParallel bounds the jobs whose records one call writes at once.
const maxParallel = 64

// parallel calls fn(i) for every i below n, on up to maxParallel
// goroutines, and returns once every call has. A goroutine takes call
// after call: a record's encoding grows a new goroutine's stack, which a
// goroutine per call would pay again and again.
func parallel(n int, fn func(i int)) {
	if n == 1 {
		fn(0)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, maxParallel) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// applyJob applies the final results of job id among results, and logs
// them all in the record of a job that keeps its task history there. It
// returns 0 when the messages that carry them may be acked, else after how
// long they are to be delivered again.
func (c *Coordinator) applyJob(ctx context.Context, id string, results []job.TaskResult) (retry time.Duration) {
	epoch := 0
	for _, r := range results {
		epoch = max(epoch, r.Epoch)
	}
	if c.finished(id, epoch) {
		// Late duplicates of tasks of a finished job (they are not
		// logged in a finished record).
		return 0
	}
	var applied, dropped []job.TaskResult // of the attempt that was written
	var stale, failing bool
	defer func() {
		if failing {
			c.endEnding(id)
		}
	}()
	apply := func(j *job.Job) bool {
		applied, dropped, stale = applied[:0], dropped[:0], false
		k, ok := c.cfg.Kinds.Lookup(j.Kind)
		if !ok {
			j.State, j.Error = job.Failed, fmt.Sprintf("kind %q is not registered on this server; restart it with that kind", j.Kind)
			now := time.Now().UTC()
			j.FinishedAt = &now
			if j.LogInRecord {
				j.Log(results)
			}
			failing = failing || c.beginEnding(id)
			return true
		}
		for _, r := range results {
			if !r.Final() {
				continue
			}
			if r.Phase == job.PhaseReduce && j.Phase == job.PhaseMap && j.ReduceCommits == nil && !j.State.Terminal() {
				// A reduce ran, so every map was done: this record is
				// older than the one the reduce was queued from (a job
				// back in its map phase to make a lost output again
				// keeps its reduce commits).
				stale = true
				return false
			}
			switch {
			case j.Apply(r, k.Reduce):
				applied = append(applied, r)
			case r.Commit != "" && !j.Committed(r):
				dropped = append(dropped, r)
			}
		}
		// A small job's history: every attempt, logged once.
		logged := j.LogInRecord && j.Log(results)
		if j.State == job.Failed && len(applied) > 0 && !failing {
			failing = c.beginEnding(id) // before the write that says so
		}
		return len(applied) > 0 || logged
	}
	j, err := c.update(ctx, id, apply)
	if job.ErrorCode(err) == job.ENotFound && c.awaitSubmit(ctx, id) {
		// The job's submit on this server was storing its record.
		j, err = c.update(ctx, id, apply)
	}
	switch {
	case job.ErrorCode(err) == job.ENotFound:
		// A job deleted (by a user or its retention) is not on its way:
		// its late results (a redelivery, a backup's) would otherwise be
		// delivered again and again for the rest of the minute, and hold
		// back the purge of the shared results messages.
		deleted := c.cfg.Deleted != nil && c.cfg.Deleted(id)
		if t, ok := job.IDTime(id); ok && time.Since(t) < orphanAge && !deleted {
			// A submit stores the tasks before the record: the
			// record is on its way, or its submit is being withdrawn.
			c.log.Debug("results of a job whose record is not stored yet; waiting for it", "job", id)
			return 100 * time.Millisecond
		}
		if st, known := c.heldUnfinished(id); known && !deleted {
			// The read model holds the job's record, unfinished: the
			// store's "not found" is a wrong answer (a stream leader a
			// partition deposed, or one elected that has not applied
			// its log yet). Dropped, the results that finish the job
			// were lost, and it stayed unfinished for good.
			c.log.Debug("the store answered not found for a job this server holds unfinished; applying its results again shortly", "job", id, "state", st)
			return time.Second
		}
		c.log.Debug("dropping results of a job that does not exist (its submit failed, or it was deleted)", "job", id, "results", len(results))
	case err == nil && stale:
		// Expected now and then in a cluster: handled by reading again.
		c.forget(id)
		c.log.Debug("read a job record older than its results; applying them again shortly", "job", id)
		return 250 * time.Millisecond
	case err != nil && ctx.Err() != nil:
		// This server is stopping: another server, or this one's next
		// start, applies them.
		c.log.Debug("task results not applied before the stop; they will be applied on redelivery", "job", id, "err", err)
		return time.Second
	case errors.Is(err, store.ErrBehind):
		// This server's read of the archive is catching up (it just
		// started): the next delivery finds the record.
		c.log.Debug("task results of a job this server has not read yet; they will be applied on redelivery", "job", id, "err", err)
		return time.Second
	case err != nil:
		// The store did not answer: retried on redelivery, and the
		// store's state is reported where it is watched (/readyz). A
		// store that does not answer fails every job's write at once:
		// one warning names a job, and counts the others.
		c.noteUnapplied(id, time.Now())
		if others, ok := c.applyFailures.note(time.Now()); ok {
			c.log.Warn("could not apply task results; they will be applied on redelivery", "job", id, "err", err,
				"other_jobs_since_last_warning", others)
		} else {
			c.log.Debug("could not apply task results; they will be applied on redelivery", "job", id, "err", err)
		}
		return time.Second
	}
	if j == nil {
		return 0
	}
	c.appliedNow(id)
	for _, r := range applied {
		c.noteDuration(j, r)
		c.stopOtherCopies(j, r)
		c.cfg.Metrics.TaskFinished(j.Kind, string(r.Phase), r.FinishedAt.Sub(r.StartedAt), r.Error != "")
	}
	if len(dropped) > 0 {
		// Duplicates of committed tasks (a backup or a redelivery):
		// their outputs are discarded.
		c.wg.Go(func() {
			for _, r := range dropped {
				mr.DeleteAttempt(ctx, c.cfg.Store.Shuffle, c.cfg.Store.Output, j, r)
			}
		})
	}
	for _, r := range applied {
		if r.LostMap > 0 && !j.State.Terminal() {
			// The outputs a reduce could not read are made again; what
			// is left of the lost ones goes.
			lost := r.Lost()
			c.log.Warn("a reduce task could not read the output of map tasks (deleted or damaged in the store); those map tasks run again", "job", id, "map_task", r.LostMap-1, "lost", len(lost), "reduce_task", r.Partition, "err", r.Error)
			c.wg.Go(func() {
				for _, l := range lost {
					mr.DeleteAttempt(ctx, c.cfg.Store.Shuffle, c.cfg.Store.Output, j, job.TaskResult{Phase: job.PhaseMap, Partition: l.Map - 1, Commit: l.Commit})
				}
			})
		}
	}
	if (j.Phase == job.PhaseReduce || j.Reopened > 0) && !j.Enqueued && !j.State.Terminal() {
		c.startReduce(ctx, j) // or the map task whose output was lost
	}
	if j.State == job.Failed || j.State == job.Succeeded && (j.ReadsData() || len(j.Backups) > 0) {
		// Nothing of an ended job stays queued or running: a failed
		// job's other tasks, a backup copy that lost its race.
		c.stopTasks(ctx, j)
	}
	if j.State.Terminal() && j.ReadsData() {
		c.wg.Go(func() { c.deleteObjects(ctx, j) })
	}
	if j.State.Terminal() {
		c.mu.Lock()
		delete(c.durs, id)
		c.mu.Unlock()
	}
	return 0
}

// heldUnfinished reports the state of job id in the read model when it
// holds the job unfinished.
func (c *Coordinator) heldUnfinished(id string) (job.State, bool) {
	if c.cfg.State == nil {
		return "", false
	}
	st, ok := c.cfg.State(id)
	return st, ok && !st.Terminal()
}

// beginEnding notes that this server is about to write the failure or
// cancel of job id, and reports true; endEnding ends it, once the job's
// tasks were stopped.
func (c *Coordinator) beginEnding(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.ending[id]
	if !ok {
		e = &ending{done: make(chan struct{})}
		c.ending[id] = e
	}
	e.n++
	return true
}

func (c *Coordinator) endEnding(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.ending[id]; ok {
		if e.n--; e.n == 0 {
			close(e.done)
			delete(c.ending, id)
		}
	}
}

// ending counts the failures and cancels of a job under way on this
// server; done is closed when the last is over.
type ending struct {
	done chan struct{}
	n    int
}

// awaitEnding waits until the failure or cancel of job id that this server
// is writing, if any, has stopped the job's tasks.
func (c *Coordinator) awaitEnding(ctx context.Context, id string) {
	c.mu.Lock()
	e, ok := c.ending[id]
	c.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-e.done:
	case <-ctx.Done():
	}
}

// queuingTasks notes that this server publishes the tasks of job id and
// then marks them queued in its record, until the returned func is
// called: the repair loop leaves the job alone meanwhile. Without it, a
// publish and mark that took longer than the loop's period (a loaded
// server) had the loop queue the same tasks a second time.
func (c *Coordinator) queuingTasks(id string) (done func()) {
	c.mu.Lock()
	c.queuing[id]++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.queuing[id]--; c.queuing[id] <= 0 {
			delete(c.queuing, id)
		}
	}
}

func (c *Coordinator) isQueuing(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queuing[id] > 0
}

// awaitSubmit waits for the submit of job id on this server, if one is
// under way, to end; it reports whether there was one.
func (c *Coordinator) awaitSubmit(ctx context.Context, id string) bool {
	c.mu.Lock()
	done, ok := c.submitting[id]
	c.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return true
}

// startReduce publishes the reduce tasks of a job whose maps are all done,
// or the map task of a job back in its map phase to make a lost output
// again (job.Job.reopen). A crash before they are marked enqueued is
// repaired at the next start.
func (c *Coordinator) startReduce(ctx context.Context, j *job.Job) {
	if j.Held {
		return // its kind is paused: queued when it resumes
	}
	defer c.queuingTasks(j.ID)()
	lane, err := c.publishTasks(ctx, j)
	if err != nil {
		c.log.Warn("could not queue the reduce tasks of a job yet; the repair loop of any server queues them within 20 s", "job", j.ID, "err", err)
		return
	}
	if _, err := c.markQueued(ctx, j.ID, lane); err != nil {
		c.log.Warn("could not mark the reduce tasks of a job queued; the repair loop will", "job", j.ID, "err", err)
		return
	}
	if j.Phase == job.PhaseMap {
		c.log.Info("job went back to its map phase to make a lost map output again", "job", j.ID, "kind", j.Kind, "times", j.Reopened)
		return
	}
	c.log.Info("job entered its reduce phase", "job", j.ID, "kind", j.Kind, "reducers", j.Reducers)
}

// startDelay is how long a task-start notice waits before it moves its
// queued job to running. A short task's result, applied meanwhile, starts
// the job in the write it makes anyway: a job of short tasks costs one
// write of its record less, and a job is shown running at most this late.
const startDelay = 500 * time.Millisecond

type started struct {
	job.TaskStarted
	at time.Time // when the notice came
}

// noteStarted keeps the first start notice of a job for startLoop.
func (c *Coordinator) noteStarted(s job.TaskStarted) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := s.Job
	if s.Member != "" {
		key = s.Member // a group's member: each starts on its own
	} else if e, ok := c.cache[s.Job]; ok && (e.stub || e.job.State != job.Queued) {
		return
	}
	if _, ok := c.starts[key]; !ok {
		c.starts[key] = started{s, time.Now()}
		mapx.Note(c.starts, &c.startsHigh)
	}
}

// startLoop marks running the jobs whose start notices waited startDelay.
func (c *Coordinator) startLoop(ctx context.Context) {
	t := time.NewTicker(startDelay / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var due []job.TaskStarted
			c.mu.Lock()
			for id, s := range c.starts {
				if now.Sub(s.at) >= startDelay {
					due = append(due, s.TaskStarted)
					delete(c.starts, id)
				}
			}
			c.shrink()
			c.mu.Unlock()
			for _, s := range due {
				c.markStarted(ctx, s)
			}
		}
	}
}

// markStarted moves a queued job to running when a worker starts one of its
// tasks. A lost notice is harmless: the first result does the same.
func (c *Coordinator) markStarted(ctx context.Context, s job.TaskStarted) {
	if _, n, ok := job.GroupOf(s.Member); ok {
		if c.finished(s.Job, 0) {
			return
		}
		if _, err := c.update(ctx, s.Job, func(g *job.Job) bool { return g.StartMember(n, s.StartedAt) }); err != nil && job.ErrorCode(err) != job.ENotFound {
			c.log.Debug("could not mark job running", "job", s.Member, "err", err)
		}
		return
	}
	c.mu.Lock()
	e, ok := c.cache[s.Job]
	c.mu.Unlock()
	if ok && (e.stub || e.job.State != job.Queued) {
		return
	}
	if !ok && c.cfg.State != nil {
		// Not in the cache (a job of another server, or one finished
		// long enough ago to have left it): a burst of small jobs leaves
		// a notice for each, mostly of jobs finished by now.
		if st, known := c.cfg.State(s.Job); known && st != job.Queued {
			return
		}
	}
	if _, err := c.update(ctx, s.Job, func(j *job.Job) bool { return j.Start(s.StartedAt) }); err != nil && job.ErrorCode(err) != job.ENotFound {
		c.log.Debug("could not mark job running", "job", s.Job, "err", err)
	}
}

// Get returns the stored record of job id.
func (c *Coordinator) Get(ctx context.Context, id string) (*job.Job, uint64, error) {
	j, rev, err := c.getRecord(ctx, id)
	if group, n, ok := job.GroupOf(id); ok && job.ErrorCode(err) == job.ENotFound {
		return c.getMember(ctx, id, group, n, &store.GroupReads{Jobs: c.cfg.Store.Jobs})
	}
	if err == nil && j.IsGroup() {
		return nil, 0, job.Errorf(job.ENotFound, "job %s not found", job.Quote(id)) // a group is no job
	}
	return j, rev, err
}

// getRecord returns the stored record of id, a job's or a group's, and
// its revision.
func (c *Coordinator) getRecord(ctx context.Context, id string) (*job.Job, uint64, error) {
	j, rev, err := c.cfg.Store.Jobs.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, 0, job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
	case err != nil:
		return nil, 0, unavailable(fmt.Errorf("read job %s: %w", id, err))
	}
	return j, rev, nil
}

// update applies fn to the newest record of job id and writes it back with a
// compare-and-set, retrying from a fresh read when another writer got there
// first. fn reports whether it changed the record; fn may run several times.
func (c *Coordinator) update(ctx context.Context, id string, fn func(*job.Job) bool) (*job.Job, error) {
	return c.updateFrom(ctx, id, fn, true)
}

// command is update for a person's command (cancel, retry): fn judges the
// store's record, not one this server holds, which another server may
// have changed since (a retry on one server of a job another had just
// finished was refused as "queued").
func (c *Coordinator) command(ctx context.Context, id string, fn func(*job.Job) bool) (*job.Job, error) {
	return c.updateFrom(ctx, id, fn, false)
}

func (c *Coordinator) updateFrom(ctx context.Context, id string, fn func(*job.Job) bool, held bool) (*job.Job, error) {
	var e entry
	var ok bool
	if held {
		c.mu.Lock()
		e, ok = c.cache[id]
		c.mu.Unlock()
	}
	if held && !ok && c.cfg.Record != nil {
		// In a burst of more jobs than the cache holds, three results in
		// four were of jobs it did not hold, each a read of the store.
		if j, rev, found := c.cfg.Record(id); found {
			e, ok = entry{job: j, rev: rev}, true
		}
	}
	for attempt := 0; ; attempt++ {
		if !ok || e.stub || attempt > 0 {
			j, rev, err := c.getRecord(ctx, id)
			if err != nil {
				return nil, err
			}
			e = entry{job: j, rev: rev}
		}
		// Work on a copy: the cached record may be read by whoever got it
		// from an earlier call, and other goroutines update the same job.
		j := e.job.Clone()
		if !fn(j) {
			c.put(j, e.rev)
			return j, nil
		}
		rev, err := c.cfg.Store.Jobs.Update(ctx, j, e.rev)
		if err == nil {
			c.put(j, rev)
			if j.IsGroup() {
				c.membersTransitioned(j, e.job)
			} else if j.State != e.job.State {
				c.transitioned(j, e.job.State)
			}
			return j, nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 100 {
			c.forget(id)
			return nil, unavailable(fmt.Errorf("write job %s: %w", id, err))
		}
	}
}

// transitioned logs and counts a state change this server wrote.
func (c *Coordinator) transitioned(j *job.Job, from job.State) {
	c.cfg.Metrics.JobState(j.Kind, string(j.State))
	c.logTransition(j, from, slog.LevelInfo)
}

// logTransition logs a state change of job j at level, a failure at warn.
func (c *Coordinator) logTransition(j *job.Job, from job.State, level slog.Level) {
	if j.State == job.Failed {
		level = slog.LevelWarn
	}
	if !c.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"job", j.ID, "kind", j.Kind, "from", from, "to", j.State}
	if j.FinishedAt != nil {
		attrs = append(attrs, "duration", j.FinishedAt.Sub(j.CreatedAt), "tasks_done", j.Done)
	}
	switch j.State {
	case job.Failed:
		attrs = append(attrs, "error", j.Error)
	case job.Succeeded:
		if j.Result != nil {
			attrs = append(attrs, "sum", j.Result.Sum)
		}
		if j.Counters != nil {
			attrs = append(attrs, "input_bytes", j.Counters.InputBytes, "output_records", j.Counters.ReduceOutputRecords)
		}
	}
	c.log.Log(context.Background(), level, "job "+string(j.State), attrs...)
}

func (c *Coordinator) put(j *job.Job, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j.State.Terminal() {
		// Keep only what tells a late result or notice to go away, for
		// the newest finished jobs: a result of an older one reads its
		// record from the store.
		old, ok := c.cache[j.ID]
		if ok && old.stub && old.epoch >= j.Epoch {
			return
		}
		if ok && !old.stub {
			c.records--
		}
		id := c.stubIDs.Pack(j.ID) // the map's key from now on (a key is replaced on assignment)
		c.cache[id] = entry{stub: true, epoch: j.Epoch}
		mapx.Note(c.cache, &c.cacheHigh)
		c.stubs = append(c.stubs, id)
		for len(c.stubs) > maxStubs {
			if e, ok := c.cache[c.stubs[0]]; ok && e.stub {
				delete(c.cache, c.stubs[0])
			}
			c.stubs[0] = ""
			c.stubs = c.stubs[1:]
		}
		return
	}
	old, ok := c.cache[j.ID]
	if ok && (old.stub && old.epoch >= j.Epoch || !old.stub && old.rev > rev) {
		return // a newer write of another goroutine is already cached
	}
	if !ok || old.stub {
		if c.records >= c.cachedRecords() {
			c.evictRecord()
		}
		c.records++
	}
	c.cache[j.ID] = entry{job: j, rev: rev}
	mapx.Note(c.cache, &c.cacheHigh)
}

// evictRecord drops one unfinished job's record from the cache, the first
// the map's random order gives: its job's next change reads it from the
// store. c.mu must be held.
func (c *Coordinator) evictRecord() {
	for id, e := range c.cache {
		if !e.stub {
			delete(c.cache, id)
			c.records--
			return
		}
	}
}

func (c *Coordinator) cachedRecords() int {
	if c.cfg.CachedRecords > 0 {
		return c.cfg.CachedRecords
	}
	return DefaultCachedRecords
}

// shrink copies small the maps that a burst of jobs grew and that now
// hold much less. c.mu must be held.
func (c *Coordinator) shrink() {
	c.cache = mapx.Shrunk(c.cache, &c.cacheHigh)
	c.durs = mapx.Shrunk(c.durs, &c.dursHigh)
	c.starts = mapx.Shrunk(c.starts, &c.startsHigh)
	c.submitting = mapx.Shrunk(c.submitting, &c.submittingHigh)
}

// maxStubs bounds the finished jobs a coordinator remembers, so that its
// memory does not grow with the cluster's history.
const maxStubs = 10_000

// finished reports whether job id is known to have finished in epoch or
// later: results of that epoch are late duplicates. A result of a later
// epoch (the job was retried, maybe on another server) reads the record.
func (c *Coordinator) finished(id string, epoch int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.cache[id]
	return e.stub && e.epoch >= epoch
}

func (c *Coordinator) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cache[id]; ok && !e.stub {
		c.records--
	}
	delete(c.cache, id)
}

func unavailable(err error) error {
	return job.Unavailable("job store", err)
}

// maxTaskHistory bounds how many task results one read returns.
const maxTaskHistory = 100_000

// Attempt is a finished attempt of a task as a job's history shows it.
type Attempt struct {
	job.TaskResult
	// Superseded marks a final result that did not count
	// (job.Superseded).
	Superseded bool
}

// history returns the stored results of j's task attempts, in the order
// they were stored: its record's log, or its results in the stream, read
// whole or not at all within a deadline of its own (but for a part the
// store cannot read: then the rest, with store.ErrDamaged).
func (c *Coordinator) history(ctx context.Context, j *job.Job) ([]job.TaskResult, error) {
	if j.LogInRecord {
		return slices.Clone(j.TaskLog), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	msgs, err := c.cfg.Store.Results.Read(ctx, j.ID, maxTaskHistory)
	if err != nil && !errors.Is(err, store.ErrDamaged) {
		return nil, fmt.Errorf("read the results of job %s: %w", j.ID, err)
	}
	var out []job.TaskResult
	for _, m := range msgs {
		if rs, err := store.DecodeResults(m); err == nil {
			out = append(out, rs...)
		}
	}
	return out, err
}

// Tasks returns the stored results of every finished task attempt of job id,
// by partition then attempt (then in the order they were applied): the
// job's per-task history.
func (c *Coordinator) Tasks(ctx context.Context, id string) ([]Attempt, error) {
	j, _, err := c.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []job.TaskResult
	if j.Group != "" {
		g, _, gerr := c.getRecord(ctx, j.Group)
		if gerr != nil {
			return nil, gerr
		}
		_, n, _ := job.GroupOf(id)
		out, err = c.memberHistory(ctx, g, id, n)
	} else {
		out, err = c.history(ctx, j)
	}
	switch {
	case errors.Is(err, store.ErrDamaged):
		// What can be read is shown: the job's record holds its
		// outcome; the store's files need a look.
		c.log.Error("part of a job's task history is damaged in the store; showing the rest", "job", id, "err", err)
	case err != nil:
		return nil, unavailable(err)
	}
	// Which results did not count is read in the order they were stored
	// (the record's log, the job's results in the stream), which is the
	// order they were applied in, but for a result given back after a
	// failed write and applied after a later one: then the history may
	// name the other run of the task as the one that counted.
	out = job.DropRepeated(out)
	job.ExplainLost(out)
	superseded := job.Superseded(j, out)
	attempts := make([]Attempt, len(out))
	for i, r := range out {
		attempts[i] = Attempt{r, superseded[i]}
	}
	sort.SliceStable(attempts, func(i, j int) bool {
		if attempts[i].Partition != attempts[j].Partition {
			return attempts[i].Partition < attempts[j].Partition
		}
		return attempts[i].Attempt < attempts[j].Attempt
	})
	return attempts, nil
}

// Output writes the output of succeeded job j to w.
func (c *Coordinator) Output(ctx context.Context, j *job.Job, w io.Writer) error {
	if j.Module != "" && c.cfg.Modules != nil {
		k, release, err := c.cfg.Modules.TaskKind(ctx, job.Task{Job: j.ID, Kind: j.Kind, Module: j.Module, Params: j.Params})
		if errors.Is(err, store.ErrNotFound) {
			return job.Errorf(job.EConflict, "job %s's kind %q was deleted, and with it the module (version %.12s) that writes its output lines; upload that same .wasm file again, under any name, to download the output", j.ID, j.Kind, j.Module)
		}
		if errors.Is(err, store.ErrDamaged) {
			return job.Errorf(job.EInternal, "the module (version %.12s) that writes the output lines of job %s's kind %q: %v, to download the output", j.Module, j.ID, j.Kind, err)
		}
		if err != nil {
			return job.Errorf(job.EUnavailable, "the module of job %s's kind %q: %v", j.ID, j.Kind, err)
		}
		defer release()
		return mr.WriteOutput(ctx, c.cfg.Store.Output, k, j, w)
	}
	k, ok := c.cfg.Kinds.Lookup(j.Kind)
	if !ok {
		return job.Errorf(job.EConflict, "kind %q of job %s is not registered on this server; restart it with that kind", j.Kind, j.ID)
	}
	return mr.WriteOutput(ctx, c.cfg.Store.Output, k, j, w)
}

// pacer lets one of a run of alike warnings out every warnEvery, and
// counts the others in between.
type pacer struct {
	mu     sync.Mutex
	last   time.Time
	others int
}

// warnEvery is how often a run of alike failures is warned of.
const warnEvery = 10 * time.Second

// note counts a failure at now: ok when it is to be warned of, with the
// count of those passed over since the last warning.
func (p *pacer) note(now time.Time) (others int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.last.IsZero() && now.Sub(p.last) < warnEvery {
		p.others++
		return 0, false
	}
	others, p.others, p.last = p.others, 0, now
	return others, true
}
