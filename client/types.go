package client

import (
	"encoding/json"
	"time"
)

// State is where a job is in its life.
type State string

// The states of a job, in the order of its life.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Canceled  State = "canceled"
)

// Terminal reports whether a job in state s will never change again.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Canceled }

// Spec is what a submit asks for: POST /api/v1/jobs.
type Spec struct {
	Kind string `json:"kind"`
	// Partitions is the number of map tasks, 1 to the server's
	// --max-partitions.
	Partitions int `json:"partitions"`
	// Params is the kind's parameters, a JSON object (nil for none).
	Params map[string]any `json:"params,omitempty"`
	// Input names the datasets a kind that reads data reads.
	Input []string `json:"input,omitempty"`
	// Reducers is the number of reduce tasks of a kind that reads data
	// (0 means 1).
	Reducers int `json:"reducers,omitempty"`
	// Timeout bounds each attempt of each task, a Go duration ("90s");
	// an attempt past it fails, "timed out after …" (empty: the
	// workers' --task-timeout).
	Timeout string `json:"timeout,omitempty"`
	// Priority orders the job's waiting tasks against others': 1 (low)
	// to 4 (high), 2 when zero. A higher one starts first; a lower one
	// waits at most the workers' --priority-aging while higher ones keep
	// coming.
	Priority int `json:"priority,omitempty"`
	// RunAt or Delay ("90s") makes the job scheduled until then; its
	// tasks are queued at that time. At most one of the two.
	RunAt *time.Time `json:"run_at,omitempty"`
	Delay string     `json:"delay,omitempty"`
	// MaxAttempts is how many times each task may run before its failure
	// (an error or a panic of the kind's code) fails the job, 1 to 100
	// (0: the server's --max-attempts, 3 by default). Runs lost with their
	// worker do not count.
	MaxAttempts int `json:"max_attempts,omitempty"`
}

// Job is a job as the API shows it.
type Job struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	State      State           `json:"state"`
	Partitions int             `json:"partitions"`
	Params     json.RawMessage `json:"params,omitempty"`
	// The fields of a job that reads data: its input, reduce tasks, the
	// phase it is in ("map" or "reduce"), counters and the first lines
	// of its output.
	Input    []string  `json:"input,omitempty"`
	Reducers int       `json:"reducers,omitempty"`
	Phase    string    `json:"phase,omitempty"`
	Counters *Counters `json:"counters,omitempty"`
	Preview  []string  `json:"preview,omitempty"`
	// ReduceInputBytes is, for each reducer of a job that reads data, the
	// bytes of map output it reads, summed as map tasks finish (whole once
	// the map phase is done): one far above the others holds a hot key.
	ReduceInputBytes []int64 `json:"reduce_input_bytes,omitempty"`
	// Backups lists the tasks a backup copy was started for ("map/3").
	Backups []string `json:"backups,omitempty"`
	// RerunOf names the finished job this one runs again (Rerun).
	RerunOf string `json:"rerun_of,omitempty"`
	// Retries counts the times the job was retried (Retry).
	Retries int `json:"retries,omitempty"`
	// Priority is the job's priority, 1 (low) to 4 (high).
	Priority int `json:"priority"`
	// Paused is true while the job's kind is paused: its waiting tasks
	// are out of the queue until the kind resumes.
	Paused bool `json:"paused,omitempty"`
	// Timeout bounds each attempt of each task, as given in the spec.
	Timeout string `json:"timeout,omitempty"`
	// MaxAttempts is how many times each task may run before its failure
	// fails the job: the spec's, or the server's --max-attempts.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// RunAt is when a job submitted with run_at or delay runs: it is
	// scheduled until then.
	RunAt *time.Time `json:"run_at,omitempty"`
	// Schedule names the cron schedule that created the job, Tick the
	// time of the tick it was created for.
	Schedule string     `json:"schedule,omitempty"`
	Tick     *time.Time `json:"tick,omitempty"`
	// History lists the states the job went through, and when.
	History []Step     `json:"history"`
	Tasks   TaskCounts `json:"tasks"`
	// Result is the reduce of a job of a kind that reads no data: the
	// partitions' values and their sum.
	Result     *Result    `json:"result"`
	Error      string     `json:"error"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	// ExpiresAt is when a finished job, its history and its output are
	// deleted (the server's --retention after it finished); none when
	// the server keeps jobs for ever.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// TaskCounts counts a job's tasks by state.
type TaskCounts struct {
	Total   int `json:"total"`
	Queued  int `json:"queued"`
	Running int `json:"running"`
	Done    int `json:"done"`
	Failed  int `json:"failed"`
}

// Counters are the record counts of a job that reads data.
type Counters struct {
	InputBytes          int64 `json:"input_bytes"`
	InputRecords        int64 `json:"input_records"`
	MapOutputRecords    int64 `json:"map_output_records"`
	ReduceOutputRecords int64 `json:"reduce_output_records"`
}

// Result is what the reduce of a job of a kind that reads no data made.
type Result struct {
	Values []int64 `json:"values"`
	Sum    int64   `json:"sum"`
}

// Step is one entry of a job's history: a state, or "reduce" for the start
// of its reduce phase.
type Step struct {
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// JobList is a page of jobs, newest first.
type JobList struct {
	Jobs []Job `json:"jobs"`
	// NextCursor, when set, asks for the next page.
	NextCursor string `json:"next_cursor,omitempty"`
	// NotFound, in an answer of jobs asked for by id (Client.JobsByID),
	// are the ids of jobs the server does not have: never submitted, or
	// deleted.
	NotFound []string `json:"not_found,omitempty"`
}

// CanceledJobs answers a cancel of many jobs (POST /api/v1/jobs/cancel).
type CanceledJobs struct {
	// Canceled are the jobs canceled, oldest first.
	Canceled []string `json:"canceled"`
	// Failed are the jobs that matched and could not be canceled, and
	// why (one that finished meanwhile is in neither list).
	Failed []JobError `json:"failed,omitempty"`
	// More says that more jobs matched than one request cancels (1,000):
	// send it again.
	More bool `json:"more"`
}

// JobError is what went wrong with one job of many.
type JobError struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// TaskAttempt is one finished run of a task: GET /api/v1/jobs/{id}/tasks.
type TaskAttempt struct {
	Job       string `json:"job"`
	Partition int    `json:"partition"`
	Attempt   int    `json:"attempt"`
	Worker    string `json:"worker"`
	// Value is a map task's result, for a kind that reads no data.
	Value      int64     `json:"value"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Phase is "map" or "reduce" for a job that reads data; Commit names
	// the attempt's output.
	Phase    string    `json:"phase,omitempty"`
	Commit   string    `json:"commit,omitempty"`
	Counters *Counters `json:"counters,omitempty"`
	Preview  []Preview `json:"preview,omitempty"`
	// Backup marks a copy started for a straggler.
	Backup bool `json:"backup,omitempty"`
	// Superseded marks a finished run that did not count: another run of
	// the same task had its result applied first (a backup copy that lost
	// its race, a run the queue delivered again after a crash or a lost
	// acknowledgement), or, for a job that reads data, its output is not
	// the one the job kept (made again after it was lost, or before a
	// retry). Its output, if it had one, was deleted.
	Superseded bool `json:"superseded,omitempty"`
	// Outcome is "failed", "lost", "interrupted" or "stopped" (another
	// copy of the task finished first and counts) for an attempt that was
	// not the task's last word.
	Outcome  string `json:"outcome,omitempty"`
	Failures int    `json:"failures,omitempty"`
	// Unretried marks a failure no attempt could mend (an input deleted
	// or damaged in the store): the task was not run again.
	Unretried bool `json:"unretried,omitempty"`
	// LostMap, on a reduce's attempt, is 1 + the map task whose output it
	// could not read (deleted or damaged in the store): that map ran again.
	LostMap int `json:"lost_map,omitempty"`
	// LostMaps lists every map task (from 0) whose output the reduce found
	// lost, LostMap's among them, when it found more than one.
	LostMaps []int `json:"lost_maps,omitempty"`

	DurationMS float64 `json:"duration_ms"`
	// State is "done", "failed", "lost" or "interrupted".
	State string `json:"state"`
}

// Preview is one output line of a reduce attempt, with its key.
type Preview struct {
	Key  []byte `json:"key"`
	Line string `json:"line"`
}

// Worker is the status of one worker of the cluster.
type Worker struct {
	Key   string `json:"key"`
	Pool  string `json:"pool"`
	Index int    `json:"index"`
	Host  string `json:"host"`
	// PID is the process id of the worker's pool on Host.
	PID  int  `json:"pid,omitempty"`
	Busy bool `json:"busy"`
	// Stopping is set once the worker's process is shutting down.
	Stopping  bool   `json:"stopping"`
	JobID     string `json:"job_id"`
	Partition int    `json:"partition"`
	Phase     string `json:"phase,omitempty"`
	Attempt   int    `json:"attempt"`
	// Epoch is the run of the job the task is of (0, then 1 after a
	// retry, ...); Backup says the task is a backup copy of a straggler.
	Epoch         int        `json:"epoch,omitempty"`
	Backup        bool       `json:"backup,omitempty"`
	TaskStartedAt *time.Time `json:"task_started_at,omitempty"`
	// Progress is how far the running task has come, 0 to 1, for a task
	// that reads data (a map by its split's bytes, a reduce half by its
	// downloads, half by its merge) or a simulated one (short, long: its
	// sleep), as of its last report (every few seconds at most); nil
	// otherwise.
	Progress *float64 `json:"progress,omitempty"`
	// WaitsAlone is the job whose task the worker holds while its pool's
	// other tasks end, to run it alone: the task's last runs were lost
	// with their worker ("" otherwise).
	WaitsAlone  string    `json:"waits_alone,omitempty"`
	TasksDone   int64     `json:"tasks_done"`
	TasksFailed int64     `json:"tasks_failed"`
	StartedAt   time.Time `json:"started_at"`
	LastSeen    time.Time `json:"last_seen"`
}

// History is what the cluster did per minute over the last hour, oldest
// minute first, as the answering server saw it since it started.
type History struct {
	Minutes []Minute `json:"minutes"`
}

// Minute is one minute of History.
type Minute struct {
	At            time.Time      `json:"at"` // the minute's start
	TasksDone     int            `json:"tasks_done"`
	JobsSucceeded int            `json:"jobs_succeeded"`
	JobsFailed    int            `json:"jobs_failed"`
	JobsCanceled  int            `json:"jobs_canceled"`
	QueueDepth    int            `json:"queue_depth"` // the most tasks waiting at once
	TasksByKind   map[string]int `json:"tasks_by_kind,omitempty"`
}

// Queue is the tasks waiting for a worker.
type Queue struct {
	Depth int `json:"depth"`
	// Counts counts the cluster's jobs by state.
	Counts JobCounts `json:"counts"`
	// Jobs are the oldest jobs with waiting tasks, oldest first: up to the
	// limit asked for (1,000 by default); More is set when there are more.
	Jobs []QueuedJob `json:"jobs"`
	More bool        `json:"more,omitempty"`
	// StoreRoom is the bytes the cluster's store can still take (absent
	// when the server cannot tell): a task whose output is larger waits
	// for room, an upload larger is refused.
	StoreRoom *int64 `json:"store_room_bytes,omitempty"`
}

// JobCounts counts a cluster's jobs (those its store holds) by state.
type JobCounts struct {
	Total     int `json:"total"`
	Scheduled int `json:"scheduled"`
	Queued    int `json:"queued"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Canceled  int `json:"canceled"`
}

// QueuedJob is one job's share of the queue.
type QueuedJob struct {
	Job     string `json:"job"`
	Kind    string `json:"kind"`
	Waiting int    `json:"waiting"`
}

// Kind is a kind of job the cluster runs.
type Kind struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Params      []Param `json:"params,omitempty"`
	// ReadsData is true for a kind whose jobs read datasets.
	ReadsData bool `json:"reads_data"`
	// Uploaded is true for a kind uploaded as a WebAssembly module; its
	// version (from 1), the module's content hash (SHA-256) and size, and
	// when it was uploaded.
	Uploaded   bool       `json:"uploaded,omitempty"`
	Version    int        `json:"version,omitempty"`
	Hash       string     `json:"hash,omitempty"`
	Size       int64      `json:"size,omitempty"`
	UploadedAt *time.Time `json:"uploaded_at,omitempty"`
	// Paused is true while the kind is paused (PauseKind): its jobs'
	// waiting tasks stay out of the queue, none starts; since when.
	Paused      bool       `json:"paused"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	// Concurrency bounds the kind's tasks running at once in the whole
	// cluster (SetKindLimits); 0: no bound. Rate bounds those started per
	// second or minute ("100/s", "10/m"); empty: no bound.
	Concurrency int    `json:"concurrency"`
	Rate        string `json:"rate,omitempty"`
}

// KindLimits is what PUT /api/v1/kinds/{name}/limits asks for.
type KindLimits struct {
	// Concurrency bounds the kind's tasks running at once in the whole
	// cluster; 0 removes the bound.
	Concurrency int `json:"concurrency"`
	// Rate bounds the kind's tasks started per second or per minute in
	// the whole cluster: "100/s", "10/m"; empty removes the bound.
	Rate string `json:"rate,omitempty"`
}

// Param describes one parameter of a kind.
type Param struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Required    bool   `json:"required"`
}

// Dataset is a named set of files that jobs read.
type Dataset struct {
	Name      string        `json:"name"`
	Files     []DatasetFile `json:"files"`
	Size      int64         `json:"size"`
	CreatedAt time.Time     `json:"created_at"`
	UpdatedAt time.Time     `json:"updated_at"`
	// FileCount counts the dataset's files (0 in the answer to an upload
	// into a dataset of more than 100 files).
	FileCount int `json:"file_count,omitempty"`
	// Partial marks a manifest that lists part of the files of a dataset
	// of more than 100: the answer to an upload lists the stored file
	// alone (Size is its size), a list of datasets none (Size and
	// FileCount are the dataset's). A GET of the dataset lists every file.
	Partial bool `json:"partial,omitempty"`
}

// DatasetFile is one file of a dataset.
type DatasetFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Upload identifies this version of the file.
	Upload    string  `json:"upload"`
	BlockSize int64   `json:"block_size"`
	Lines     []int64 `json:"lines"`
	// EndsLine has a '1' for each block whose last byte is a newline.
	EndsLine   string    `json:"ends_line"`
	UploadedAt time.Time `json:"uploaded_at"`
}

// Event is one change the server reports on GET /api/v1/events: its type
// ("job.submitted", "job.succeeded", "task.done", "worker.status", …) and
// its data, to decode by type.
type Event struct {
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data,omitempty"`
}

// NewSchedule is what POST /api/v1/schedules asks for: a job of Job at
// every tick of Cron.
type NewSchedule struct {
	Name string `json:"name"`
	// Cron is five fields (minute hour day-of-month month day-of-week),
	// six with seconds first, or a descriptor such as "@hourly" or
	// "@every 10m".
	Cron string `json:"cron"`
	// Timezone is an IANA time zone ("Europe/Paris"); UTC when empty.
	Timezone string `json:"timezone,omitempty"`
	// Missed says what happens to ticks missed while no server ran:
	// "skip" (the default) or "run_once" (one job for the newest).
	Missed string `json:"missed,omitempty"`
	// Overlap says what a tick does while the job of the last tick fired
	// has not finished: "allow" (the default) fires it all the same,
	// "skip" makes no job for it (counted in Skipped, said in LastError).
	Overlap string `json:"overlap,omitempty"`
	// Job is the job each tick submits (without run_at or delay).
	Job Spec `json:"job"`
}

// Schedule is a cron schedule as the API shows it.
type Schedule struct {
	Name      string    `json:"name"`
	Cron      string    `json:"cron"`
	Timezone  string    `json:"timezone"`
	Missed    string    `json:"missed"`
	Overlap   string    `json:"overlap"`
	Job       Spec      `json:"job"`
	Paused    bool      `json:"paused"`
	CreatedAt time.Time `json:"created_at"`
	// Next is when it fires next; absent while paused.
	Next *time.Time `json:"next,omitempty"`
	// LastTick is the last tick handled: fired, skipped or refused.
	LastTick *time.Time `json:"last_tick,omitempty"`
	// Fired counts the jobs it created; Skipped the ticks missed and
	// skipped (missed policy skip) and those skipped while the last job
	// ran (overlap policy skip).
	Fired   int `json:"fired"`
	Skipped int `json:"skipped"`
	// Jobs lists the newest ticks fired and their jobs, newest first.
	Jobs []ScheduledJob `json:"jobs"`
	// LastError says why the last tick made no job, if it did not.
	LastError string `json:"last_error,omitempty"`
}

// ScheduledJob is one tick of a schedule and the job it created.
type ScheduledJob struct {
	Tick time.Time `json:"tick"`
	Job  string    `json:"job"`
	// Missed counts the ticks missed while no server ran that this job
	// stands for (policy run_once); 0 for a tick fired on time.
	Missed int `json:"missed,omitempty"`
}
