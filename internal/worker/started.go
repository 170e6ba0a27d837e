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
