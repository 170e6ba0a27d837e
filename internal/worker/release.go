package worker

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mr"
)

// startedHere holds the start times of the pools this process started: a
// status of one of them is no dead process's, though it has this
// process's id (tests start several servers in one process).
var startedHere sync.Map

// releaseDeadRuns gives back to the queue at once the tasks an earlier
// process of this pool (of this host, by this name) was running when it
// died: a worker restarted by its service manager would otherwise find
// its own tasks held by the dead process for the rest of their lease, up
// to the queue's ack wait (30 s by default), and a server SIGKILLed and
// started again, its in-process workers' too. Each worker's status names
// the delivery it ran (job.WorkerStatus.Lease).
//
// A release reaches the message's latest delivery whatever delivery it
// names (JetStream's consumer takes a nak of any delivery of a message it
// has pending), so a task delivered again since, to another worker, would
// run twice: a status is used only while the lease it names cannot have
// run out, that is within a third of the ack wait of the status's last
// write (the dead process renewed its leases every third of the ack wait,
// and wrote its status within the same second: the same host's clock
// dates both). Beyond that, or for a process not known to be dead (of
// another host, or stopped), the lease is left to run out.
func (p *Pool) releaseDeadRuns(ctx context.Context) {
	startedHere.Store(p.rep.status[0].StartedAt.UnixNano(), true)
	if p.ackWait <= 0 {
		return
	}
	for _, key := range p.keys {
		rctx, cancel := context.WithTimeout(ctx, mr.StoreCallTimeout)
		e, err := p.cfg.Store.Workers.Get(rctx, key)
		cancel()
		var s job.WorkerStatus
		if err != nil || json.Unmarshal(e.Value, &s) != nil {
			continue // none, or unreadable: nothing to give back
		}
		age := time.Since(s.LastSeen)
		_, here := startedHere.Load(s.StartedAt.UnixNano())
		if !s.Busy || s.Lease == "" || s.Host != p.cfg.Host || s.PID <= 0 || here || alive(s.PID) || age < 0 || age >= p.ackWait/3 {
			continue
		}
		log := p.log.With("job", s.JobID, "phase", s.Phase, "partition", s.Partition, "attempt", s.Attempt, "worker", key, "dead_process", s.PID)
		rctx, cancel = context.WithTimeout(ctx, mr.StoreCallTimeout)
		err = p.cfg.Store.Tasks.Release(rctx, s.Lease)
		cancel()
		if err != nil {
			log.Debug("could not give back the task an earlier process of this pool ran when it died; it runs again once its lease runs out", "err", err)
			continue
		}
		log.Info("gave back to the queue the task an earlier process of this pool was running when it died; it runs again now, not once its lease runs out")
	}
}
