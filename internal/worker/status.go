package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// reporter writes worker statuses to the bucket: a change at most every
// interval (so a worker running thousands of tiny tasks a second does not
// write thousands of times), and every status once per heartbeat.
type reporter struct {
	kv        store.KV
	interval  time.Duration
	heartbeat time.Duration
	leave     context.Context // the pool's leaveCtx

	mu sync.Mutex
	// writing is held through a flush (a semaphore, made at the first):
	// the pool's stop flushes while the heartbeat may, and two writes of
	// one key at once would leave the revision of the earlier one as this
	// pool's last. A flush waits for it only until its own ctx ends: the
	// heartbeat's may be waiting on a store that does not answer.
	writing chan struct{}
	status  []job.WorkerStatus
	dirty   []bool
	// progress is the running task's of each worker (nil: none), copied
	// into its status at most every progressEvery (progressAt).
	progress   []*job.Progress
	progressAt []time.Time
	// revs are the revisions of the statuses as this pool last wrote them
	// (0 before the first write): each write expects its own last one.
	revs []uint64
	// replaced is set once another process's status was found under one
	// of this pool's keys: nothing is written after it, and a stop
	// deletes only the statuses still at this pool's revision.
	replaced *ReplacedError
}

// ReplacedError says that another process runs a pool of this pool's name:
// it wrote its status over this one's, having taken this pool for dead
// (it was paused longer than its status lives, SIGSTOP or a suspended
// machine, and its status expired, or another host's heartbeat stood
// still). Both would run side by side, each overwriting the other's
// statuses; this one stops.
type ReplacedError struct {
	Pool  string
	Other job.WorkerStatus
}

// Is makes a ReplacedError an ErrNameInUse.
func (e *ReplacedError) Is(target error) bool { return target == ErrNameInUse }

func (e *ReplacedError) Error() string {
	return fmt.Sprintf("another process took over the name of this pool of workers, %s (on host %s, process %d, since %s), while this one was paused or cut off: this one stops; give one of them another --name",
		e.Pool, e.Other.Host, e.Other.PID, e.Other.StartedAt.Format(time.RFC3339))
}

// progressEvery is how often a running task's progress is written into
// its worker's status, at most: a write of every worker's status every
// few seconds, not at every step of its task.
const progressEvery = 2 * time.Second

// track makes worker i's status follow p, the progress of the task it
// runs (nil: none), from progressEvery after its start: the start's own
// write says the task began, and a task shorter than that costs no write
// more.
func (r *reporter) track(i int, p *job.Progress) {
	r.mu.Lock()
	if r.progress == nil {
		r.progress, r.progressAt = make([]*job.Progress, len(r.status)), make([]time.Time, len(r.status))
	}
	r.progress[i], r.progressAt[i] = p, time.Now()
	r.mu.Unlock()
}

// noteProgress copies the running tasks' progress into their statuses,
// marking them to be written, when it moved by a percent or more and was
// last written progressEvery ago or more, or the status is written
// anyway (all, or marked). r.mu is held.
func (r *reporter) noteProgress(all bool, now time.Time) {
	for i, p := range r.progress {
		if p == nil {
			continue
		}
		f, ok := p.Load()
		if !ok {
			continue
		}
		s := &r.status[i]
		moved := s.Progress == nil || math.Abs(f-*s.Progress) >= 0.01 || f == 1 && *s.Progress != 1
		if !moved || !all && !r.dirty[i] && now.Sub(r.progressAt[i]) < progressEvery {
			continue
		}
		s.Progress, r.progressAt[i], r.dirty[i] = &f, now, true
	}
}

func (r *reporter) set(i int, fn func(*job.WorkerStatus)) {
	r.mu.Lock()
	fn(&r.status[i])
	r.dirty[i] = true
	r.mu.Unlock()
}

// run writes statuses until ctx ends, then deletes them: a worker that stops
// cleanly leaves at once instead of at the end of its TTL. onErr hears of a
// failed write at most once a heartbeat.
func (r *reporter) run(ctx context.Context, onErr func(error)) {
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	var lastBeat, lastErr time.Time
	for {
		now := time.Now()
		all := now.Sub(lastBeat) >= r.heartbeat
		if all {
			lastBeat = now
		}
		err := r.flush(ctx, all, now)
		if _, ok := errors.AsType[*ReplacedError](err); ok {
			onErr(err)
			<-ctx.Done() // its owner stops the pool
			r.remove()
			return
		}
		if err != nil {
			// What the store did not take (a leader being elected) is
			// written whole within retryBeat, not at the next heartbeat:
			// a write that waited out its deadline and a whole heartbeat
			// after it came close to the TTL, and workers that were alive
			// were forgotten.
			lastBeat = now.Add(min(retryBeat, r.heartbeat) - r.heartbeat)
			if now.Sub(lastErr) >= r.heartbeat {
				lastErr = now
				onErr(err)
			}
		}
		select {
		case <-ctx.Done():
			r.remove()
			return
		case <-tick.C:
		}
	}
}

// remove deletes the statuses this pool wrote, each only at the revision
// it wrote: a status written over it is another process's.
func (r *reporter) remove() {
	// Not past the pool's stop's grace (leave): a stop that waited that
	// long for the store does not wait for it again.
	leave := r.leave
	if leave == nil {
		leave = context.Background()
	}
	dctx, cancel := context.WithTimeout(leave, 2*time.Second)
	defer cancel()
	r.mu.Lock()
	revs := slices.Clone(r.revs)
	r.mu.Unlock()
	for i, rev := range revs {
		if rev > 0 {
			_ = r.kv.Delete(dctx, r.status[i].Key, rev)
		}
	}
}

// retryBeat is how soon statuses are written again after a failed write.
const retryBeat = time.Second

// flush writes the statuses changed since the last flush, or all of them;
// it stops at the first write that fails. Once the pool was replaced it
// writes nothing.
func (r *reporter) flush(ctx context.Context, all bool, now time.Time) error {
	r.mu.Lock()
	if r.writing == nil {
		r.writing = make(chan struct{}, 1)
	}
	writing := r.writing
	r.mu.Unlock()
	select {
	case writing <- struct{}{}:
		defer func() { <-writing }()
	case <-ctx.Done():
		return nil // as a write cut short by ctx: the caller is leaving
	}
	r.mu.Lock()
	if r.replaced != nil {
		r.mu.Unlock()
		return nil
	}
	r.noteProgress(all, now)
	var out []int
	var statuses []job.WorkerStatus
	for i := range r.status {
		if all || r.dirty[i] {
			r.dirty[i] = false
			r.status[i].LastSeen = now.UTC()
			out = append(out, i)
			statuses = append(statuses, r.status[i])
		}
	}
	r.mu.Unlock()
	for n, i := range out {
		if err := r.write(ctx, i, statuses[n]); err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// write stores status s, of worker i, expecting the revision this pool
// last wrote. Another revision is either this pool's own write whose answer
// was lost (written again over it), or another process's: the pool was
// replaced (*ReplacedError). A status that expired while the process was
// paused is created again.
func (r *reporter) write(ctx context.Context, i int, s job.WorkerStatus) error {
	data, _ := json.Marshal(s)
	r.mu.Lock()
	if r.revs == nil {
		r.revs = make([]uint64, len(r.status))
	}
	rev := r.revs[i]
	r.mu.Unlock()
	known := rev // the last write of this pool the store confirmed
	var err error
	var n uint64
	for range 3 {
		switch rev {
		case 0:
			// The first write: the pool's start found the name free.
			n, err = r.kv.Put(ctx, s.Key, data)
		default:
			n, err = r.kv.Update(ctx, s.Key, data, rev)
		}
		if !errors.Is(err, store.ErrConflict) {
			break
		}
		e, gerr := r.kv.Get(ctx, s.Key)
		if errors.Is(gerr, store.ErrNotFound) {
			// It expired (the process was paused past its time to
			// live), and nobody took the name meanwhile.
			if n, err = r.kv.Create(ctx, s.Key, data); !errors.Is(err, store.ErrConflict) {
				break
			}
			continue // written meanwhile: read again
		}
		if gerr != nil {
			return gerr
		}
		if e.Revision <= known {
			// A copy that has not seen this pool's last write (a
			// follower's answer): nothing to decide on; the next
			// flush tries again.
			return fmt.Errorf("write the status of worker %s: the store answered with a copy older than this pool's last write", s.Key)
		}
		var other job.WorkerStatus
		if json.Unmarshal(e.Value, &other) == nil && !sameProcess(other, s) {
			replaced := &ReplacedError{Pool: s.Pool, Other: other}
			r.mu.Lock()
			r.replaced = replaced
			r.mu.Unlock()
			return replaced
		}
		rev = e.Revision // this pool's own write, whose answer was lost
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.revs[i] = n
	r.mu.Unlock()
	return nil
}

// sameProcess reports whether statuses a and b were written by one
// process's pool.
func sameProcess(a, b job.WorkerStatus) bool {
	return a.Host == b.Host && a.PID == b.PID && a.StartedAt.Equal(b.StartedAt)
}
