package worker

import (
	"sync"
	"time"
)

// suspectLostRuns is how many runs of a task in a row, ended with their
// worker lost, make it a suspect: its next run is alone in its pool.
//
// A task that kills its process (it takes all the memory, and the
// out-of-memory killer comes; a crash in native code) takes down with it
// every task its pool runs or holds, and those lose their runs as it does.
// The queue delivers them again together, to a pool that runs them
// together again, so every death counted against the tasks beside the
// killer too, and after --max-lost-runs deaths they failed their jobs with
// it, as what kills their workers (Sidekiq's poison pills count the same
// way). A suspect runs with nothing else of its pool: the pool lets the
// tasks under way end, gives back to the queue those it holds unstarted,
// and fetches none until the suspect ends. If it kills the process again,
// it alone loses that run; a task that only ran beside it runs alone in
// turn and ends, which starts its count again. One lost run in a row is
// not enough: every task a server's crash interrupts has one, and running
// each alone would hold up every pool after every crash.
const suspectLostRuns = 2

// aloneWait bounds how long a suspect waits for its pool's tasks under way
// to end (Config.aloneWait in tests).
const aloneWait = time.Minute

// alone is a pool's gate between suspects and the other tasks.
type alone struct {
	mu   sync.Mutex
	cond *sync.Cond
	// busy counts the pool's tasks past the gate, from their start until
	// their leases end (their results stored) or they wait for a retry,
	// and its fetches under way.
	busy int
	// on is open while a suspect waits to run alone or runs: a task that
	// comes to the gate then goes back to the queue, and no fetch starts.
	on chan struct{}
}

// enter lets an ordinary task (or a fetch) past the gate, unless a
// suspect waits or runs alone (false). Either way leave must follow (for
// a task let in, through its lease: lease.gate), once its result is
// stored or it went back (or the fetch handed its tasks over): the
// suspect waits for it.
func (p *Pool) enter() bool {
	a := &p.alone
	a.mu.Lock()
	defer a.mu.Unlock()
	a.busy++
	return a.on == nil
}

// leave ends what enter began.
func (p *Pool) leave() {
	a := &p.alone
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy--; a.busy == 0 {
		a.cond.Broadcast()
	}
}

// handedBack tells a suspect waiting to run alone that a worker let go of
// the task it took from the workers' channel (pool.assigned fell): the
// suspect waits for every task handed to a worker, those a worker took
// but has not yet brought to the gate too.
func (p *Pool) handedBack() {
	a := &p.alone
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.on != nil {
		a.cond.Broadcast()
	}
}

// soloing returns what is closed when the suspect that runs alone now
// ends, or nil when none does.
func (p *Pool) soloing() <-chan struct{} {
	a := &p.alone
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.on
}

// beAlone waits until nothing else of the pool runs, holding off the rest
// meanwhile; the tasks waiting in the workers' channel go back to the
// queue. It reports false, and holds nothing off, when another suspect
// runs alone now or the pool stops: the caller gives its task back with
// its lease counted (lease.gate), so that it is busy until the give-back
// ends, tries again included, and the lease's end leaves. After true,
// unalone must follow once the task ended. waits is told, as the
// wait begins, how many of the pool's tasks (and fetches) it waits for.
//
// The wait is as long as the longest task under way, up to aloneWait:
// then the suspect runs beside what still runs (waited is told how many),
// for a pool running tasks of hours must not idle for hours, nor the
// suspect wait that long. The suspect's lease is kept alive meanwhile, as
// any held task's; the pool fetches nothing until it ends.
func (p *Pool) beAlone(waits func(busy int), waited func(busy int)) bool {
	a := &p.alone
	a.mu.Lock()
	if a.on != nil {
		// Counted until it went back: the suspect that runs alone waits
		// for that (a CI run saw a task that went back as another suspect
		// started lose a run with it, twice, and fail its job).
		a.busy++
		a.mu.Unlock()
		return false
	}
	a.on = make(chan struct{})
	busy := a.busy
	a.mu.Unlock()
	waits(busy)
	late := false
	tm := time.AfterFunc(p.cfg.aloneWait, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		late = true
		a.cond.Broadcast()
	})
	defer tm.Stop()
	for {
		a.mu.Lock()
		for (a.busy > 0 || p.assigned.Load() > 1) && p.stopCtx.Err() == nil && !late {
			a.cond.Wait()
		}
		if p.stopCtx.Err() != nil {
			close(a.on)
			a.on = nil
			a.busy++ // as above
			a.mu.Unlock()
			return false
		}
		a.mu.Unlock()
		// What waits in the workers' channel goes back; a worker that
		// took a task from it meanwhile is busy giving it back, and is
		// waited for.
		if held := drain(p.tasks); len(held) > 0 {
			p.assigned.Add(-int32(len(held)))
			p.giveBackAll(held)
			continue
		}
		a.mu.Lock()
		busy, over := a.busy+int(p.assigned.Load())-1, late
		a.mu.Unlock()
		if busy == 0 || over {
			if busy > 0 {
				waited(busy)
			}
			break
		}
	}
	// Fetches stay small for a while: a fetch sized for fast tasks brings
	// hundreds, and were they suspects too (two crashes in a row under
	// them), all but one would go back at each.
	p.pace.observe(2 * batchBudget)
	return true
}

// unalone ends what beAlone began.
func (p *Pool) unalone() {
	a := &p.alone
	a.mu.Lock()
	defer a.mu.Unlock()
	close(a.on)
	a.on = nil
}
