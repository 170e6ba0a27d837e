package worker

import (
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

const (
	// parkCheck is how often a pool looks at the tasks it parked: whether
	// their kind resumed, or their job took them out of the queue.
	parkCheck = 250 * time.Millisecond
	// parkFetchBound is how many parked tasks per worker make a pool stop
	// fetching until some leave: the tasks of a paused kind at the head of
	// the queue would all come to it otherwise, until its job's server
	// took them out.
	parkFetchBound = 4
	// parkLimit is how long a task stays parked: one its job's server
	// failed to take out of the queue would otherwise keep its place in
	// the pool, and a pool full of them would fetch no other kind's task
	// until the kind resumed. Past it, the task goes back to the queue's
	// end.
	parkLimit = 30 * time.Second
)

// park holds l, a task of a paused kind, without starting it. Its lease is
// renewed meanwhile, so that no other worker gets it.
func (p *Pool) park(l *lease, t job.Task) {
	p.parkMu.Lock()
	defer p.parkMu.Unlock()
	p.parked[l] = parkedTask{t, time.Now()}
}

// parkedTask is a parked task and when it was parked.
type parkedTask struct {
	job.Task
	at time.Time
}

// parkedFull reports whether the pool parks as many tasks as it may before
// it fetches again.
func (p *Pool) parkedFull() bool {
	p.parkMu.Lock()
	defer p.parkMu.Unlock()
	return len(p.parked) >= parkFetchBound*p.cfg.Concurrency
}

// parkedLeases returns the leases of the parked tasks.
func (p *Pool) parkedLeases() []*lease {
	p.parkMu.Lock()
	defer p.parkMu.Unlock()
	out := make([]*lease, 0, len(p.parked))
	for l := range p.parked {
		out = append(out, l)
	}
	return out
}

// unpark takes the parked tasks for which keep says false out of the
// parked set and returns them.
func (p *Pool) unpark(keep func(l *lease, t parkedTask) bool) map[*lease]parkedTask {
	p.parkMu.Lock()
	defer p.parkMu.Unlock()
	out := map[*lease]parkedTask{}
	for l, t := range p.parked {
		if !keep(l, t) {
			out[l] = t
			delete(p.parked, l)
		}
	}
	return out
}

// tendParked looks at the parked tasks every parkCheck: one whose kind
// resumed goes back to the queue, for any worker (its job's server queues
// the tasks it took out itself, and a copy of one it did not is the task's
// only copy), as does one parked for parkLimit; one that left the queue
// (its job took it out: the kind's pause reached it, or the job ended) is
// dropped. When the pool stops, the parked tasks go back to the queue.
func (p *Pool) tendParked() {
	tick := time.NewTicker(parkCheck)
	defer tick.Stop()
	for {
		select {
		case <-p.stopping:
			for l := range p.unpark(func(*lease, parkedTask) bool { return false }) {
				p.giveBack(l)
			}
			return
		case <-tick.C:
		}
		now := time.Now()
		for l, t := range p.unpark(func(_ *lease, t parkedTask) bool { return p.cfg.Paused(t.Kind) && now.Sub(t.at) < p.cfg.parkLimit }) {
			p.log.Debug("a parked task's kind resumed, or it was parked long: it goes back to the queue", "job", t.Job, "phase", t.Phase, "partition", t.Partition)
			p.giveBack(l)
		}
		// The queue is asked outside the lock: workers park meanwhile. A
		// stop ends the questions (a store that does not answer would
		// hold the stop for leftQueueTimeout per parked task).
		gone := map[*lease]bool{}
		for _, l := range p.parkedLeases() {
			if p.gone(p.stopCtx, l) {
				gone[l] = true
			}
		}
		left := p.unpark(func(l *lease, _ parkedTask) bool { return !gone[l] })
		for l := range left {
			l.ack()
		}
		if len(left) > 0 {
			select {
			case p.idleWake <- struct{}{}:
			default:
			}
		}
	}
}
