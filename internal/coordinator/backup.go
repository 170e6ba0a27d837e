package coordinator

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mapx"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Backup tasks, as in the MapReduce paper: when every task of a job's phase
// has been handed out and some still run, the slowest (those running longer
// than twice the phase's median, and at least BackupAfter) get a second
// copy, one per idle worker, which those workers pick up. The first copy
// to finish is committed; the other is told to stop, and its output, if
// any, is discarded (a copy still queued when its task finished is dropped
// by the worker that takes it). The record of which tasks got a copy is in
// the job, written with a compare-and-set, so that among several servers
// only one starts it.

// backupKey names a task in Job.Backups.
func backupKey(phase job.Phase, partition int) string {
	return string(phase) + "/" + strconv.Itoa(partition)
}

// durations keeps the runs of a job's finished tasks, by phase.
type durations map[job.Phase][]taskRun

// taskRun is a finished task's run time, and for a reduce task the bytes
// it read (-1: not known).
type taskRun struct {
	took  time.Duration
	bytes int64
}

const maxDurations = 512

// noteDuration keeps the run time of result r of job j.
func (c *Coordinator) noteDuration(j *job.Job, r job.TaskResult) {
	if c.cfg.BackupAfter <= 0 || r.Error != "" {
		return
	}
	run := taskRun{took: r.FinishedAt.Sub(r.StartedAt), bytes: reduceInput(j, r.Phase, r.Partition)}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.durs[r.Job]
	if d == nil {
		d = durations{}
		c.durs[r.Job] = d
		mapx.Note(c.durs, &c.dursHigh)
	}
	if ds := d[r.Phase]; len(ds) < maxDurations {
		d[r.Phase] = append(ds, run)
	}
}

// reduceInput returns the bytes reduce task p of j reads, or -1 when not
// known (a map task, or map results that did not say).
func reduceInput(j *job.Job, phase job.Phase, p int) int64 {
	if phase != job.PhaseReduce || p < 0 || p >= len(j.ReduceInputBytes) {
		return -1
	}
	return j.ReduceInputBytes[p]
}

// median returns the median run time of job id's finished tasks of phase,
// and the median input of those whose input is known (-1: none).
func (c *Coordinator) median(id string, phase job.Phase) (took time.Duration, bytes int64, ok bool) {
	c.mu.Lock()
	runs := c.durs[id][phase]
	ds := make([]time.Duration, 0, len(runs))
	var bs []int64
	for _, r := range runs {
		ds = append(ds, r.took)
		if r.bytes >= 0 {
			bs = append(bs, r.bytes)
		}
	}
	c.mu.Unlock()
	if len(ds) == 0 {
		return 0, -1, false
	}
	slices.Sort(ds)
	bytes = -1
	if len(bs) > 0 {
		slices.Sort(bs)
		bytes = bs[len(bs)/2]
	}
	return ds[len(ds)/2], bytes, true
}

// minWeighedInput is the least input a reduce task's time is weighed by:
// below it, a task's time is mostly its fixed costs, not its input.
const minWeighedInput = 256 << 10

// straggling returns how long task p of j's current phase may run before
// it gets a backup copy: twice the phase's median run time, and at least
// BackupAfter; for a reduce task that reads more than the median finished
// one (skewed keys: a hot key's reducer reads many times the others'
// bytes), that much longer, since a copy would read as much and take as
// long: the task is large, not its worker slow.
func (c *Coordinator) straggling(j *job.Job, p int, median time.Duration, medianInput int64) time.Duration {
	after := 2 * median
	if in := reduceInput(j, j.Phase, p); in > 0 && medianInput >= 0 {
		if w := float64(in) / float64(max(medianInput, minWeighedInput)); w > 1 {
			after = time.Duration(float64(after) * w)
		}
	}
	return max(after, c.cfg.BackupAfter)
}

// stopOtherCopies tells workers to stop the copies of a task that a result
// just finished, when the task had a backup.
func (c *Coordinator) stopOtherCopies(j *job.Job, r job.TaskResult) {
	if !slices.Contains(j.Backups, backupKey(r.Phase, r.Partition)) {
		return
	}
	_ = c.cfg.Store.Notices.StopTask(j.ID, r.Phase, r.Partition)
}

// backupLoop looks for stragglers until ctx ends.
func (c *Coordinator) backupLoop(ctx context.Context) {
	every(ctx, 250*time.Millisecond, func() { c.lookForStragglers(ctx, time.Now()) })
}

// lookForStragglers queues backup copies of the stragglers among the
// cluster's running tasks, at most one per idle worker: a copy is spare
// capacity put to use at a phase's end (the MapReduce paper's "idle
// workers"), and one queued while every worker is busy would take a
// worker from the queued work of other jobs, or wait in the queue until
// its task had finished anyway.
func (c *Coordinator) lookForStragglers(ctx context.Context, now time.Time) {
	byJob := map[string][]job.WorkerStatus{}
	idle := 0
	for _, s := range c.cfg.Running() {
		switch {
		case s.Stopping:
		case !s.Busy:
			idle++
		case s.TaskStartedAt != nil:
			byJob[s.JobID] = append(byJob[s.JobID], s)
		}
	}
	for id, ws := range byJob {
		if idle == 0 {
			return
		}
		// A job retried after this server saw it finish gets no
		// backups here until its record is read again.
		if c.finished(id, 0) {
			continue
		}
		j, _, err := c.getRecord(ctx, id)
		if err != nil || j.IsGroup() {
			// A group's tasks are jobs of their own, each as long as
			// it is: no backups, as none for a job of one task.
			continue
		}
		idle -= c.backup(ctx, j, ws, now, idle)
	}
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fn()
		}
	}
}

// backup starts copies of j's stragglers among its running tasks ws, at
// most room of them, and returns how many it queued.
func (c *Coordinator) backup(ctx context.Context, j *job.Job, ws []job.WorkerStatus, now time.Time, room int) (queued int) {
	if j.State != job.Running || j.Held || (j.ReadsData() && !j.Enqueued) {
		return 0
	}
	total, done := j.Partitions, j.Done
	if j.Phase == job.PhaseReduce {
		total, done = j.Reducers, j.ReduceDone
	}
	started := map[int]time.Time{} // running partitions of the phase, by first start
	for _, s := range ws {
		if s.Phase != j.Phase || j.TaskDone(s.Phase, s.Partition) {
			continue
		}
		if t, ok := started[s.Partition]; !ok || s.TaskStartedAt.Before(t) {
			started[s.Partition] = *s.TaskStartedAt
		}
	}
	if len(started) == 0 || done+len(started) < total {
		return 0 // tasks of the phase still wait in the queue: no tail yet
	}
	median, medianInput, ok := c.median(j.ID, j.Phase)
	if !ok {
		return 0
	}
	limit := 1 + total/10
	for p, at := range started {
		key := backupKey(j.Phase, p)
		if queued >= room {
			return queued
		}
		after := c.straggling(j, p, median, medianInput)
		if now.Sub(at) < after || slices.Contains(j.Backups, key) {
			continue
		}
		var wrote bool
		nj, err := c.update(ctx, j.ID, func(j *job.Job) bool {
			wrote = false
			if j.State != job.Running || j.TaskDone(j.Phase, p) || slices.Contains(j.Backups, key) || len(j.Backups) >= limit {
				return false
			}
			j.Backups = append(j.Backups, key)
			wrote = true
			return true
		})
		if err != nil || !wrote {
			return queued
		}
		j = nj
		tasks, _, err := c.tasks(ctx, j)
		if err != nil {
			c.log.Warn("could not make a backup copy of a slow task", "job", j.ID, "task", key, "err", err)
			return queued
		}
		for _, t := range tasks {
			if t.Partition != p {
				continue
			}
			t.Backup = true
			msgs, err := store.TaskMessages([]job.Task{t}, false)
			if err == nil {
				err = c.cfg.Store.Tasks.Send(msgs[0])
			}
			if err != nil {
				c.log.Warn("could not queue a backup copy of a slow task", "job", j.ID, "task", key, "err", err)
			} else {
				queued++
				c.log.Info("straggler: queued a backup copy of a slow task", "job", j.ID, "task", key,
					"running_for", now.Sub(at).Round(time.Millisecond), "phase_median", median.Round(time.Millisecond), "waited_for", after.Round(time.Millisecond))
			}
		}
	}
	return queued
}
