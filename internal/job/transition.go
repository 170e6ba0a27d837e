package job

import (
	"fmt"
	"slices"
	"time"
)

// New returns the record of a freshly submitted job.
func New(id string, spec Spec, now time.Time) *Job {
	j := &Job{
		ID:         id,
		Kind:       spec.Kind,
		Partitions: spec.Partitions,
		Params:     spec.Params,
		RerunOf:    spec.RerunOf,
		Timeout:    spec.Timeout,
		Priority:   spec.Priority,
		// 0: the coordinator's default.
		MaxAttempts: spec.MaxAttempts,
		State:       Queued,
		Values:      NewValues(spec.Partitions),
		Phase:       PhaseMap,
		CreatedAt:   now,
		History:     []Step{{State: string(Queued), At: now}},
		Schedule:    spec.Schedule,
	}
	if !spec.Tick.IsZero() {
		tick := spec.Tick.UTC()
		j.Tick = &tick
	}
	if spec.RunAt.After(now) {
		at := spec.RunAt.UTC()
		j.State, j.RunAt, j.History = Scheduled, &at, []Step{{State: string(Scheduled), At: now}}
	}
	return j
}

// ReadsData reports whether the job reads datasets: a map phase over its
// input, then a reduce phase. A job that reads none is map-only.
func (j *Job) ReadsData() bool { return j.Reducers > 0 }

// step records that the job entered state (or phase) at t.
func (j *Job) step(state string, t time.Time) {
	j.History = append(j.History, Step{State: state, At: t})
}

// Clone returns a copy of j that can be changed without changing j.
func (j *Job) Clone() *Job {
	c := *j
	c.Values = j.Values.Clone()
	// What Apply and the backups change in place. Files and Input are
	// never changed after submit.
	c.MapCommits = slices.Clone(j.MapCommits)
	c.ReduceCommits = slices.Clone(j.ReduceCommits)
	c.ReduceInputBytes = slices.Clone(j.ReduceInputBytes)
	c.Backups = slices.Clone(j.Backups)
	c.Preview = slices.Clone(j.Preview)
	c.History = slices.Clone(j.History)
	c.TaskLog = slices.Clone(j.TaskLog)
	c.Members = slices.Clone(j.Members)
	if j.Counters != nil {
		counters := *j.Counters
		c.Counters = &counters
	}
	return &c
}

// MaxInlineFiles is the most input files a job's record holds itself;
// more go to an object of their own (FilesRef).
const MaxInlineFiles = 256

// Tasks returns the tasks of the job's current phase that are not done
// yet; in the map phase of a job whose files are in an object (FilesRef),
// Files must hold them (see TasksOf).
func (j *Job) Tasks() []Task { return j.TasksOf(j.Files) }

// Pending counts the tasks of the job's current phase that are not done.
func (j *Job) Pending() int {
	if j.Phase == PhaseReduce {
		n := 0
		for _, c := range j.ReduceCommits {
			if c == "" {
				n++
			}
		}
		return n
	}
	return len(j.Values.Unset())
}

// TasksOf is Tasks with the job's input files read from elsewhere.
func (j *Job) TasksOf(files []InputFile) []Task {
	t := Task{Job: j.ID, Kind: j.Kind, Module: j.Module, Partitions: j.Partitions, Params: j.Params, MaxAttempts: j.MaxAttempts, MaxLostRuns: j.MaxLostRuns, Phase: j.Phase, Reducers: j.Reducers, Timeout: j.Timeout, Epoch: j.Epoch, Priority: j.Priority, LogInRecord: j.LogInRecord, Round: j.Reopened}
	if j.Phase == PhaseReduce {
		var out []Task
		t.Maps = j.MapCommits
		for r, c := range j.ReduceCommits {
			if c == "" {
				t.Partition = r
				out = append(out, t)
			}
		}
		return out
	}
	var splits [][]Piece
	if j.ReadsData() {
		splits = Splits(files, j.Partitions)
	}
	out := make([]Task, 0, j.Partitions-j.Done)
	for _, p := range j.Values.Unset() {
		t.Partition = p
		if j.IsGroup() {
			t.Params, t.Member = j.Members[p].Params, MemberID(j.ID, p+1)
		}
		if splits != nil {
			t.Files, t.Split = splitFiles(files, splits[p])
			t.FilesRef = ""
			if j.FilesRef != "" && len(t.Files) > MaxTaskFiles {
				// The worker reads the job's list and cuts the split
				// itself (Task.Input): the task stays one message. Its
				// split names no file, which a worker of an earlier
				// version refuses ("split names file -1 of 0") rather
				// than read nothing and output nothing.
				t.Files, t.Split, t.FilesRef = nil, []Piece{{File: -1}}, j.FilesRef
			}
		}
		out = append(out, t)
	}
	return out
}

// MaxTaskFiles is the most input files a map task lists itself, when its
// job's list is in an object (Job.FilesRef): each file takes about 200
// bytes of the task's message, and a task of about 6,000 files was larger
// than a message may be (413 at submit).
const MaxTaskFiles = 1000

// Input returns the files map task t reads and its split of them, cut from
// files, its job's whole list, as TasksOf does. For a task that names the
// list (FilesRef) instead of carrying its files.
func (t Task) Input(files []InputFile) ([]InputFile, []Piece, error) {
	splits := Splits(files, t.Partitions)
	if t.Partition < 0 || t.Partition >= len(splits) {
		return nil, nil, fmt.Errorf("map task %d of job %s is not one of the %d splits of its %d input files", t.Partition, t.Job, len(splits), len(files))
	}
	own, split := splitFiles(files, splits[t.Partition])
	return own, split, nil
}

// splitFiles returns the files a split reads and the split renumbered to
// them: a map task carries those, not all the job's files (each with its
// blocks' line counts), which for many files and many map tasks grew as
// their product.
func splitFiles(files []InputFile, split []Piece) ([]InputFile, []Piece) {
	var own []InputFile
	pieces := make([]Piece, len(split))
	index := map[int]int{}
	for i, p := range split {
		n, ok := index[p.File]
		if !ok && p.File >= 0 && p.File < len(files) {
			n = len(own)
			index[p.File] = n
			own = append(own, files[p.File])
		} else if !ok {
			n = -1 // out of range: the reader says so
		}
		pieces[i] = Piece{File: n, Start: p.Start, End: p.End}
	}
	return own, pieces
}

// Start moves a queued job to running. It reports whether anything changed.
func (j *Job) Start(at time.Time) bool {
	if j.State != Queued {
		return false
	}
	j.State = Running
	j.StartedAt = &at
	j.step(string(Running), at)
	return true
}

// Apply records a task's result. A result for a partition already done, or
// for a job already finished, is a duplicate of an earlier attempt and is
// ignored, so a re-executed task never counts twice. When the last partition
// is done the job is reduced and succeeds; a failed task fails the job.
// Apply reports whether the record changed.
func (j *Job) Apply(r TaskResult, reduce ReduceFunc) bool {
	if !r.Final() || r.Epoch < j.Epoch || r.Job != "" && r.Job != j.ID {
		return false // history only, a task of the job before its retry, or another job's
	}
	if r.Phase == PhaseReduce {
		return j.applyReduce(r)
	}
	if _, done := j.Values.Get(r.Partition); j.State.Terminal() || r.Partition < 0 || r.Partition >= j.Values.Len() || done || j.Phase == PhaseReduce {
		return false
	}
	j.Start(r.StartedAt)
	if j.IsGroup() {
		return j.applyMember(r, reduce)
	}
	if r.Error != "" {
		what := "partition"
		if j.ReadsData() {
			what = "map task"
		}
		j.fail(r, what)
		return true
	}
	j.Values.Set(r.Partition, r.Value)
	j.Done++
	if j.ReadsData() {
		j.MapCommits[r.Partition] = r.Commit
		if j.Reopened == 0 {
			// A map that runs again for a lost output read what its first
			// run read and counted: every map was done before the first
			// reopen, and a retry sets Reopened back to 0.
			j.count(r)
			j.addPartBytes(r)
		}
		if j.Done == j.Partitions {
			// Every map output is committed: the reduce tasks can run.
			j.Phase = PhaseReduce
			if len(j.ReduceCommits) != j.Reducers { // kept when a map ran again
				j.ReduceCommits = make([]string, j.Reducers)
			}
			j.Enqueued = false
			j.step(string(PhaseReduce), r.FinishedAt)
		}
		return true
	}
	if j.Done == j.Partitions {
		res := reduce(j.DoneValues())
		j.Result = &res
		j.State = Succeeded
		j.FinishedAt = &r.FinishedAt
		j.step(string(Succeeded), r.FinishedAt)
	}
	return true
}

// Due moves a scheduled job to queued, its tasks to be queued now; false
// when it is not scheduled (another server did it first, or it was
// canceled).
func (j *Job) Due(at time.Time) bool {
	if j.State != Scheduled {
		return false
	}
	j.State = Queued
	j.Enqueued = false
	j.step(string(Queued), at)
	return true
}

// Retry moves a failed or canceled job back to queued, in a new epoch, to
// run the tasks it did not finish; its tasks are to be queued now. A job
// that reads data runs whole again: its map and reduce outputs were deleted
// when it ended. A map-only job keeps its done partitions' values.
func (j *Job) Retry(at time.Time) error {
	if j.State != Failed && j.State != Canceled {
		what := "wait for it, or cancel it first"
		if j.State == Succeeded {
			what = "rerun it to run it again as a new job"
		}
		return Errorf(EConflict, "job %s is %s: only a failed or canceled job can be retried; %s", j.ID, j.State, what)
	}
	j.Epoch++
	j.State, j.Enqueued, j.Error, j.Failed, j.Reopened = Queued, false, "", 0, 0
	j.FinishedAt, j.Result, j.RunAt, j.Backups = nil, nil, nil, nil
	if j.ReadsData() {
		j.Phase, j.Values, j.Done = PhaseMap, NewValues(j.Partitions), 0
		j.MapCommits, j.ReduceCommits, j.ReduceDone = make([]string, j.Partitions), nil, 0
		j.Counters, j.Preview, j.ReduceInputBytes = &Counters{}, nil, nil
	}
	j.step("retried", at)
	j.step(string(Queued), at)
	return nil
}

// Cancel moves an unfinished job to canceled.
func (j *Job) Cancel(at time.Time) error {
	if j.State.Terminal() {
		return Errorf(EConflict, "job %s is already %s and cannot be canceled", j.ID, j.State)
	}
	j.State = Canceled
	j.FinishedAt = &at
	j.step(string(Canceled), at)
	return nil
}

func (j *Job) fail(r TaskResult, what string) {
	j.Failed++
	j.State = Failed
	failures := r.Failures
	if failures == 0 {
		failures = r.Attempt // a result from before failures were counted apart
	}
	if r.Unretried {
		j.Error = fmt.Sprintf("%s %d failed on worker %s (not retried: another attempt would fail the same way): %s", what, r.Partition, r.Worker, r.Error)
	} else {
		j.Error = fmt.Sprintf("%s %d failed on worker %s (attempt %d of %d): %s", what, r.Partition, r.Worker, failures, max(j.MaxAttempts, 1), r.Error)
	}
	j.FinishedAt = &r.FinishedAt
	j.step(string(Failed), r.FinishedAt)
}

func (j *Job) count(r TaskResult) {
	if r.Counters == nil {
		return
	}
	if j.Counters == nil {
		j.Counters = &Counters{}
	}
	j.Counters.Add(*r.Counters)
}

// addPartBytes adds the sizes of map result r's runs to what each
// reducer reads.
func (j *Job) addPartBytes(r TaskResult) {
	if len(r.PartBytes) != j.Reducers {
		return // a worker of an earlier version, which does not say
	}
	if len(j.ReduceInputBytes) != j.Reducers {
		j.ReduceInputBytes = make([]int64, j.Reducers)
	}
	for i, n := range r.PartBytes {
		j.ReduceInputBytes[i] += n
	}
}

// applyReduce records a reduce task's result; the last one finishes the job.
func (j *Job) applyReduce(r TaskResult) bool {
	// A reduce result is taken in the map phase of a job that runs a lost
	// map output again: reduces that read every output before the loss
	// are done (a map's output is the same whichever attempt made it).
	if j.State.Terminal() || j.ReduceCommits == nil || r.Partition < 0 || r.Partition >= len(j.ReduceCommits) || j.ReduceCommits[r.Partition] != "" {
		return false
	}
	if r.Error != "" && r.LostMap > 0 {
		return j.reopen(r)
	}
	if r.Error != "" {
		if j.Phase != PhaseReduce {
			return false // it runs again in the next reduce phase
		}
		j.fail(r, "reduce task")
		return true
	}
	j.ReduceCommits[r.Partition] = r.Commit
	j.ReduceDone++
	j.count(r)
	j.Preview = MergePreview(j.Preview, r.Preview)
	if j.ReduceDone == j.Reducers {
		j.State = Succeeded
		j.FinishedAt = &r.FinishedAt
		j.step(string(Succeeded), r.FinishedAt)
	}
	return true
}

// MaxReopened bounds the map tasks a job runs again for outputs lost from
// the store (deleted, damaged), with the job's count of map tasks if that
// is more (a damaged file of the store may hold many maps' outputs): a
// store that loses them for good fails the job rather than running its
// maps for ever.
const MaxReopened = 3

// reopen runs again the maps whose outputs reduce result r could not
// read, as the MapReduce paper does for the outputs of a failed machine:
// the job goes back to its map phase for those tasks, its done reduces
// stay done, and the others run again once they are done. A loss reported
// against an output already made again is stale (false).
func (j *Job) reopen(r TaskResult) bool {
	if j.Phase != PhaseReduce {
		return false
	}
	var maps []int
	for _, l := range r.Lost() {
		m := l.Map - 1
		if m >= 0 && m < len(j.MapCommits) && j.MapCommits[m] != "" && j.MapCommits[m] == l.Commit && !slices.Contains(maps, m) {
			maps = append(maps, m)
		}
	}
	if len(maps) == 0 {
		return false
	}
	if j.Reopened+len(maps) > max(MaxReopened, j.Partitions) {
		r.Error = fmt.Sprintf("%s (map outputs were lost and made again %d times: the store keeps losing them)", r.Error, j.Reopened)
		j.fail(r, "reduce task")
		return true
	}
	j.Reopened += len(maps)
	for _, m := range maps {
		j.MapCommits[m] = ""
		j.Values.Clear(m)
		j.Done--
	}
	j.Phase, j.Enqueued = PhaseMap, false
	j.step(string(PhaseMap), r.FinishedAt)
	return true
}

// Committed reports whether r's output is the one its job keeps: false for a
// duplicate attempt, whose output may be deleted.
func (j *Job) Committed(r TaskResult) bool {
	switch {
	case r.Phase == PhaseReduce:
		return r.Partition >= 0 && r.Partition < len(j.ReduceCommits) && j.ReduceCommits[r.Partition] == r.Commit
	case j.ReadsData():
		return r.Partition >= 0 && r.Partition < len(j.MapCommits) && j.MapCommits[r.Partition] == r.Commit
	}
	return false
}

// MergePreview keeps the PreviewLines smallest keys of a and b.
func MergePreview(a, b []Preview) []Preview {
	out := make([]Preview, 0, min(len(a)+len(b), PreviewLines))
	for len(out) < PreviewLines && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || len(a) > 0 && string(a[0].Key) <= string(b[0].Key) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// TaskDone reports whether task partition of the given phase has a result.
func (j *Job) TaskDone(phase Phase, partition int) bool {
	switch {
	case phase == PhaseReduce:
		return partition >= 0 && partition < len(j.ReduceCommits) && j.ReduceCommits[partition] != ""
	case j.Phase == PhaseReduce:
		return true // every map is done
	}
	_, done := j.Values.Get(partition)
	return done
}

// MaxLogInRecordPartitions is the most partitions a job that reads no data
// may have to keep its task history in its record (LogInRecord).
const MaxLogInRecordPartitions = 8

// MaxTaskLog bounds the attempts a record's task log keeps: past it, the
// oldest attempts that are not a task's last word make room.
const MaxTaskLog = 64

// Log adds to the job's task log the results it does not hold yet (a
// message applied twice adds nothing); it reports whether any was added.
func (j *Job) Log(results []TaskResult) bool {
	added := false
	for _, r := range results {
		if slices.ContainsFunc(j.TaskLog, r.same) {
			continue
		}
		if len(j.TaskLog) >= MaxTaskLog {
			i := slices.IndexFunc(j.TaskLog, func(o TaskResult) bool { return !o.Final() })
			if i < 0 {
				continue
			}
			j.TaskLog = slices.Delete(j.TaskLog, i, i+1)
		}
		j.TaskLog = append(j.TaskLog, r)
		added = true
	}
	return added
}

// same reports whether r and o report the same attempt.
func (r TaskResult) same(o TaskResult) bool {
	return r.Phase == o.Phase && r.Partition == o.Partition && r.Attempt == o.Attempt && r.Epoch == o.Epoch &&
		r.Outcome == o.Outcome && r.Worker == o.Worker && r.FinishedAt.Equal(o.FinishedAt)
}
