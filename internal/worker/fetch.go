package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/store"
)

const (
	// fetchWait bounds a fetch request: how long a stopping pool may wait
	// for its last request to end, and how often an idle pool asks again.
	fetchWait = time.Second
	// fetchers is how many fetch requests a pool keeps open at once: while
	// one batch is being worked on, the next is on its way.
	fetchers = 2
	// batchBudget is how long the tasks of one fetch should take to run:
	// it sizes the fetch from the tasks' recent run time.
	batchBudget = 20 * time.Millisecond
	// maxFetch bounds a fetch, whatever the tasks' run time.
	maxFetch = 256
)

// pace tracks how long tasks take to run, as a moving average, and sizes
// fetches from it: a pool running tasks of a few microseconds fetches
// hundreds at a time (one request per task would cap the cluster's rate),
// a pool running tasks of seconds fetches one per worker (so it holds no
// task another worker could run).
type pace struct {
	avg atomic.Int64 // nanoseconds; 0 until the first task
	// perMessage is the tasks a fetched message carried lately, times
	// perMessageOne (0 until the first).
	perMessage atomic.Int64
}

func (p *pace) observe(d time.Duration) {
	for {
		old := p.avg.Load()
		next := int64(d)
		// A slow task counts at once; speed is believed gradually.
		if old != 0 && next < old {
			next = old - (old-next)/8
		}
		if p.avg.CompareAndSwap(old, next) {
			return
		}
	}
}

// slow reports whether tasks take longer than a batch's budget: then a
// pool fetches only for its idle workers, so that it never holds a task
// that another worker could start now (a slow machine would hold tasks that
// look neither queued nor running, and no backup would start for them).
// Until a task has run, tasks are assumed slow.
func (p *pace) slow() bool {
	avg := time.Duration(p.avg.Load())
	return avg == 0 || avg > batchBudget
}

// fetchSize returns how many messages to fetch: a batch's budget of
// tasks, at least one per worker, in messages of as many tasks as they
// have carried lately (a bundle carries up to job.MaxBundle: 256
// bundles of noop tasks were 16,384 tasks held by one pool).
func (p *pace) fetchSize(workers int) int {
	avg := time.Duration(p.avg.Load())
	if avg <= 0 {
		return workers
	}
	n := int(int64(workers) * int64(batchBudget) / int64(max(avg, time.Microsecond)))
	n = min(max(n, workers), maxFetch)
	if per := p.perMessage.Load(); per > perMessageOne {
		n = max(1, n*perMessageOne/int(per))
	}
	return n
}

// tasksOf returns how many tasks n fetched messages may bring: as many as
// messages carried lately, and a bundle's most besides.
func (p *pace) tasksOf(n int) int {
	per := max(p.perMessage.Load(), perMessageOne)
	return int((int64(n)*per+perMessageOne-1)/perMessageOne) + job.MaxBundle
}

// perMessageOne is one task a message in pace.perMessage's fixed point.
const perMessageOne = 16

// carried notes that a fetched message carried n tasks.
func (p *pace) carried(n int) {
	for {
		raw := p.perMessage.Load()
		old := raw
		if old == 0 {
			old = perMessageOne
		}
		target := int64(n * perMessageOne)
		next := old + (target-old)/8
		switch {
		case next == old && target > old:
			next++
		case next == old && target < old:
			next--
		}
		if p.perMessage.CompareAndSwap(raw, next) {
			return
		}
	}
}

// DefaultPriorityAging is Config.PriorityAging's default.
const DefaultPriorityAging = 10 * time.Second

// lanes remembers, per priority, when the pool last took a task from that
// lane of the queue or found it empty: a fetch takes from the highest lane
// that has tasks, so a low lane behind a steady flow of higher tasks would
// wait for ever without this.
type lanes struct {
	at [job.MaxPriority + 1]atomic.Int64 // unix nanoseconds
}

func (l *lanes) init(now time.Time) {
	for i := range l.at {
		l.at[i].Store(now.UnixNano())
	}
}

// served notes that lane priority gave a task, or had none, at t.
func (p *Pool) served(priority int, t time.Time) {
	if priority >= job.MinPriority && priority <= job.MaxPriority {
		p.lanes.at[priority].Store(t.UnixNano())
	}
}

// starving returns the lowest lane not served for the aging period, or 0.
func (p *Pool) starving(now time.Time) int {
	aging := p.cfg.PriorityAging
	if aging <= 0 {
		aging = DefaultPriorityAging
	}
	for pr := job.MinPriority; pr <= job.MaxPriority; pr++ {
		if now.Sub(time.Unix(0, p.lanes.at[pr].Load())) > aging {
			return pr
		}
	}
	return 0
}

// feed fetches tasks and hands them to idle workers. A fetch is read to
// its end, even while stopping: a task the server delivered is never
// dropped on the floor. Tasks held without a worker longer than the
// fetch was sized for (a second for fast tasks, a third of the ack wait
// for slow ones) and tasks fetched while stopping are given back to the
// queue for other workers.
func (p *Pool) feed(fetcher int, tasks chan *lease) {
	backoff := 100 * time.Millisecond
	// Since when fetches fail, the last failure, the last warning.
	var failing, failed, warned time.Time
	for {
		select {
		case <-p.stopping:
			return
		default:
		}
		p.shedWaiting(tasks)
		if on := p.soloing(); on != nil {
			// A suspect runs alone: nothing is fetched until it ends.
			select {
			case <-p.stopping:
				return
			case <-on:
			}
			continue
		}
		if p.cfg.Paused != nil && p.parkedFull() {
			// Tasks of a paused kind fill the pool: fetch again once
			// some left (their job took them out of the queue).
			select {
			case <-p.stopping:
				return
			case <-time.After(parkCheck):
			}
			continue
		}
		n := p.pace.fetchSize(p.cfg.Concurrency)
		slow := p.pace.slow()
		if slow {
			// One fetcher, for the idle workers only. The other only
			// looks again now and then whether tasks got fast: a worker's
			// wake is for the first (taken by the other, it left the first
			// asleep for a whole fetchWait after every task, and a worker
			// ran tasks of 20 ms at two a second).
			wake := p.idleWake
			if fetcher > 0 {
				wake = nil
			}
			if n = p.cfg.Concurrency - int(p.assigned.Load()); fetcher > 0 || n <= 0 {
				select {
				case <-p.stopping:
					return
				case <-wake:
				case <-time.After(p.cfg.recheck):
				}
				continue
			}
		}
		// Every message is leased the moment it arrives, not when a worker
		// is free for it: a message waiting in the batch without a lease
		// would be given to another worker after the ack wait, and run twice.
		// The channel holds every task the fetch may bring (sized in
		// messages, it held a sixty-fourth of a fetch of bundles, and the
		// fetch's read waited on the workers: what went back for want of a
		// worker went a task a publish).
		if !p.enter() {
			// A suspect came to run alone meanwhile.
			p.leave()
			continue
		}
		leased := make(chan *lease, p.pace.tasksOf(n))
		fetched := make(chan error, 1)
		go func() {
			defer close(leased)
			// A stopping pool ends a fetch that has brought nothing yet
			// (a fetch's messages are still handed over to the end).
			ctx, cancel := context.WithTimeout(context.Background(), 2*fetchWait+mr.StoreCallTimeout)
			defer cancel()
			stop := context.AfterFunc(p.stopCtx, cancel)
			defer stop()
			room := n // tasks this fetch is for, when tasks are slow
			take := func(m store.Delivery) {
				ds := parts(m, p.ackWait/6)
				p.pace.carried(len(ds))
				ls := make([]*lease, len(ds))
				for i, d := range ds {
					ls[i] = p.newLease(d) // each leased at once
				}
				if ls = p.withoutEnded(ls); len(ls) == 0 {
					return
				}
				if slow && len(ls) > 1 && len(ls) > room {
					// A bundle of more slow tasks than the pool has
					// idle workers: every one goes back to the queue,
					// a message each, for any worker (this pool then
					// fetches them as any), rather than wait here
					// behind a task of minutes; and a bundle held in
					// part would run whole again if this pool died.
					p.giveBack(ls...)
					return
				}
				for _, l := range ls {
					room--
					leased <- l
				}
			}
			if lane := p.starving(time.Now()); lane != 0 {
				// A lane higher ones kept waiting: its turn, once.
				got := 0
				err := p.cfg.Store.Tasks.FetchFrom(ctx, lane, n, func(m store.Delivery) { got++; take(m) })
				if err != nil || got > 0 {
					fetched <- err
					return
				}
				p.served(lane, time.Now()) // nothing waits there
			}
			fetched <- p.cfg.Store.Tasks.Fetch(ctx, n, fetchWait, take)
		}()
		// A task that waits here for a worker longer than bound shows
		// the tasks slower than the fetch was sized for: it goes back, for
		// other workers. A fetch for fast tasks was sized for a batch's
		// budget of their run time (milliseconds), so a second is long (a
		// bundle of 64 tasks of seconds, fetched by a pool that had run
		// tasks of microseconds, ran four at a time while other pools
		// idled, for a third of the ack wait: 10 s by default); one for
		// slow tasks, for its idle workers only, waits at most that third.
		bound := p.ackWait / 3
		if !slow {
			bound = min(bound, p.cfg.heldLong)
		}
		var timer *time.Timer
		for l := range leased {
			p.assigned.Add(1)
			ok, waited := p.handOver(tasks, l, bound, &timer)
			if ok {
				continue
			}
			p.assigned.Add(-1)
			if waited && !slow {
				// Fetches are for idle workers only from now on, until
				// tasks run fast again.
				p.pace.observe(bound)
			}
			// What else of the fetch is here goes back with it, and, when
			// the tasks turned out slow, the tasks waiting in the workers'
			// channel: a worker running a task of minutes would hold its
			// next one that long.
			back := append([]*lease{l}, drain(leased)...)
			if waited {
				held := drain(tasks)
				p.assigned.Add(-int32(len(held)))
				back = append(back, held...)
			}
			p.giveBackAll(back)
		}
		if timer != nil {
			timer.Stop()
		}
		err := <-fetched
		p.leave()
		if err != nil && p.stopCtx.Err() == nil {
			now := time.Now()
			if failing.IsZero() || now.Sub(failed) > 3*maxFetchBackoff {
				// A failure after a pause of fetching (workers all busy)
				// starts a spell of its own.
				failing, warned = now, time.Time{}
			}
			failed = now
			// A queue electing a leader (a server of the cluster died or
			// restarts) fails fetches for seconds, which the retries ride
			// out: a warning once that lasts, then once a minute. (Each
			// retry was a warning: a surviving server's pool logged seven in the
			// five seconds of an election.)
			if now.Sub(failing) >= p.cfg.failingWarnAfter && now.Sub(warned) >= time.Minute {
				warned = now
				p.log.Warn("cannot fetch tasks; retrying. If it lasts, check that this pool reaches the servers' NATS and that a majority of the servers run",
					"err", err, "failing_for", now.Sub(failing).Round(time.Second), "retry_in", backoff)
			} else {
				p.log.Debug("cannot fetch tasks; retrying", "err", err, "retry_in", backoff)
			}
			select {
			case <-p.stopping:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxFetchBackoff)
			continue
		}
		if !warned.IsZero() && err == nil {
			p.log.Info("fetching tasks again", "failed_for", time.Since(failing).Round(time.Second))
		}
		failing, failed, warned = time.Time{}, time.Time{}, time.Time{}
		backoff = 100 * time.Millisecond
	}
}

// fetchFailingWarnAfter is how long fetches fail before a pool warns: a
// cluster elects its queue's leader within seconds of losing it.
// maxFetchBackoff bounds the wait between a failed fetch and the next.
const (
	fetchFailingWarnAfter = 10 * time.Second
	maxFetchBackoff       = 10 * time.Second
)

// handOver hands l to a worker, and reports whether one took it and, when
// none did, whether l waited bound from its lease for one (false: the pool
// is stopping). timer is reused across the tasks of a fetch: a pool of fast
// tasks waits here for a worker at almost every one.
func (p *Pool) handOver(tasks chan<- *lease, l *lease, bound time.Duration, timer **time.Timer) (ok, waited bool) {
	select {
	case tasks <- l:
		return true, false
	default:
	}
	d := bound - time.Since(l.at)
	if d <= 0 {
		return false, true
	}
	if *timer == nil {
		*timer = time.NewTimer(d)
	} else {
		(*timer).Reset(d)
	}
	select {
	case tasks <- l:
		(*timer).Stop()
		return true, false
	case <-p.stopping:
		(*timer).Stop()
		return false, false
	case <-(*timer).C:
		return false, true
	}
}

// shedWaiting gives back the tasks waiting in the workers' channel longer
// than heldLong while no worker took one for as long: every worker runs
// something slower than the fetch that brought them was sized for, and
// they would wait its whole length (a fetch that ended with tasks in the
// channel left them there behind tasks of minutes, while other pools
// idled: only a later fetch's wait for a worker looked at the channel).
// Tasks are then taken for slow: fetches are for idle workers only.
func (p *Pool) shedWaiting(tasks chan *lease) {
	if len(tasks) == 0 || time.Since(time.Unix(0, p.taken.Load())) < p.cfg.heldLong {
		return
	}
	var back []*lease
	for _, l := range drain(tasks) {
		if time.Since(l.at) < p.cfg.heldLong {
			// Handed over just now, to a worker about to take it.
			select {
			case tasks <- l:
				continue
			default:
			}
		}
		back = append(back, l)
	}
	if len(back) == 0 {
		return
	}
	p.assigned.Add(-int32(len(back)))
	p.pace.observe(p.cfg.heldLong)
	p.log.Debug("giving back tasks no worker took; the workers run slower tasks", "tasks", len(back))
	p.giveBackAll(back)
}

// drain takes what c holds now, without waiting.
func drain(c chan *lease) []*lease {
	var out []*lease
	for {
		select {
		case l, ok := <-c:
			if !ok {
				return out
			}
			out = append(out, l)
		default:
			return out
		}
	}
}
