package natsx

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// deadChunks purges, in the background, the chunks of objects that are
// known to be dead (a put that failed, an object replaced) whose purge the
// store refused when they died: on a full disk, the put fails and so may
// its purge, and the chunks it sent would then hold their space for good
// (no object names them, and the blocks and modules buckets never
// expire), just when the disk needs it. One goroutine at a time tries
// them again, every deadChunksEvery, until each is purged, the store
// closes, or deadChunksFor has passed since the chunks died.
type deadChunks struct {
	mu      sync.Mutex
	pending map[string]deadSubject // by subject
	running bool
	done    chan struct{} // closed when the running retry ends
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	log     *slog.Logger
	// every and giveUp are deadChunksEvery and deadChunksFor (tests set
	// them shorter).
	every, giveUp time.Duration
}

type deadSubject struct {
	st     jetstream.Stream
	bucket string
	since  time.Time
}

const (
	deadChunksEvery = 5 * time.Second
	deadChunksFor   = time.Hour
	// maxDeadSubjects bounds the list: past it, a subject is dropped (and
	// logged) rather than held.
	maxDeadSubjects = 10000
)

func newDeadChunks(log *slog.Logger) *deadChunks {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &deadChunks{pending: map[string]deadSubject{}, log: log, every: deadChunksEvery, giveUp: deadChunksFor}
}

// add notes that subject's chunks in st (bucket's stream) are dead and
// their purge was refused.
func (d *deadChunks) add(st jetstream.Stream, bucket, subject string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if len(d.pending) >= maxDeadSubjects {
		d.log.Warn("too many dead object chunks wait for their purge; these are left in the store", "bucket", bucket, "subject", subject)
		return
	}
	d.pending[subject] = deadSubject{st: st, bucket: bucket, since: time.Now()}
	if d.running {
		return
	}
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithCancel(context.Background())
	}
	d.running, d.done = true, make(chan struct{})
	go d.retry(d.ctx, d.done)
}

func (d *deadChunks) retry(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		todo := maps.Clone(d.pending)
		d.mu.Unlock()
		for subject, ds := range todo {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := ds.st.Purge(pctx, jetstream.WithPurgeSubject(subject))
			cancel()
			gone := err == nil
			if !gone && time.Since(ds.since) > d.giveUp && ctx.Err() == nil {
				d.log.Warn("the chunks of a failed or replaced object could not be purged; they keep their space in the store until its bucket is emptied", "bucket", ds.bucket, "subject", subject, "since", ds.since, "err", err)
				gone = true
			}
			if gone {
				d.mu.Lock()
				delete(d.pending, subject)
				d.mu.Unlock()
			}
		}
		d.mu.Lock()
		if len(d.pending) == 0 || ctx.Err() != nil {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
}

// waiting returns how many subjects wait for their purge.
func (d *deadChunks) waiting() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// close ends the retries: what is left stays in the store (as after a
// crash).
func (d *deadChunks) close() {
	d.mu.Lock()
	d.closed = true
	done, cancel := d.done, d.cancel
	if n := len(d.pending); n > 0 {
		d.log.Debug("dead object chunks left unpurged at close", "subjects", n)
	}
	d.mu.Unlock()
	if done == nil {
		return
	}
	cancel()
	<-done
}
