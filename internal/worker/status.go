package worker

import (
	"context"
	"encoding/json"
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

	mu     sync.Mutex
	status []job.WorkerStatus
	dirty  []bool
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
		if err := r.flush(ctx, all, now); err != nil {
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
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			for _, s := range r.snapshot() {
				_ = r.kv.Delete(dctx, s.Key, 0)
			}
			cancel()
			return
		case <-tick.C:
		}
	}
}

// retryBeat is how soon statuses are written again after a failed write.
const retryBeat = time.Second

func (r *reporter) snapshot() []job.WorkerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]job.WorkerStatus(nil), r.status...)
}

// flush writes the statuses changed since the last flush, or all of them;
// it stops at the first write that fails.
func (r *reporter) flush(ctx context.Context, all bool, now time.Time) error {
	r.mu.Lock()
	var out []job.WorkerStatus
	for i := range r.status {
		if all || r.dirty[i] {
			r.dirty[i] = false
			r.status[i].LastSeen = now.UTC()
			out = append(out, r.status[i])
		}
	}
	r.mu.Unlock()
	for _, s := range out {
		data, _ := json.Marshal(s)
		if _, err := r.kv.Put(ctx, s.Key, data); err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}
