package worker

import (
	"bytes"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A bundle is a task message that carries the tasks of several jobs of a
// group (job.Bundle). The queue leases it as one message; the pool runs
// each of its tasks as a delivery of its own (a part), leased, run,
// retried, given back and acked as any task is, and acks the message once
// every part is acked. A part let go without an ack (its result could not
// be stored, nor a copy of it queued) leaves the message unacked: the
// queue delivers it again after its ack wait, and each of its tasks runs
// again, as a lost run; a result stored twice counts once.
type bundle struct {
	m store.Delivery

	mu    sync.Mutex
	left  int  // parts not ended yet
	again bool // a part was let go without an ack
	// renewed is when the message's lease was last renewed: every part
	// renews it, the message at most once every renewEvery.
	renewed    time.Time
	renewEvery time.Duration
}

// part is one task of a bundle, as a delivery of its own.
type part struct {
	b     *bundle
	i     int
	task  job.Task
	ended bool // under b.mu

	dataOnce sync.Once
	data     []byte
}

// A part's Seq is its bundle's with the part's number, and a bit no
// stream's sequence sets: distinct for every part, the same for the parts
// of every delivery of one message (what the pool's memory of held and
// acked deliveries is keyed by). queueSeq is the message's own.
const (
	partBit   = 1 << 63
	partShift = 16 // job.MaxBundle fits, and any message's tasks
)

// parts returns the deliveries of message m: its bundle's parts, or m
// itself when it is no bundle (or cannot be read: its run says so).
// renewEvery is how often at most the parts renew the message's lease
// (each part renews its own lease as any, every third of the ack wait).
func parts(m store.Delivery, renewEvery time.Duration) []store.Delivery {
	if !bytes.Contains(m.Data(), []byte(`"more":[`)) {
		return []store.Delivery{m}
	}
	t, err := store.DecodeTask(m.Data())
	if err != nil || len(t.More) == 0 || len(t.More) >= 1<<partShift-1 {
		return []store.Delivery{m}
	}
	tasks := t.Bundled()
	b := &bundle{m: m, left: len(tasks), renewEvery: renewEvery}
	out := make([]store.Delivery, len(tasks))
	for i, t := range tasks {
		out[i] = &part{b: b, i: i, task: t}
	}
	return out
}

// queueSeq is the sequence in the queue of the message d is: a part's
// bundle's.
func queueSeq(d store.Delivery) uint64 {
	if p, ok := d.(*part); ok {
		return p.b.m.Seq()
	}
	return d.Seq()
}

// taskOf returns the task delivery d carries.
func taskOf(d store.Delivery) (job.Task, error) {
	if p, ok := d.(*part); ok {
		return p.task, nil
	}
	return store.DecodeTask(d.Data())
}

func (p *part) Key() string    { return p.b.m.Key() }
func (p *part) Delivered() int { return p.b.m.Delivered() }
func (p *part) Priority() int  { return p.b.m.Priority() }
func (p *part) Lease() string  { return p.b.m.Lease() }

func (p *part) Stored() time.Time { return p.b.m.Stored() }

// Data is the part's task as a message of its own: what a copy given back
// or queued again carries.
func (p *part) Data() []byte {
	p.dataOnce.Do(func() {
		if msgs, err := store.TaskMessages([]job.Task{p.task}, false); err == nil {
			p.data = msgs[0].Data
		}
	})
	return p.data
}

func (p *part) Seq() uint64 {
	s := p.b.m.Seq()
	if s == 0 {
		return 0
	}
	return partBit | s<<partShift | uint64(p.i)
}

func (p *part) Ack() error { return p.b.end(p, true) }

// Term drops the part's task (it is done with, as an acked one).
func (p *part) Term() error { return p.b.end(p, true) }

// Nak lets the part go without an ack: the message comes back after its
// ack wait (not sooner: the bundle's other parts may still run).
func (p *part) Nak(time.Duration) error { return p.b.end(p, false) }

// letGo is the part's lease ended without an ack (lease.release).
func (p *part) letGo() { _ = p.b.end(p, false) }

// InProgress renews the message's lease, at most once every renewEvery
// whatever the number of parts running.
func (p *part) InProgress() error {
	b := p.b
	b.mu.Lock()
	if time.Since(b.renewed) < b.renewEvery {
		b.mu.Unlock()
		return nil
	}
	b.renewed = time.Now()
	b.mu.Unlock()
	return b.m.InProgress()
}

// end ends part p, acked or let go, and acks the message once every part
// ended with an ack.
func (b *bundle) end(p *part, acked bool) error {
	b.mu.Lock()
	if p.ended {
		b.mu.Unlock()
		return nil
	}
	p.ended = true
	b.left--
	b.again = b.again || !acked
	last, again := b.left == 0, b.again
	b.mu.Unlock()
	if last && !again {
		return b.m.Ack()
	}
	return nil
}

// withoutEnded acks the parts of a bundle whose jobs have ended, or are
// no longer the group's to run, as the group's record says. It reads the
// record for a bundle delivered again (the pool that held it was lost),
// and for one stored when this pool may not have heard of a cancel of its
// jobs: a canceled job's task stays in its bundle while the group's
// others run, and this pool drops it unrun only while it remembers the
// cancel's notice.
func (p *Pool) withoutEnded(ls []*lease) []*lease {
	if len(ls) < 2 {
		return ls
	}
	first, ok := ls[0].msg().(*part)
	if !ok {
		return ls
	}
	again := ls[0].delivered() >= 2
	if !again && !p.unheard(first.Stored()) {
		return ls
	}
	g, err := p.record(first.task.Job)
	if err != nil {
		return ls
	}
	out := ls[:0]
	for _, l := range ls {
		t := l.msg().(*part).task
		if memberEnded(g, t) {
			if again {
				p.log.Info("a job of a group has ended since the pool that held its task was lost; it is not run again", "job", t.Member, "group", t.Job)
			} else {
				p.log.Info("a job of a group ended (canceled, retried on its own or deleted) before this pool could hear of it; its task is not run", "job", t.Member, "group", t.Job)
			}
			l.ack()
			continue
		}
		out = append(out, l)
	}
	return out
}

// unheard reports whether a cancel of a job whose task message was stored
// then may have passed this pool by: it came before the pool subscribed
// to the notices (a second's leeway), or longer ago than the pool
// remembers them (a minute's).
func (p *Pool) unheard(stored time.Time) bool {
	if stored.IsZero() {
		return false
	}
	return stored.Before(p.noticesFrom.Add(time.Second)) || time.Since(stored) > noticeMemory-time.Minute
}

// memberEnded reports whether group g's record shows that the job of its
// task t has nothing left to run.
func memberEnded(g *job.Job, t job.Task) bool {
	switch {
	case g.Epoch > t.Epoch || g.State.Terminal():
		return true
	case t.Partition < 0 || t.Partition >= len(g.Members):
		return false
	}
	m := g.Members[t.Partition]
	return m.Moved || m.Deleted || m.Shown().Terminal()
}
