package view

import (
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// A run lost with its worker is recorded by the pool that gets the task
// next (worker.Pool.noteLost), which cannot know who ran it: the worker
// that died could not say. The view saw it, though: the worker's status
// named the task until its process went. lostRuns remembers, for the last
// maxLostRuns such ends, which worker was running which attempt and since
// when, so that the job's history can name them (Service.Tasks). It is
// memory only: a server started after the loss shows no worker, as before,
// but for the runs its own pool gave back at its start (NoteLostRuns).
type lostRuns struct {
	by    map[runKey]ranOn
	order []runKey // a ring, oldest overwritten first
	next  int
}

// maxLostRuns bounds the runs lostRuns remembers: a worker's end is rare,
// and a server's restart forgets them all anyway.
const maxLostRuns = 4096

type runKey struct {
	job       string
	phase     job.Phase
	partition int
	attempt   int
	epoch     int
	backup    bool
}

type ranOn struct {
	worker  string
	started time.Time
}

// ended notes that the process behind status s, of worker key, went while
// it ran a task (its status expired, was deleted, or another process took
// its name over). v.mu must be held.
func (l *lostRuns) ended(key string, s job.WorkerStatus) {
	if !s.Busy || s.JobID == "" {
		return
	}
	if l.by == nil {
		l.by = map[runKey]ranOn{}
		l.order = make([]runKey, 0, 64)
	}
	k := runKey{s.JobID, s.Phase, s.Partition, s.Attempt, s.Epoch, s.Backup}
	run := ranOn{worker: key}
	if s.TaskStartedAt != nil {
		run.started = *s.TaskStartedAt
	}
	if _, ok := l.by[k]; !ok {
		if len(l.order) < maxLostRuns {
			l.order = append(l.order, k)
		} else {
			delete(l.by, l.order[l.next])
			l.order[l.next] = k
			l.next = (l.next + 1) % maxLostRuns
		}
	}
	l.by[k] = run
}

// otherProcess reports whether status b was written by another process
// than a under the same key: a pool restarted under its name (by systemd,
// say) after its process died.
func otherProcess(a, b job.WorkerStatus) bool {
	return a.Host != b.Host || a.PID != b.PID || !a.StartedAt.Equal(b.StartedAt)
}

// LostRun names the worker whose process went while it ran the lost run r
// (a job.OutcomeLost record), and when that run started (zero when its
// status did not say), if this view saw it go.
func (v *View) LostRun(r job.TaskResult) (worker string, started time.Time, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	run, ok := v.lost.by[runKey{r.Job, r.Phase, r.Partition, r.Attempt, r.Epoch, r.Backup}]
	return run.worker, run.started, ok
}

// NoteLostRuns tells the view of workers whose processes went while they
// ran the tasks their statuses s name, which it did not see go (their
// statuses were claimed before it started: worker.Pool.Released).
func (v *View) NoteLostRuns(s ...job.WorkerStatus) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, w := range s {
		v.lost.ended(w.Key, w)
	}
}
