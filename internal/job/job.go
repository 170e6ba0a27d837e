// Package job is the domain core of mrcluster: jobs, tasks, their states,
// the registry of kinds, validation and errors. It imports no transport.
package job

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// State is where a job is in its life.
type State string

const (
	// Scheduled: submitted with a time to run at (run_at, delay); its
	// tasks are queued then.
	Scheduled State = "scheduled"
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Canceled  State = "canceled"
)

// States lists every state, in the order of a job's life.
var States = []State{Scheduled, Queued, Running, Succeeded, Failed, Canceled}

// Terminal reports whether a job in state s will never change again.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Canceled }

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Job is the durable record of a job, stored as JSON in the jobs bucket.
// Every field a reader needs is here; nothing is kept only in memory.
type Job struct {
	// Replayed marks a job returned to a submit whose idempotency key an
	// earlier submit used; it is not stored.
	Replayed   bool            `json:"-"`
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	Partitions int             `json:"partitions"`
	Params     json.RawMessage `json:"params,omitempty"`
	// Module is the content hash of an uploaded kind's WebAssembly module:
	// the version the job was submitted with, which it runs to its end.
	Module string `json:"module,omitempty"`
	// MaxAttempts is how many times a task may run before its failure
	// fails the job.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxLostRuns is how many runs of a task in a row may end with their
	// worker lost before the task is taken for what kills its workers and
	// fails the job (0: no bound; a record from before the bound).
	MaxLostRuns int   `json:"max_lost_runs,omitempty"`
	State       State `json:"state"`
	// Enqueued is set once every task of the job is durably in the queue;
	// a job found without it after a crash has its tasks published again.
	Enqueued bool `json:"enqueued"`
	// Lane names the lane of the queue its tasks were last queued in: its
	// kind's own (a kind with a concurrency limit), or "" for the
	// priority lanes.
	Lane string `json:"lane,omitempty"`
	// Held marks a job of a paused kind: its waiting tasks were taken out
	// of the queue (none is queued while it is set), to be queued again
	// when the kind is resumed.
	Held bool `json:"held,omitempty"`
	// Values holds each partition's map result; nil until that task is done.
	Values Values `json:"values"`
	Done   int    `json:"done"`

	// The fields of a job that reads data: its input, pinned at submit,
	// the phase, and per phase the attempt whose output was committed.
	Input []string    `json:"input,omitempty"`
	Files []InputFile `json:"files,omitempty"`
	// FilesRef names the object that holds the input files, as a JSON
	// array, when there are more than MaxInlineFiles (Files is then empty
	// in the record): the record must fit in one message, which bounded
	// a job to about 6,000 files.
	FilesRef      string   `json:"files_ref,omitempty"`
	Reducers      int      `json:"reducers,omitempty"`
	Phase         Phase    `json:"phase,omitempty"`
	MapCommits    []string `json:"map_commits,omitempty"`
	ReduceCommits []string `json:"reduce_commits,omitempty"`
	ReduceDone    int      `json:"reduce_done,omitempty"`
	// ReduceInputBytes is, for each reducer, the bytes of the committed
	// map outputs it reads (the sum of the map results' PartBytes): how
	// skewed the keys are, and what a reduce task's time is weighed
	// against before it gets a backup copy.
	ReduceInputBytes []int64   `json:"reduce_input_bytes,omitempty"`
	Counters         *Counters `json:"counters,omitempty"`
	Preview          []Preview `json:"preview,omitempty"`
	// Backups lists the tasks ("phase/partition", "map/3") a backup copy
	// was started for.
	Backups []string `json:"backups,omitempty"`
	// Reopened counts the map tasks run again because a reduce could not
	// read their output (at most MaxReopened, or the job's map tasks if
	// more; then the job fails).
	Reopened int `json:"reopened,omitempty"`
	// RerunOf names the finished job this one runs again, when it does.
	RerunOf string `json:"rerun_of,omitempty"`
	// Timeout bounds each attempt of each task (0: the worker's own).
	Timeout time.Duration `json:"timeout,omitempty"`
	// Priority orders its waiting tasks against others' (0: default).
	Priority int `json:"priority,omitempty"`
	// RunAt is when a scheduled job's tasks are queued.
	RunAt *time.Time `json:"run_at,omitempty"`
	// Epoch counts the job's retries (POST /api/v1/jobs/{id}/retry): its
	// tasks and their results carry it, and a result of an earlier epoch
	// (a task still running when the job ended) is not applied.
	Epoch int `json:"epoch,omitempty"`
	// Schedule names the cron schedule that created the job, Tick the
	// time of the tick it was created for.
	Schedule string     `json:"schedule,omitempty"`
	Tick     *time.Time `json:"tick,omitempty"`
	// History lists the job's states, and the start of its reduce phase,
	// with when it entered each.
	History []Step `json:"history,omitempty"`
	// TaskLog is the job's per-task history (every finished attempt),
	// kept in the record for a small job (LogInRecord): its results then
	// share a subject of the results stream with other small jobs', so
	// that a finished small job costs the store one key, not two. A larger
	// job's history is read from its own subject of the results stream.
	LogInRecord bool         `json:"log_in_record,omitempty"`
	TaskLog     []TaskResult `json:"task_log,omitempty"`

	// Members are the jobs of a group, when the record is a group's
	// (group.go): its task n runs member n+1.
	Members []Member `json:"members,omitempty"`
	// Group names the group of a member's record, made from its group's
	// (MemberJob); never stored.
	Group string `json:"-"`

	Failed     int        `json:"failed"`
	Result     *Result    `json:"result,omitempty"`
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Step is one entry of a job's history: a state, or "reduce" for the
// start of the reduce phase.
type Step struct {
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// Result is what a job's reduce produced.
type Result struct {
	Values []int64 `json:"values"`
	Sum    int64   `json:"sum"`
}

// DoneValues returns the results of the tasks done so far, in partition order.
func (j *Job) DoneValues() []int64 {
	return j.Values.Done()
}

// Task is one map partition of a job, as carried on the task queue.
type Task struct {
	// Timeout bounds this attempt (0: the worker's --task-timeout).
	Timeout    time.Duration   `json:"timeout,omitempty"`
	Job        string          `json:"job"`
	Kind       string          `json:"kind"`
	Partition  int             `json:"partition"`
	Partitions int             `json:"partitions"`
	Params     json.RawMessage `json:"params,omitempty"`
	// Module is the content hash of the WebAssembly module of an uploaded
	// kind, pinned by the job at submit.
	Module string `json:"module,omitempty"`
	// Member is the id of the group's member the task runs, for a task of
	// a group (Job is the group's): the kind's code sees that job's id,
	// partition 0 of 1.
	Member string `json:"member,omitempty"`
	// MaxAttempts is how many times the task may run before its failure
	// fails the job.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxLostRuns is the job's: see Job.MaxLostRuns.
	MaxLostRuns int `json:"max_lost_runs,omitempty"`

	// Phase is empty for the map of a job that reads no data.
	Phase    Phase `json:"phase,omitempty"`
	Reducers int   `json:"reducers,omitempty"`
	// Files and Split are a map task's input, or FilesRef names its job's
	// list of files, from which the worker cuts them (Input): a split of
	// more than MaxTaskFiles files.
	Files    []InputFile `json:"files,omitempty"`
	Split    []Piece     `json:"split,omitempty"`
	FilesRef string      `json:"files_ref,omitempty"`
	// Maps are the committed attempts of every map task: a reduce task's input.
	Maps []string `json:"maps,omitempty"`
	// Backup marks a copy of a task still running elsewhere, started for a
	// straggler; the first copy to finish wins.
	Backup bool `json:"backup,omitempty"`
	// Epoch is the job's epoch (its retries) when the task was queued.
	Epoch int `json:"epoch,omitempty"`
	// Priority is the job's: it picks the task's lane of the queue.
	Priority int `json:"priority,omitempty"`
	// Lane is the kind's own lane of the queue, for a kind with limits
	// ("": the priority lanes).
	Lane string `json:"lane,omitempty"`
	// Failures counts the task's own failed attempts so far (an error or
	// a panic of the kind's code): only they count toward MaxAttempts. A
	// run whose worker died or whose store failed does not.
	Failures int `json:"failures,omitempty"`
	// Runs counts the runs of the task before this copy was queued; the
	// queue's delivery count adds the runs of this copy.
	Runs int `json:"runs,omitempty"`
	// Lost counts the runs in a row, before this copy was queued, that
	// ended with their worker lost (it died, was cut off or paused past
	// its lease): a run that ends with a word from its worker (a failure,
	// an interruption) starts the count again. The queue's delivery count
	// adds the lost runs of this copy.
	Lost int `json:"lost,omitempty"`
	// LogInRecord is the job's (Job.LogInRecord): the task's results go
	// to the results stream's shared subject, several jobs' in a message.
	LogInRecord bool `json:"log_in_record,omitempty"`
	// Round is the job's Reopened when the task was queued: a reduce task
	// queued again once a lost map output was made again is a message of
	// its own, not a duplicate the queue drops.
	Round int `json:"round,omitempty"`
	// NoRoomSince is when the store first refused to take the task's
	// output for want of room (Unix milliseconds; 0: it has not): the
	// task waits for room from then on, up to the worker's RoomWait.
	NoRoomSince int64 `json:"no_room_since,omitempty"`
	// NoRoomBytes is the size of the output the store last had no room
	// for, when known: the task is not run again (its code, which may
	// take minutes, would make the same output) until the store has room
	// for as much.
	NoRoomBytes int64 `json:"no_room_bytes,omitempty"`
	// Carried holds the history records of the task's runs before this
	// copy was queued that were not its last word (failed, lost or
	// interrupted), up to MaxCarried: each is stored when it is made, and
	// again with the task's final result, in the same message, so that
	// the reason the task ran again is stored exactly when the run it
	// explains is. Stored on their own, a store that was failing (a
	// partition) often kept them out, and the history then showed two
	// runs of one task and no reason. A record stored twice is shown once
	// (DropRepeated).
	Carried []TaskResult `json:"carried,omitempty"`
	// More makes the message a bundle: the tasks of other jobs of the
	// same group, each this task with its own partition, member and
	// params (Bundle, Task.Bundled).
	More []BundledTask `json:"more,omitempty"`
}

// MaxCarried bounds the history records a task carries (Task.Carried):
// the last ones are kept.
const MaxCarried = 16

// Carry returns records with rs added, the last MaxCarried of them.
func Carry(records []TaskResult, rs ...TaskResult) []TaskResult {
	out := append(slices.Clip(records), rs...)
	return out[max(0, len(out)-MaxCarried):]
}

// Outcomes of task attempts that are not the task's last word: recorded in
// the job's task history, never applied to the job.
const (
	// OutcomeFailed: the kind's code failed; the task runs again.
	OutcomeFailed = "failed"
	// OutcomeLost: the worker died or lost its lease mid-run (a crash, a
	// partition, a paused process); the task runs again, and this does not
	// count as a failed attempt.
	OutcomeLost = "lost"
	// OutcomeInterrupted: the data store failed under the task, or the
	// worker's local disk was full; it runs again, not counted as a failed
	// attempt either.
	OutcomeInterrupted = "interrupted"
	// OutcomeStopped: another copy of the task (a backup, or a delivery
	// again after its worker was paused) finished first and counts; this
	// run was stopped.
	OutcomeStopped = "stopped"
)

// LostOutput is a map task's committed output a reduce could not read:
// Map is 1 + the map task, Commit the output's commit.
type LostOutput struct {
	Map    int    `json:"map"`
	Commit string `json:"commit"`
}

// Lost lists the map outputs r found lost, LostMap's first.
func (r TaskResult) Lost() []LostOutput {
	if r.LostMap <= 0 {
		return nil
	}
	return append([]LostOutput{{Map: r.LostMap, Commit: r.LostCommit}}, r.MoreLost...)
}

// TaskResult is what a worker reports after running a task.
type TaskResult struct {
	Job        string    `json:"job"`
	Partition  int       `json:"partition"`
	Attempt    int       `json:"attempt"`
	Worker     string    `json:"worker"`
	Value      int64     `json:"value"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`

	// Phase, Commit and Counters are set by tasks of jobs that read data:
	// Commit names the attempt's output objects.
	Phase    Phase     `json:"phase,omitempty"`
	Commit   string    `json:"commit,omitempty"`
	Counters *Counters `json:"counters,omitempty"`
	Preview  []Preview `json:"preview,omitempty"`
	// PartBytes, of a map task's result, is the size of the run it wrote
	// for each reducer.
	PartBytes []int64 `json:"part_bytes,omitempty"`
	Backup    bool    `json:"backup,omitempty"`

	// Outcome is empty for a task's final result, which the job applies,
	// and one of the Outcome constants for an attempt that only goes into
	// the history.
	Outcome string `json:"outcome,omitempty"`
	// Failures counts the task's failed attempts, this one included.
	Failures int `json:"failures,omitempty"`
	// Unretried marks a failure that no attempt could mend (an input
	// deleted or damaged in the store): the task ran no more attempts.
	Unretried bool `json:"unretried,omitempty"`
	// LostMap is 1 + the map task whose committed output (LostCommit) a
	// reduce task could not read, deleted or damaged in the store: the
	// job runs that map again (Job.Reopened).
	LostMap    int    `json:"lost_map,omitempty"`
	LostCommit string `json:"lost_commit,omitempty"`
	// MoreLost are the other map outputs the reduce found lost with
	// LostMap's: all of them run again at once.
	MoreLost []LostOutput `json:"more_lost,omitempty"`
	// Epoch is the job's epoch the task was queued in (its retries).
	Epoch int `json:"epoch,omitempty"`
}

// UnderWay reports whether t belongs to a job already under way: a later
// phase, a backup, a task that ran before, or a map queued again for a
// reduce whose input was lost. Such a task goes before its priority's new
// work (the MapReduce paper's and Hadoop's FIFO: the older job's tasks
// first), where a reduce phase used to wait behind every job submitted
// while its maps ran.
func (t Task) UnderWay() bool {
	return t.Phase == PhaseReduce || t.Backup || t.Runs > 0 || t.Failures > 0 || t.Round > 0
}

// ShownPriority is p as the API shows it: DefaultPriority for 0.
func ShownPriority(p int) int {
	if p == 0 {
		return DefaultPriority
	}
	return p
}

// Final reports whether r is a task's last word, to be applied to its job.
func (r TaskResult) Final() bool { return r.Outcome == "" }

// TaskStarted is the notice a worker sends when it starts a task.
type TaskStarted struct {
	Job string `json:"job"`
	// Member is the task's (Task.Member), for a task of a group.
	Member    string    `json:"member,omitempty"`
	Partition int       `json:"partition"`
	Phase     Phase     `json:"phase,omitempty"`
	Attempt   int       `json:"attempt"`
	Worker    string    `json:"worker"`
	StartedAt time.Time `json:"started_at"`
}

// MapFunc runs one partition of a job. It must return promptly once ctx is
// canceled (the job was canceled or the worker is stopping).
type MapFunc func(ctx context.Context, t Task) (int64, error)

// ReduceFunc combines the partition results, in partition order.
type ReduceFunc func(values []int64) Result

// MaxErrorBytes bounds the error text a task result carries: a kind's
// error may be any size, and results travel in messages of bounded size
// (several jobs' together) and are kept in job records.
const MaxErrorBytes = 4096

// ClipError returns msg cut to MaxErrorBytes, saying how much was cut.
func ClipError(msg string) string {
	if len(msg) <= MaxErrorBytes {
		return msg
	}
	cut := prefix(msg, MaxErrorBytes)
	return cut + "… (" + strconv.Itoa(len(msg)-len(cut)) + " more bytes)"
}

// prefix returns the longest start of s of at most n bytes that does not
// end inside a character.
func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// DropRepeated returns rs, a job's task history, without the records
// of a lost run that an earlier record names already: a worker that meets
// a task delivered again records the runs lost before, and when it dies
// under the task in turn (a task that kills its workers) the next one
// records them again; the same record of a failed or an interrupted run
// stored twice (Task.Carried: when it was made, and with the final
// result); and any record stored twice by a worker that sent it again
// when the store did not acknowledge the first (which it may have stored
// all the same: a server paused, a leader changed).
func DropRepeated(rs []TaskResult) []TaskResult {
	type run struct {
		phase              Phase
		partition, attempt int
		epoch              int
		backup             bool
		// worker and finished tell one run from another (empty for a
		// lost one's).
		worker   string
		finished int64
	}
	seen := map[run]bool{}
	out := rs[:0:0]
	for _, r := range rs {
		k := run{r.Phase, r.Partition, r.Attempt, r.Epoch, r.Backup, "", 0}
		if r.Outcome != OutcomeLost {
			if r.Worker == "" || r.FinishedAt.IsZero() {
				out = append(out, r) // nothing tells it from another run
				continue
			}
			k.worker, k.finished = r.Worker, r.FinishedAt.UnixNano()
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, r)
	}
	return out
}

// GoOn sets the attempts of tasks, a job's tasks queued again, to go on
// from its history rs: a task's next run is the attempt after the last one
// its epoch recorded, its failed attempts so far count against its max
// attempts, and its runs lost in a row (those after its last run that
// ended with a word from its worker) against its max lost runs.
func GoOn(tasks []Task, rs []TaskResult) {
	type task struct {
		phase     Phase
		partition int
		epoch     int
	}
	type count struct {
		runs, failures, worded int
		lost                   map[int]bool // attempts lost
	}
	counts := map[task]*count{}
	for _, r := range rs {
		k := task{r.Phase, r.Partition, r.Epoch}
		n := counts[k]
		if n == nil {
			n = &count{}
			counts[k] = n
		}
		n.runs = max(n.runs, r.Attempt)
		switch {
		case r.Outcome == OutcomeLost:
			if n.lost == nil {
				n.lost = map[int]bool{}
			}
			n.lost[r.Attempt] = true
		case r.Worker != "":
			n.worded = max(n.worded, r.Attempt)
		}
		if r.Outcome == OutcomeFailed {
			n.failures = max(n.failures, r.Failures)
		}
	}
	for i, t := range tasks {
		n, ok := counts[task{t.Phase, t.Partition, t.Epoch}]
		if !ok {
			continue
		}
		lost := 0
		for a := range n.lost {
			if a > n.worded {
				lost++
			}
		}
		tasks[i].Runs, tasks[i].Failures, tasks[i].Lost = max(t.Runs, n.runs), max(t.Failures, n.failures), max(t.Lost, lost)
	}
}

// LostButEnded is the history's word for a lost run that ended after all.
const LostButEnded = "the queue heard nothing of this attempt for longer than its ack wait (its worker paused, stalled or cut off) and gave the task to another worker; the attempt went on and ended after all: see its own record"

// ExplainLost rewrites, in rs, a job's task history, the reason of every
// lost run whose own end is in the history too: a worker paused or cut
// off past its lease has its task run again elsewhere, the run after it
// records the first as lost, and the first then ends once its worker
// resumes. Both records stay (the second run's existence needs the
// first's); the lost one says what happened. A run ended is one of the
// same task, epoch, attempt and copy, from a worker, that started before
// the lost record was made (a later copy of the task may repeat an
// attempt number).
func ExplainLost(rs []TaskResult) {
	type run struct {
		phase              Phase
		partition, attempt int
		epoch              int
		backup             bool
	}
	started := map[run]time.Time{} // the earliest start of a run heard of
	for _, r := range rs {
		if r.Outcome == OutcomeLost || r.Worker == "" {
			continue
		}
		k := run{r.Phase, r.Partition, r.Attempt, r.Epoch, r.Backup}
		if at, ok := started[k]; !ok || r.StartedAt.Before(at) {
			started[k] = r.StartedAt
		}
	}
	for i, r := range rs {
		if r.Outcome != OutcomeLost {
			continue
		}
		if at, ok := started[run{r.Phase, r.Partition, r.Attempt, r.Epoch, r.Backup}]; ok && !at.After(r.FinishedAt) {
			rs[i].Error = LostButEnded
		}
	}
}

// Superseded reports, for each of a job's task results rs, in the order
// they were applied, whether it is a final result that did not count: a
// later copy of a task that had its final result already in the same
// epoch (a backup copy that lost its race, a delivery the queue repeated
// after a crash or a lost acknowledgement), or, for a task of a job that
// reads data, a successful run whose output is not the one the record
// commits (a copy that lost, a map output lost and made again, a run of
// an epoch before a retry).
func Superseded(j *Job, rs []TaskResult) []bool {
	type task struct {
		phase     Phase
		partition int
		epoch     int
	}
	out := make([]bool, len(rs))
	seen := map[task]bool{}
	for i, r := range rs {
		if !r.Final() {
			continue
		}
		if c := j.committed(r.Phase, r.Partition); c != "" && r.Error == "" {
			out[i] = r.Commit != c
			continue
		}
		k := task{r.Phase, r.Partition, r.Epoch}
		out[i] = seen[k]
		seen[k] = true
	}
	return out
}

// committed returns the output the record commits for a task ("" for
// none, or for a kind that reads no data).
func (j *Job) committed(phase Phase, partition int) string {
	commits := j.MapCommits
	if phase == PhaseReduce {
		commits = j.ReduceCommits
	}
	if partition < 0 || partition >= len(commits) {
		return ""
	}
	return commits[partition]
}
