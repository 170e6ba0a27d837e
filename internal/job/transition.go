package job

import (
	"fmt"
	"time"
)

// New returns the record of a freshly submitted job.
func New(id string, spec Spec, now time.Time) *Job {
	return &Job{
		ID:         id,
		Kind:       spec.Kind,
		Partitions: spec.Partitions,
		Params:     spec.Params,
		State:      Queued,
		Values:     NewValues(spec.Partitions),
		CreatedAt:  now,
	}
}

// Clone returns a copy of j that can be changed without changing j.
func (j *Job) Clone() *Job {
	c := *j
	c.Values = j.Values.Clone()
	return &c
}

// Tasks returns the job's tasks that are not done yet.
func (j *Job) Tasks() []Task {
	out := make([]Task, 0, j.Partitions-j.Done)
	for _, p := range j.Values.Unset() {
		out = append(out, Task{Job: j.ID, Kind: j.Kind, Partition: p, Partitions: j.Partitions, Params: j.Params, MaxAttempts: j.MaxAttempts})
	}
	return out
}

// Start moves a queued job to running. It reports whether anything changed.
func (j *Job) Start(at time.Time) bool {
	if j.State != Queued {
		return false
	}
	j.State = Running
	j.StartedAt = &at
	return true
}

// Apply records a task's result. A result for a partition already done, or
// for a job already finished, is a duplicate of an earlier attempt and is
// ignored, so a re-executed task never counts twice. When the last partition
// is done the job is reduced and succeeds; a failed task fails the job.
// Apply reports whether the record changed.
func (j *Job) Apply(r TaskResult, reduce ReduceFunc) bool {
	if _, done := j.Values.Get(r.Partition); j.State.Terminal() || r.Partition < 0 || r.Partition >= j.Values.Len() || done {
		return false
	}
	j.Start(r.StartedAt)
	if r.Error != "" {
		j.Failed++
		j.State = Failed
		j.Error = fmt.Sprintf("partition %d failed on worker %s (attempt %d of %d): %s", r.Partition, r.Worker, r.Attempt, max(j.MaxAttempts, 1), r.Error)
		j.FinishedAt = &r.FinishedAt
		return true
	}
	j.Values.Set(r.Partition, r.Value)
	j.Done++
	if j.Done == j.Partitions {
		res := reduce(j.DoneValues())
		j.Result = &res
		j.State = Succeeded
		j.FinishedAt = &r.FinishedAt
	}
	return true
}

// Cancel moves an unfinished job to canceled.
func (j *Job) Cancel(at time.Time) error {
	if j.State.Terminal() {
		return Errorf(EConflict, "job %s is already %s and cannot be canceled", j.ID, j.State)
	}
	j.State = Canceled
	j.FinishedAt = &at
	return nil
}
