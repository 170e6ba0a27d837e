package worker

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mr"
)

// startedHere holds the start times of the pools this process started: a
// status of one of them is no dead process's, though it has this
// process's id (tests start several servers in one process).
var startedHere sync.Map

// releaseDeadRuns gives back to the queue at once the tasks that pools of
// this host whose processes died were running: a worker restarted by its
// service manager, or a server SIGKILLed and started again (its own
// workers), would otherwise find those tasks held by the dead process for
// the rest of their leases, up to the queue's ack wait (30 s by default).
// Each worker's status names the delivery it runs (job.WorkerStatus.Lease);
// a status of this host whose process is gone is claimed by deleting it at
// its revision (of pools starting at once on a host, one gives a task
// back; and the dashboard forgets the dead worker at once rather than
// after the status's time to live), then its delivery is given back.
//
// A release reaches the message's latest delivery whatever delivery it
// names (JetStream's consumer takes a nak of any delivery of a message it
// has pending), so a task delivered again since, to another worker, would
// run twice: a status is used only while the lease it names cannot have
// run out, that is within a third of the ack wait of the status's last
// write (the dead process renewed its leases every third of the ack wait,
// and wrote its status within the same seconds: the same host's clock
// dates both). Beyond that, or for a process not known to be dead (of
// another host or process id namespace, as another container of the same
// host name, or stopped), the lease is left to run out.
func (p *Pool) releaseDeadRuns(ctx context.Context) {
	startedHere.Store(p.rep.status[0].StartedAt.UnixNano(), true)
	if p.ackWait <= 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, mr.StoreCallTimeout)
	entries, err := p.cfg.Store.Workers.Entries(rctx, "")
	cancel()
	if err != nil {
		p.log.Debug("could not read the workers' statuses for tasks of dead processes of this host; those run again once their leases run out", "err", err)
		return
	}
	for _, e := range entries {
		var s job.WorkerStatus
		if json.Unmarshal(e.Value, &s) != nil {
			continue
		}
		age := time.Since(s.LastSeen)
		_, here := startedHere.Load(s.StartedAt.UnixNano())
		if !s.Busy || s.Lease == "" || s.Host != p.cfg.Host || s.PIDNS != p.rep.status[0].PIDNS || s.PID <= 0 || here || alive(s.PID) || age < 0 || age >= p.ackWait/3 {
			continue
		}
		log := p.log.With("job", s.JobID, "phase", s.Phase, "partition", s.Partition, "attempt", s.Attempt, "worker", e.Key, "dead_process", s.PID)
		rctx, cancel := context.WithTimeout(ctx, mr.StoreCallTimeout)
		err := p.cfg.Store.Workers.Delete(rctx, e.Key, e.Revision)
		if err == nil {
			err = p.cfg.Store.Tasks.Release(rctx, s.Lease)
		}
		cancel()
		if err != nil {
			log.Debug("could not give back the task a dead process of this host was running (another pool starting took it, or the store did not answer); it runs again once its lease runs out", "err", err)
			continue
		}
		log.Info("gave back to the queue the task a dead process of this host was running; it runs again now, not once its lease runs out")
		s.Key = e.Key
		p.releasedMu.Lock()
		p.released = append(p.released, s)
		p.releasedMu.Unlock()
	}
}

// Released returns the statuses of dead processes' workers whose tasks
// the pool gave back at its start: a read model started after it (the
// server's own, which has not seen them) names those runs' workers from
// them (view.View.NoteLostRuns).
func (p *Pool) Released() []job.WorkerStatus {
	p.releasedMu.Lock()
	defer p.releasedMu.Unlock()
	return slices.Clone(p.released)
}

// pidNamespace names this process's process id namespace ("" where there
// is no /proc): a process id means something only within it.
func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}
