package job

import "time"

// WorkerStatus is what a worker publishes about itself in the workers bucket.
// An entry that is not refreshed within the bucket's TTL means a dead worker.
type WorkerStatus struct {
	Key   string `json:"key"`
	Pool  string `json:"pool"`
	Index int    `json:"index"`
	Host  string `json:"host"`
	// PID is the process id of the worker's pool on Host, in the process
	// id namespace PIDNS (Linux's /proc/self/ns/pid; "" elsewhere): two
	// containers of one host name do not see each other's processes.
	PID   int    `json:"pid,omitempty"`
	PIDNS string `json:"pid_ns,omitempty"`
	Busy  bool   `json:"busy"`
	// Stopping is set once the worker's process is shutting down: it
	// finishes its task and takes no other.
	Stopping  bool   `json:"stopping"`
	JobID     string `json:"job_id"`
	Partition int    `json:"partition"`
	// Member is the task's (Task.Member), for a task of a group: the job
	// the API shows the worker running (JobID and Partition are the
	// group's task, which the queue and the coordinator know).
	Member  string `json:"member,omitempty"`
	Phase   Phase  `json:"phase,omitempty"`
	Attempt int    `json:"attempt"`
	// Epoch and Backup tell the run apart from other copies of the task
	// (a retry of the job, a backup copy), which may repeat its attempt.
	Epoch  int  `json:"epoch,omitempty"`
	Backup bool `json:"backup,omitempty"`
	// Lease names the queue's delivery of the running task (its
	// store.Delivery's Lease): a pool started under this one's name
	// after its process died gives the task back at once with it, rather
	// than after the queue's ack wait. Not shown by the API.
	Lease         string     `json:"lease,omitempty"`
	TaskStartedAt *time.Time `json:"task_started_at,omitempty"`
	// Progress is how far the running task has come, 0 to 1 (a data
	// task's, or a simulated one's; nil for a task that sets none, see
	// Progress), as of the last write of the status: it is written at
	// most every few seconds.
	Progress *float64 `json:"progress,omitempty"`
	// WaitsAlone is the job (the member, for a group's) whose task the
	// worker holds while its pool's other tasks end, to run it alone: the
	// task's last runs were lost with their worker (worker/alone.go).
	WaitsAlone  string    `json:"waits_alone,omitempty"`
	TasksDone   int64     `json:"tasks_done"`
	TasksFailed int64     `json:"tasks_failed"`
	StartedAt   time.Time `json:"started_at"`
	LastSeen    time.Time `json:"last_seen"`
}
