export type JobState = 'scheduled' | 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled'

// The cluster's jobs by state (the stats of the hello and cluster.stats events).
export type JobCounts = Record<JobState, number> & { total: number }

export interface TaskCounts { total: number; queued: number; running: number; done: number; failed: number }

export interface Job {
  id: string
  rerun_of?: string
  // how many times the job was retried
  retries?: number
  // 1 (low) to 4 (high)
  priority?: number
  // its kind is paused: its waiting tasks are out of the queue
  paused?: boolean
  timeout?: string
  // how many times each task may run before its failure fails the job
  max_attempts?: number
  run_at?: string
  // the cron schedule that created the job, and the tick it was for
  schedule?: string
  tick?: string
  kind: string
  state: JobState
  partitions: number
  params?: Record<string, unknown>
  input?: string[]
  reducers?: number
  phase?: 'map' | 'reduce'
  counters?: Counters
  // the bytes of map output each reducer reads (skewed keys: one far above the rest)
  reduce_input_bytes?: number[]
  preview?: string[]
  backups?: string[]
  history?: { state: string; at: string }[]
  tasks: TaskCounts
  result: { values: number[]; sum: number } | null
  error: string
  created_at: string
  started_at: string | null
  finished_at: string | null
  // when a finished job and its output are deleted (the server's --retention)
  expires_at?: string
}

export interface Worker {
  key: string
  pool: string
  index: number
  host: string
  busy: boolean
  stopping: boolean
  job_id: string
  partition: number
  phase?: 'map' | 'reduce'
  attempt: number
  // epoch: the job's run (after retries); backup: a straggler's backup copy
  epoch?: number
  backup?: boolean
  task_started_at?: string
  // the job whose task the worker holds, waiting for its pool's other tasks to end to run it
  // alone (the task's last runs were lost with their worker)
  waits_alone?: string
  // how far a data task has come, 0 to 1, as of its last report (a few seconds at most)
  progress?: number
  tasks_done: number
  tasks_failed: number
  last_seen: string
}

export interface Counters {
  input_bytes: number
  input_records: number
  map_output_records: number
  reduce_output_records: number
}

// CanceledJobs answers POST /api/v1/jobs/cancel.
export interface CanceledJobs { canceled: string[]; failed?: { id: string; error: string }[]; more: boolean }

export interface KindParam { name: string; description: string; required: boolean }

export interface Kind {
  name: string
  description: string
  reads_data?: boolean
  paused?: boolean
  paused_since?: string
  // the most tasks running at once, and started per second or minute
  concurrency?: number
  rate?: string
  params?: KindParam[]
  // Kinds uploaded as WebAssembly modules.
  uploaded?: boolean
  version?: number
  hash?: string
  size?: number
  uploaded_at?: string
}

export interface DatasetFile { name: string; size: number; uploaded_at: string }

// A list of datasets leaves out the files of those of more than 100
// (partial), and counts them in file_count.
export interface Dataset { name: string; files: DatasetFile[]; file_count?: number; partial?: boolean; size: number; updated_at: string }

export interface QueuedJob { job: string; kind: string; waiting: number }

export interface ApiError { code: string; message: string }

export interface ClusterEvent { type: string; time: string; data: any }

export interface TaskAttempt {
  phase?: 'map' | 'reduce'
  partition: number
  attempt: number
  worker: string
  value: number
  error?: string
  started_at: string
  finished_at: string
  duration_ms: number
  state: 'done' | 'failed' | 'lost' | 'interrupted' | 'stopped'
  // a copy started for a straggler
  backup?: boolean
  // a run that did not count: another run of the task was applied first,
  // or its output is not the one the job kept
  superseded?: boolean
}

export interface Minute {
  at: string
  tasks_done: number
  jobs_succeeded: number
  jobs_failed: number
  jobs_canceled: number
  queue_depth: number
  tasks_by_kind?: Record<string, number>
}

export interface JobSpec {
  kind: string
  partitions: number
  params?: Record<string, unknown>
  input?: string[]
  reducers?: number
  timeout?: string
  priority?: number
  max_attempts?: number
}

export interface Schedule {
  name: string
  cron: string
  timezone: string
  missed: 'skip' | 'run_once'
  overlap: 'allow' | 'skip'
  job: JobSpec
  paused: boolean
  created_at: string
  next?: string
  last_tick?: string
  fired: number
  skipped: number
  jobs: { tick: string; job: string; missed?: number }[]
  last_error?: string
}
