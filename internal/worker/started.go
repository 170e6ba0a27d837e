package worker

import (
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// startedEvery paces task-start notices: the first after a quiet spell goes
// out at once, later ones are sent together, one message per job.
const startedEvery = 50 * time.Millisecond

func (p *Pool) noteStarted(s job.TaskStarted) {
	p.startedMu.Lock()
	p.startedBuf[s.Job] = append(p.startedBuf[s.Job], s)
	p.startedMu.Unlock()
	select {
	case p.startedWake <- struct{}{}:
	default:
	}
}

// unnoteStarted withdraws the start notice of an attempt that has ended
// before its notice went out: its result says as much (a job is running
// once any result of it is applied), so under a load of short tasks, when
// most tasks end within startedEvery, few notices are sent at all. A
// notice is a message to the coordinator and one to every server's read
// model, for every task.
func (p *Pool) unnoteStarted(s job.TaskStarted) {
	p.startedMu.Lock()
	defer p.startedMu.Unlock()
	notices := p.startedBuf[s.Job]
	for i, n := range notices {
		if n.Phase == s.Phase && n.Partition == s.Partition && n.Attempt == s.Attempt && n.Worker == s.Worker {
			notices = append(notices[:i], notices[i+1:]...)
			break
		}
	}
	if len(notices) == 0 {
		delete(p.startedBuf, s.Job)
	} else {
		p.startedBuf[s.Job] = notices
	}
}

// sendStarted publishes task-start notices until the pool stops.
func (p *Pool) sendStarted(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			p.flushStarted()
			return
		case <-p.startedWake:
		}
		p.flushStarted()
		select {
		case <-stop:
			p.flushStarted()
			return
		case <-time.After(startedEvery):
		}
	}
}

func (p *Pool) flushStarted() {
	p.startedMu.Lock()
	buf := p.startedBuf
	if len(buf) == 0 {
		p.startedMu.Unlock()
		return
	}
	p.startedBuf = map[string][]job.TaskStarted{}
	p.startedMu.Unlock()
	for _, notices := range buf {
		_ = p.cfg.Store.Notices.TasksStarted(notices)
	}
}
