package worker

import (
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/store"
)

// finished is a task result waiting to be stored; when it is the task's
// last word, its lease is acked once it is stored. A history-only record
// (a lost or retried attempt) has no lease.
type finished struct {
	result job.TaskResult
	// carried are history records that go out before result, in its
	// message (job.Task.Carried).
	carried []job.TaskResult
	lease   *lease
	// shared: the task's job keeps its history in its record
	// (job.LogInRecord), and its result goes out with other such jobs'.
	shared bool
	// failing is when the store first did not take the result, tries
	// how many times it did not (storeAgain).
	failing time.Time
	tries   int
}

// storeAgainFor is how long a pool tries again to store the results of
// tasks that ended, when the store does not take them (its server paused
// or cut off, a leader being elected, a full disk), before it gives the
// tasks up to run again. Their leases are renewed meanwhile, so no other
// worker takes them while this one is reachable: a task of an hour is not
// run again because its result met a store away for a minute.
const storeAgainFor = 10 * time.Minute

// storeAgainMax bounds the wait between two tries of a result's store.
const storeAgainMax = 10 * time.Second

// maxShared bounds the results of one message of several jobs' results.
const maxShared = 64

// maxResultMessage is the size past which a message of several results is
// split: NATS refuses a message over its max_payload (1 MiB by default),
// and a result is at most a few KiB (its error and preview are cut short).
const maxResultMessage = 256 << 10

// maxResultBatch bounds how many results one stored message carries.
const maxResultBatch = 256

// publishResults stores results and then acknowledges their tasks. Results
// that pile up while a store is in flight go out together, one message per
// job: at low load each result is stored at once, under load the number of
// stream writes per task falls.
func (p *Pool) publishResults() {
	batch := make([]finished, 0, maxResultBatch)
	for f := range p.results {
		batch = append(batch[:0], f)
	drain:
		for len(batch) < maxResultBatch {
			select {
			case f, ok := <-p.results:
				if !ok {
					break drain
				}
				batch = append(batch, f)
			default:
				break drain
			}
		}
		p.store(batch)
		clear(batch) // the results and leases are not held while waiting
	}
}

// store publishes a batch, one message per job (small jobs' together,
// up to maxShared results a message), and waits for the acks under one
// deadline: every wait ends by then, whatever happens to the others (a
// partition, a leader election, a full disk).
func (p *Pool) store(batch []finished) {
	byJob := map[string][]finished{}
	var order []string
	var shared [][]finished
	for _, f := range batch {
		if f.shared {
			if len(shared) == 0 || len(shared[len(shared)-1]) == maxShared {
				shared = append(shared, nil)
			}
			shared[len(shared)-1] = append(shared[len(shared)-1], f)
			continue
		}
		if _, ok := byJob[f.result.Job]; !ok {
			order = append(order, f.result.Job)
		}
		byJob[f.result.Job] = append(byJob[f.result.Job], f)
	}
	groups := shared
	for _, id := range order {
		groups = append(groups, byJob[id])
	}
	ctx, cancel := p.storeCall(mr.StoreCallTimeout)
	defer cancel()
	msgs := make([]store.Message, 0, len(groups))
	var sent [][]finished
	for len(groups) > 0 {
		tasks := groups[0]
		groups = groups[1:]
		results := make([]job.TaskResult, 0, len(tasks))
		for _, f := range tasks {
			results = append(append(results, f.carried...), f.result)
		}
		m, err := store.ResultMessage(results, tasks[0].shared)
		if err != nil {
			p.retry(tasks, err) // it would fail the same way again
			continue
		}
		if len(m.Data) > maxResultMessage && len(tasks) > 1 {
			// Many results with previews: two messages (a message over
			// the store's largest would never be stored, and its tasks
			// would run again for ever).
			half := len(tasks) / 2
			groups = append(groups, tasks[:half], tasks[half:])
			continue
		}
		msgs = append(msgs, m)
		sent = append(sent, tasks)
	}
	for i, err := range p.cfg.Store.Results.Publish(ctx, msgs...) {
		if err != nil {
			p.storeAgain(sent[i], err)
			continue
		}
		if f := sent[i][0]; f.tries > 0 {
			p.log.Info("stored task results the store had not taken before; their tasks are not run again",
				"job", f.result.Job, "results", len(sent[i]), "tries", f.tries+1, "after", time.Since(f.failing).Round(time.Millisecond))
		}
		for _, f := range sent[i] {
			if f.lease != nil {
				f.lease.ack()
			}
		}
	}
}

// storeAgain stores tasks' results again after a wait (a second, doubling
// up to storeAgainMax), while their leases are renewed, until
// storeAgainFor after the first refusal: then, or once the pool stops, the
// tasks are given up to run again (retry).
func (p *Pool) storeAgain(tasks []finished, err error) {
	now := time.Now()
	f := &tasks[0]
	if f.failing.IsZero() {
		for i := range tasks {
			tasks[i].failing = now
		}
	}
	if now.Sub(f.failing) >= p.cfg.storeAgainFor {
		p.retry(tasks, err)
		return
	}
	for i := range tasks {
		tasks[i].tries++
	}
	if !p.after(p.againWait(f.tries), func() { p.store(tasks) }) {
		p.retry(tasks, err) // the pool stops
		return
	}
	if f.tries == 1 {
		p.log.Warn("could not store task results; trying again in a while, the tasks are held meanwhile (they run again if the store has not taken them in "+p.cfg.storeAgainFor.String()+")",
			"job", f.result.Job, "results", len(tasks), "err", err)
	} else {
		p.log.Debug("could not store task results again", "job", f.result.Job, "results", len(tasks), "tries", f.tries, "err", err)
	}
}

// retry hands tasks whose results could not be stored back to the queue
// for another run, which is not counted as a failed attempt. History-only
// records are dropped: the task's final result will be stored.
func (p *Pool) retry(tasks []finished, err error) {
	p.log.Warn("could not store task results; the tasks will run again", "job", tasks[0].result.Job, "results", len(tasks), "err", err)
	for _, f := range tasks {
		if f.lease == nil {
			continue
		}
		t, derr := taskOf(f.lease.msg())
		if derr != nil {
			f.lease.release()
			continue
		}
		t.Runs, t.Failures, t.Lost = f.result.Attempt, f.result.Failures, 0
		if f.result.Error == "" {
			t.Failures = 0
		} else {
			t.Failures--
		}
		// Its history says why it runs again: the record is stored now if
		// the store takes it by then (the channel is this goroutine's own,
		// so never wait on it; a stopping pool closed it), and with the
		// next run's final result.
		r := f.result
		r.Outcome, r.Error = job.OutcomeInterrupted, job.ClipError("its result could not be stored: "+err.Error())
		r.Commit, r.Counters, r.Preview = "", nil, nil
		p.resultsMu.Lock()
		if !p.resultsClosed {
			select {
			case p.results <- finished{result: r, shared: f.shared}:
			default:
			}
		}
		p.resultsMu.Unlock()
		t.Carried = job.Carry(f.carried, r)
		p.later(f.lease, p.backoff(1), t)
	}
}

// againWait is the wait before a call to the store that failed tries
// times is made again.
func (p *Pool) againWait(tries int) time.Duration {
	wait := p.cfg.storeAgainWait
	for range tries - 1 {
		wait = min(2*wait, storeAgainMax)
	}
	return wait
}

// holdOn schedules fn, a call to the store for l's task that failed (a
// give-back, a retry's queueing), to be made again after a wait while the
// pool renews l, and reports true with how many times the call failed
// before; false once the calls have failed for storeAgainFor, or when the
// pool stops: the caller then lets l go, and its task comes back from the
// queue as a lost run.
func (p *Pool) holdOn(l *lease, fn func()) (bool, int) {
	now := time.Now()
	l.mu.Lock()
	if l.failing.IsZero() {
		l.failing = now
	}
	since := now.Sub(l.failing)
	l.tries++
	tries := l.tries
	l.mu.Unlock()
	if since >= p.cfg.storeAgainFor {
		return false, tries - 1
	}
	return p.after(p.againWait(tries), fn), tries - 1
}
