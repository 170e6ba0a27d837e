package memstore

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// DedupeWindow is how long a message id is remembered.
const DedupeWindow = 2 * time.Minute

// Stream is a stream with one shared consumer, in memory.
type Stream struct {
	ackWait   time.Duration
	workQueue bool // an acked message leaves the stream

	mu   sync.Mutex
	seq  uint64
	msgs []*msg // by sequence
	ids  map[string]time.Time
	wake chan struct{} // closed when a message may have become available
	// lanes are the kind lanes: their bounds on messages leased at once
	// and started per window.
	lanes map[string]*laneBound
}

type laneBound struct {
	leased int // 0: none
	rate   int // 0: none
	window time.Duration
	// started counts the messages leased in the window that began at at.
	at      int64
	started int
}

type msg struct {
	seq       uint64
	priority  int    // its lane: 1 to 4
	lane      string // or a kind's lane
	later     bool   // a task of a job under way: before its priority's others
	key       string
	data      []byte
	stored    time.Time
	delivered int
	// until is when the message may be delivered (again): zero while it
	// was never delivered, the end of the lease while it is held.
	until time.Time
	done  bool
}

// NewStream returns an empty stream whose leases last ackWait; a work
// queue drops a message once it is acked, other streams keep it for Read.
func NewStream(ackWait time.Duration, workQueue bool) *Stream {
	return &Stream{ackWait: ackWait, workQueue: workQueue, ids: map[string]time.Time{}, wake: make(chan struct{})}
}

// Publish implements store.Stream.
func (s *Stream) Publish(ctx context.Context, msgs ...store.Message) []error {
	errs := make([]error, len(msgs))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for id, at := range s.ids {
		if now.Sub(at) > DedupeWindow {
			delete(s.ids, id)
		}
	}
	for _, m := range msgs {
		if m.ID != "" {
			if _, dup := s.ids[m.ID]; dup {
				continue
			}
			s.ids[m.ID] = now
		}
		s.seq++
		s.msgs = append(s.msgs, &msg{seq: s.seq, priority: job.ShownPriority(m.Priority), lane: m.Lane, later: m.Later, key: m.Key, data: bytes.Clone(m.Data), stored: time.Now()})
	}
	s.signal()
	return errs
}

// Send implements store.Stream.
func (s *Stream) Send(m store.Message) error {
	return s.Publish(context.Background(), m)[0]
}

// signal wakes fetches; s.mu is held.
func (s *Stream) signal() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// Purge implements store.Stream.
func (s *Stream) Purge(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.msgs[:0]
	for _, m := range s.msgs {
		if m.key == key {
			m.done = true
			continue
		}
		kept = append(kept, m)
	}
	clear(s.msgs[len(kept):])
	s.msgs = kept
	return nil
}

// Release implements store.Stream: lease is a delivery's "seq/count".
func (s *Stream) Release(ctx context.Context, lease string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var seq uint64
	var n int
	if _, err := fmt.Sscanf(lease, "%d/%d", &seq, &n); err != nil {
		return fmt.Errorf("lease %q is not one of this store's", lease)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, found := slices.BinarySearchFunc(s.msgs, seq, func(m *msg, seq uint64) int { return cmp.Compare(m.seq, seq) }); found {
		if m := s.msgs[i]; !m.done && m.delivered == n {
			m.until = time.Now()
			s.signal()
		}
	}
	return nil
}

// Holds implements store.Stream.
func (s *Stream) Holds(ctx context.Context, seq uint64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, found := slices.BinarySearchFunc(s.msgs, seq, func(m *msg, seq uint64) int { return cmp.Compare(m.seq, seq) })
	return found, nil // a work queue's acked messages and purged ones are gone
}

// PurgeAcked implements store.Stream.
func (s *Stream) PurgeAcked(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = slices.DeleteFunc(s.msgs, func(m *msg) bool { return m.key == key && m.done })
	return nil
}

// Fetch implements store.Stream: the highest lane's messages first.
func (s *Stream) Fetch(ctx context.Context, max int, wait time.Duration, fn func(store.Delivery)) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		var out []store.Delivery
		var next time.Time
		for lane, bound := range s.lanes {
			out, next = s.takeLane(lane, bound, max, out, next)
		}
		for p := job.MaxPriority; p >= job.MinPriority && len(out) < max; p-- {
			out, next = s.take(p, max, out, next)
		}
		wake := s.wake
		s.mu.Unlock()
		if len(out) > 0 {
			for _, d := range out {
				fn(d)
			}
			return nil
		}
		if !s.await(ctx, deadline.C, wake, next) {
			return ctx.Err()
		}
	}
}

// FetchFrom implements store.Stream.
func (s *Stream) FetchFrom(ctx context.Context, priority, max int, fn func(store.Delivery)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	out, _ := s.take(job.ShownPriority(priority), max, nil, time.Time{})
	s.mu.Unlock()
	for _, d := range out {
		fn(d)
	}
	return nil
}

// SetLane implements store.Stream.
func (s *Stream) SetLane(ctx context.Context, lane string, maxLeased int, rate string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lanes == nil {
		s.lanes = map[string]*laneBound{}
	}
	b := &laneBound{leased: maxLeased}
	b.rate, b.window = store.ParseRate(rate)
	s.lanes[lane] = b
	s.signal()
	return nil
}

// takeLane leases the deliverable messages of a kind lane, within its
// bounds. s.mu is held.
func (s *Stream) takeLane(lane string, b *laneBound, max int, out []store.Delivery, next time.Time) ([]store.Delivery, time.Time) {
	now := time.Now()
	bound := b.leased
	if b.rate > 0 {
		if w := now.UnixNano() / int64(b.window); w != b.at {
			b.at, b.started = w, 0
		}
		if b.started >= b.rate {
			// The window's starts are spent: the next window may start more.
			at := time.Unix(0, (b.at+1)*int64(b.window))
			if next.IsZero() || at.Before(next) {
				next = at
			}
			return out, next
		}
	}
	leased := 0
	for _, m := range s.msgs {
		if m.lane == lane && !m.done && !m.until.IsZero() && m.until.After(now) {
			leased++
		}
	}
	for _, m := range s.msgs {
		if len(out) == max || bound > 0 && leased >= bound {
			break
		}
		if m.done || m.lane != lane {
			continue
		}
		if !m.until.IsZero() && m.until.After(now) {
			if next.IsZero() || m.until.Before(next) {
				next = m.until
			}
			continue
		}
		if b.rate > 0 && b.started >= b.rate {
			break
		}
		m.delivered++
		m.until = now.Add(s.ackWait)
		leased++
		b.started++
		out = append(out, &delivery{s: s, m: m, n: m.delivered})
	}
	return out, next
}

// take leases the deliverable messages of one priority, up to max in
// out, its later lane's first (store.Message.Later), and returns out and
// the earliest time a held one may be delivered again (next, when
// earlier). s.mu is held.
func (s *Stream) take(priority, max int, out []store.Delivery, next time.Time) ([]store.Delivery, time.Time) {
	out, next = s.takeOf(priority, true, max, out, next)
	return s.takeOf(priority, false, max, out, next)
}

// takeOf is take for one lane: the later one, or the other.
func (s *Stream) takeOf(priority int, later bool, max int, out []store.Delivery, next time.Time) ([]store.Delivery, time.Time) {
	now := time.Now()
	for _, m := range s.msgs {
		if len(out) == max {
			break
		}
		if m.done || m.priority != priority || m.lane != "" || m.later != later {
			continue
		}
		if !m.until.IsZero() && m.until.After(now) {
			if next.IsZero() || m.until.Before(next) {
				next = m.until
			}
			continue
		}
		m.delivered++
		m.until = now.Add(s.ackWait)
		out = append(out, &delivery{s: s, m: m, n: m.delivered})
	}
	return out, next
}

// await waits for a wake, or the next redelivery at next (when set); it
// reports false when ctx or the fetch's deadline ended first.
func (s *Stream) await(ctx context.Context, deadline <-chan time.Time, wake <-chan struct{}, next time.Time) bool {
	var redeliver <-chan time.Time
	if !next.IsZero() {
		t := time.NewTimer(time.Until(next))
		defer t.Stop()
		redeliver = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-deadline:
		return false
	case <-wake:
	case <-redeliver:
	}
	return true
}

// Read implements store.Stream.
func (s *Stream) Read(ctx context.Context, key string, limit int) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]byte
	for _, m := range s.msgs {
		if m.key == key && len(out) < limit {
			out = append(out, bytes.Clone(m.data))
		}
	}
	return out, nil
}

// Scan implements store.Stream.
func (s *Stream) Scan(ctx context.Context, fn func(data []byte)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	var all [][]byte
	for _, m := range s.msgs {
		all = append(all, bytes.Clone(m.data))
	}
	s.mu.Unlock()
	for _, d := range all {
		fn(d)
	}
	return nil
}

// Info implements store.Stream.
func (s *Stream) Info(ctx context.Context) (store.StreamInfo, error) {
	if err := ctx.Err(); err != nil {
		return store.StreamInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info := store.StreamInfo{AckWait: s.ackWait, Last: s.seq, Acked: s.seq}
	for _, m := range s.msgs {
		switch {
		case m.done:
			continue
		case m.delivered == 0:
			info.Waiting++
		default:
			info.Leased++
		}
		info.Acked = min(info.Acked, m.seq-1)
	}
	return info, nil
}

// Len is how many messages the stream holds: what a test checks a purge
// or an ack removed.
func (s *Stream) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

type delivery struct {
	s *Stream
	m *msg
	n int // the delivery count when this delivery was made
}

func (d *delivery) Key() string    { return d.m.key }
func (d *delivery) Data() []byte   { return d.m.data }
func (d *delivery) Delivered() int { return d.n }
func (d *delivery) Priority() int  { return d.m.priority }
func (d *delivery) Seq() uint64    { return d.m.seq }
func (d *delivery) Stored() time.Time {
	return d.m.stored
}
func (d *delivery) Lease() string { return fmt.Sprintf("%d/%d", d.m.seq, d.n) }

// current reports whether the message is still in play. As in JetStream,
// an ack counts whichever delivery it comes from. d.s.mu is held.
func (d *delivery) current() bool { return !d.m.done }

func (d *delivery) Ack() error {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	if !d.current() {
		return nil
	}
	d.finish()
	return nil
}

// finish ends the message; d.s.mu is held.
func (d *delivery) finish() {
	d.m.done = true
	if d.m.lane != "" {
		d.s.signal() // a bounded lane has room again
	}
	if !d.s.workQueue {
		return
	}
	for i, m := range d.s.msgs {
		if m == d.m {
			d.s.msgs = append(d.s.msgs[:i], d.s.msgs[i+1:]...)
			break
		}
	}
}

func (d *delivery) Nak(delay time.Duration) error {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	if d.current() {
		d.m.until = time.Now().Add(delay)
		d.s.signal()
	}
	return nil
}

func (d *delivery) Term() error {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	if d.current() {
		d.finish()
	}
	return nil
}

func (d *delivery) InProgress() error {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	if d.current() {
		d.m.until = time.Now().Add(d.s.ackWait)
	}
	return nil
}
