import { reactive } from 'vue'
import { api, eventsURL } from './api'
import type { ClusterEvent, Job, Kind, QueuedJob, Worker } from './types'

// The dashboard's state: loaded once from the REST resources, then kept
// current by applying /api/v1/events as deltas.
export interface State {
  connection: 'connecting' | 'live' | 'reconnecting'
  jobs: Map<string, Job>
  order: string[] // job ids, newest first
  workers: Map<string, Worker>
  queue: QueuedJob[]
  queueDepth: number
  kinds: Kind[]
  // tasks done per second, one sample a second, the last minute
  rate: number[]
  depthHistory: number[]
  doneThisSecond: number
}

export function newState(): State {
  return reactive({
    connection: 'connecting', jobs: new Map(), order: [], workers: new Map(), queue: [], queueDepth: 0,
    kinds: [], rate: [], depthHistory: [], doneThisSecond: 0,
  }) as State
}

// upsertJob records a job resource, keeping order newest first.
export function upsertJob(s: State, j: Job) {
  if (!s.jobs.has(j.id)) {
    const newer = (id: string) => {
      const o = s.jobs.get(id)!
      return o.created_at > j.created_at || (o.created_at === j.created_at && o.id > j.id)
    }
    let i = 0
    while (i < s.order.length && newer(s.order[i])) i++
    s.order.splice(i, 0, j.id)
  }
  s.jobs.set(j.id, j)
}

// recomputeQueue derives the waiting tasks from the unfinished jobs.
export function recomputeQueue(s: State) {
  const q: QueuedJob[] = []
  let depth = 0
  for (const id of [...s.order].reverse()) {
    const j = s.jobs.get(id)!
    if (j.state === 'queued' || j.state === 'running') {
      if (j.tasks.queued > 0) q.push({ job: j.id, kind: j.kind, waiting: j.tasks.queued })
      depth += j.tasks.queued
    }
  }
  s.queue = q
  s.queueDepth = depth
}

// apply applies one event; it returns true when the client must reload.
export function apply(s: State, ev: ClusterEvent): boolean {
  switch (ev.type) {
    case 'resync':
      return true
    case 'task.done':
      s.doneThisSecond += (ev.data.partitions ?? []).length
      return false
    case 'worker.status':
      s.workers.set(ev.data.key, ev.data)
      return false
    case 'worker.left':
      s.workers.delete(ev.data.key)
      return false
  }
  if (ev.type.startsWith('job.')) {
    upsertJob(s, ev.data as Job)
    recomputeQueue(s)
  }
  return false
}

export async function load(s: State) {
  const [jobs, workers, kinds] = await Promise.all([api.jobs('', 200), api.workers(), api.kinds()])
  s.jobs = new Map()
  s.order = []
  for (const j of jobs.jobs) upsertJob(s, j)
  s.workers = new Map(workers.workers.map((w) => [w.key, w]))
  s.kinds = kinds.kinds
  recomputeQueue(s)
}

// connect follows the events websocket, reloading on connect and on
// resync, and reconnecting with backoff when the server goes away.
export function connect(s: State): () => void {
  let ws: WebSocket | null = null
  let stopped = false
  let backoff = 500
  const tick = setInterval(() => {
    s.rate = [...s.rate.slice(-59), s.doneThisSecond]
    s.depthHistory = [...s.depthHistory.slice(-59), s.queueDepth]
    s.doneThisSecond = 0
  }, 1000)
  const open = () => {
    ws = new WebSocket(eventsURL())
    ws.onopen = async () => {
      backoff = 500
      try {
        await load(s)
        s.connection = 'live'
      } catch {
        ws?.close()
      }
    }
    ws.onmessage = (m) => {
      if (apply(s, JSON.parse(m.data))) load(s).catch(() => ws?.close())
    }
    ws.onclose = () => {
      if (stopped) return
      s.connection = 'reconnecting'
      setTimeout(open, backoff)
      backoff = Math.min(backoff * 2, 10000)
    }
  }
  open()
  return () => {
    stopped = true
    clearInterval(tick)
    ws?.close()
  }
}
