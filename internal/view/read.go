package view

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
)

// Job is the API's representation of a job: the public client's type, so
// that what the server sends and what a Go program decodes cannot drift.
type Job = client.Job

// TaskCounts counts a job's tasks by state.
type TaskCounts = client.TaskCounts

// Resource returns the API representation of j.
func (v *View) Resource(j *job.Job) Job {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.resource(j, v.runningByJob())
}

func (v *View) resource(j *job.Job, running map[string]int) Job {
	c := TaskCounts{Total: j.Partitions, Done: j.Done, Failed: j.Failed}
	if j.ReadsData() {
		c.Total += j.Reducers
		c.Done += j.ReduceDone
	}
	if !j.State.Terminal() {
		left := c.Total - c.Done - c.Failed
		if j.ReadsData() && j.Phase == job.PhaseMap {
			left -= j.Reducers // not queued before the maps are done
		}
		c.Running = min(running[j.ID], left)
		c.Queued = left - c.Running
	}
	out := Job{
		ID: j.ID, Kind: j.Kind, State: client.State(j.State), Partitions: j.Partitions, Params: j.Params,
		Input: j.Input, Reducers: j.Reducers, Phase: shownPhase(j), Counters: (*client.Counters)(j.Counters), Backups: j.Backups,
		Tasks: c, Result: (*client.Result)(j.Result), Error: j.Error,
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
	}
	if j.History != nil {
		out.History = make([]client.Step, len(j.History))
		for i, s := range j.History {
			out.History[i] = client.Step(s)
		}
	}
	for _, p := range j.Preview {
		out.Preview = append(out.Preview, p.Line)
	}
	if j.FinishedAt != nil && v.cfg.Retention > 0 {
		at := j.FinishedAt.Add(v.cfg.Retention)
		out.ExpiresAt = &at
	}
	return out
}

// shownStatus is a worker status as the API shows it: no phase for a task
// of a map-only job. v.mu is held.
func (v *View) shownStatus(s job.WorkerStatus) job.WorkerStatus {
	if j, ok := v.jobs[s.JobID]; ok && !j.ReadsData() {
		s.Phase = ""
	}
	return s
}

// shownPhase is the phase the API shows: a map-only job has none to show.
func shownPhase(j *job.Job) string {
	if !j.ReadsData() {
		return ""
	}
	return string(j.Phase)
}

// runningByJob counts busy workers by job; v.mu must be held.
func (v *View) runningByJob() map[string]int {
	out := map[string]int{}
	for _, w := range v.workers {
		if w.status.Busy {
			out[w.status.JobID]++
		}
	}
	return out
}

// Get returns the job with the given id.
func (v *View) Get(id string) (Job, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	j, ok := v.jobs[id]
	if !ok {
		return Job{}, false
	}
	return v.resource(j, v.runningByJob()), true
}

// List returns up to limit jobs, newest first, in the given state (any when
// empty), starting after the job with id cursor (from the start when empty).
// next is the cursor of the following page, empty on the last.
func (v *View) List(state job.State, limit int, cursor string) (jobs []Job, next string, err error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i := len(v.sorted) - 1
	if cursor != "" {
		c, ok := v.jobs[cursor]
		if !ok {
			return nil, "", job.Errorf(job.EInvalid, "cursor %q is not a job id; pass the next_cursor of the previous page", cursor)
		}
		i = v.index(c) - 1
	}
	running := v.runningByJob()
	jobs = []Job{}
	for ; i >= 0; i-- {
		j := v.sorted[i]
		if state != "" && j.State != state {
			continue
		}
		if len(jobs) == limit {
			return jobs, jobs[len(jobs)-1].ID, nil
		}
		jobs = append(jobs, v.resource(j, running))
	}
	return jobs, "", nil
}

// Workers returns every live worker, ordered by key.
func (v *View) Workers() []job.WorkerStatus {
	return v.workerList(true)
}

// Running returns every live worker's status as the worker wrote it, phase
// included for map-only jobs: what the coordinator's backups compare with
// jobs' phases.
func (v *View) Running() []job.WorkerStatus {
	return v.workerList(false)
}

func (v *View) workerList(shown bool) []job.WorkerStatus {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]job.WorkerStatus, 0, len(v.workers))
	for _, w := range v.workers {
		s := w.status
		if shown {
			s = v.shownStatus(s)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Index < out[j].Index
	})
	return out
}

// QueuedJob is one job's share of the queue.
type QueuedJob = client.QueuedJob

// Queue returns the jobs with tasks waiting for a worker, oldest first,
// and the total.
func (v *View) Queue() (jobs []QueuedJob, depth int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	running := v.runningByJob()
	jobs = []QueuedJob{}
	for _, j := range v.active {
		if q := v.resource(j, running).Tasks.Queued; q > 0 {
			jobs = append(jobs, QueuedJob{Job: j.ID, Kind: j.Kind, Waiting: q})
			depth += q
		}
	}
	// Oldest first, as the queue serves them (ids sort by age after the kind).
	sort.Slice(jobs, func(a, b int) bool { return age(jobs[a].Job) < age(jobs[b].Job) })
	return jobs, depth
}

// Counts returns how many jobs are in each state.
func (v *View) Counts() map[job.State]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[job.State]int{}
	for _, j := range v.jobs {
		out[j.State]++
	}
	return out
}

// SeedWorker is a worker in the seed's contract.
type SeedWorker struct {
	Id    int
	Busy  bool
	JobId string
}

// SeedWorkers returns the workers in the seed's shape; Id is the worker's
// position in key order.
func (v *View) SeedWorkers() []SeedWorker {
	ws := v.Workers()
	out := make([]SeedWorker, len(ws))
	for i, w := range ws {
		out[i] = SeedWorker{Id: i, Busy: w.Busy, JobId: w.JobID}
	}
	return out
}

// SeedQueue returns the seed's queue: one job id per waiting task.
func (v *View) SeedQueue() []string {
	jobs, depth := v.Queue()
	out := make([]string, 0, depth)
	for _, q := range jobs {
		for range q.Waiting {
			out = append(out, q.Job)
		}
	}
	return out
}

// SeedResultsLimit bounds the seed's results map to the newest jobs, so a
// long history does not make every message huge.
const SeedResultsLimit = 200

// SeedResults returns the seed's results: job id → results of its finished
// partitions, in partition order, for the newest jobs.
func (v *View) SeedResults() map[string][]int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string][]int64{}
	for i := len(v.sorted) - 1; i >= 0 && len(out) < SeedResultsLimit; i-- {
		out[v.sorted[i].ID] = v.sorted[i].DoneValues()
	}
	return out
}

// TaskTotals returns how many tasks of unfinished jobs wait for a worker
// and how many run.
func (v *View) TaskTotals() (queued, running int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	byJob := v.runningByJob()
	for _, j := range v.active {
		c := v.resource(j, byJob).Tasks
		queued += c.Queued
		running += c.Running
	}
	return queued, running
}

// ReadingJob returns an unfinished job that reads dataset name, if any.
func (v *View) ReadingJob(name string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, j := range v.active {
		if slices.Contains(j.Input, name) {
			return j.ID, true
		}
	}
	return "", false
}

// Unqueued returns the unfinished jobs whose tasks are not all known to be
// queued: a submit or a phase change in progress, or interrupted.
func (v *View) Unqueued() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for id, j := range v.active {
		if !j.Enqueued {
			out = append(out, id)
		}
	}
	return out
}

// Expired returns the finished jobs that finished before t.
func (v *View) Expired(before time.Time) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for id, j := range v.jobs {
		if j.State.Terminal() && j.FinishedAt != nil && j.FinishedAt.Before(before) {
			out = append(out, id)
		}
	}
	return out
}

// AwaitGone returns once the view no longer holds job id, or when ctx ends.
func (v *View) AwaitGone(ctx context.Context, id string) {
	for {
		changed := v.Changed()
		v.mu.RLock()
		_, ok := v.jobs[id]
		v.mu.RUnlock()
		if !ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// age is the part of a job id that sorts by creation.
func age(id string) string {
	if i := strings.IndexByte(id, '_'); i >= 0 {
		return id[i+1:]
	}
	return id
}
