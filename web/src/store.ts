import { reactive } from 'vue'
import { api, eventsURL } from './api'
import type { ClusterEvent, Job, JobCounts, JobState, Kind, QueuedJob, Worker } from './types'

// The dashboard's state: loaded once from the REST resources, then kept
// current by applying /api/v1/events as deltas.
export interface State {
  connection: 'connecting' | 'live' | 'reconnecting'
  jobs: Map<string, Job>
  // job ids, oldest first: new jobs are appended, which a reactive array
  // does in O(1) (inserting at its front costs a reactive write per element)
  order: string[]
  workers: Map<string, Worker>
  queue: QueuedJob[] // the jobs with waiting tasks, oldest first (up to queueShown)
  queueDepth: number
  // waiting tasks by job: kept per event in O(1), so that a page watching
  // thousands of jobs keeps up; queue is rebuilt from it at most 4 times a second
  waiting: Map<string, { kind: string; n: number }>
  // false when the server listed only the oldest of the jobs with waiting
  // tasks: the depth is then taken from its cluster.stats (once a second when it changed), since
  // an event of a job not listed cannot say what that job added before
  queueComplete: boolean
  kinds: Kind[]
  // the cursor of the server's next page of older jobs ('' when none)
  older: string
  // the cluster's jobs by state, from the server's stats (at connect, then
  // once a second when they change): the page holds only the newest jobs,
  // and those of the state looked at; null before the first stats
  counts: JobCounts | null
  // the state whose jobs the list shows ('' for all): its newest jobs are
  // loaded from the server, with the cursor of its next page
  view: JobState | ''
  viewOlder: string
  // tasks done per second, one sample a second, the last minute
  rate: number[]
  depthHistory: number[]
  doneThisSecond: number
  // tasks done since the page loaded (what the last hour's chart reloads on)
  tasksDone: number
  // the bytes the store can still take (null: the server does not say)
  storeRoom: number | null
}

export function newState(): State {
  return reactive({
    connection: 'connecting', jobs: new Map(), order: [], workers: new Map(), queue: [], queueDepth: 0, waiting: new Map(), queueComplete: true,
    kinds: [], older: '', counts: null, view: '', viewOlder: '', rate: [], depthHistory: [], doneThisSecond: 0, tasksDone: 0, storeRoom: null,
  }) as State
}

// upsertJob records a job resource, keeping order oldest first.
export function upsertJob(s: State, j: Job) {
  if (!s.jobs.has(j.id)) {
    const newer = (id: string) => {
      const o = s.jobs.get(id)!
      return o.created_at > j.created_at || (o.created_at === j.created_at && o.id > j.id)
    }
    let i = s.order.length
    while (i > 0 && newer(s.order[i - 1])) i--
    if (i === s.order.length) s.order.push(j.id)
    else s.order.splice(i, 0, j.id)
  }
  s.jobs.set(j.id, j)
}

// newest returns the further along of two states of one job: the one with
// more steps in its history (every change of state adds one), or, with as
// many, more tasks ended; a when they are level. An action's answer can
// come after the events of what followed it: a retried job that ran and
// succeeded meanwhile stayed "queued" on the page, its answer applied last.
export function newest(a: Job, b: Job | undefined): Job {
  if (!b) return a
  const ha = a.history?.length ?? 0
  const hb = b.history?.length ?? 0
  if (ha !== hb) return ha > hb ? a : b
  return a.tasks.done + a.tasks.failed >= b.tasks.done + b.tasks.failed ? a : b
}

// answered records the job an action (cancel, retry) answered, unless the
// events brought a newer state of it meanwhile.
export function answered(s: State, j: Job) {
  const cur = s.jobs.get(j.id)
  if (newest(j, cur) === cur) return
  upsertJob(s, j)
  noteWaiting(s, j)
}

// removeJob forgets a deleted job.
export function removeJob(s: State, id: string) {
  if (!s.jobs.has(id)) return
  s.jobs.delete(id)
  s.order = s.order.filter((o) => o !== id)
  s.queueDepth -= s.waiting.get(id)?.n ?? 0
  s.waiting.delete(id)
}

// merge records a job resource a page of the server listed, unless the
// events brought a newer state of it meanwhile.
function merge(s: State, j: Job) {
  const cur = s.jobs.get(j.id)
  if (newest(j, cur) === j) upsertJob(s, j)
}

// count is the cluster's count of jobs in state ('' for all), or, before
// the server's first stats, that of the jobs the page holds.
export function count(s: State, state: JobState | ''): number {
  if (s.counts) return state ? s.counts[state] ?? 0 : s.counts.total
  if (!state) return s.jobs.size
  let n = 0
  for (const j of s.jobs.values()) if (j.state === state) n++
  return n
}

// newestFirst lists the job ids newest first.
export function newestFirst(s: State): string[] {
  return [...s.order].reverse()
}

// noteWaiting updates the waiting tasks of one job and the depth.
export function noteWaiting(s: State, j: Job) {
  const n = j.state === 'queued' || j.state === 'running' ? j.tasks.queued : 0
  const old = s.waiting.get(j.id)?.n ?? 0
  if (n > 0) s.waiting.set(j.id, { kind: j.kind, n })
  else s.waiting.delete(j.id)
  s.queueDepth += n - old
}

const queueShown = 12

// rebuildQueue lists the first jobs with waiting tasks, oldest first (ids
// sort by age).
export function rebuildQueue(s: State) {
  const ids = [...s.waiting.keys()].sort((a, b) => (a.slice(a.indexOf('_')) < b.slice(b.indexOf('_')) ? -1 : 1))
  s.queue = ids.slice(0, queueShown).map((id) => ({ job: id, kind: s.waiting.get(id)!.kind, waiting: s.waiting.get(id)!.n }))
}

// apply applies one event; it returns true when the client must reload.
export function apply(s: State, ev: ClusterEvent): boolean {
  switch (ev.type) {
    case 'resync':
      return true
    case 'task.done': {
      const n = (ev.data.partitions ?? []).length
      s.doneThisSecond += n
      s.tasksDone += n
      return false
    }
    case 'worker.status':
      s.workers.set(ev.data.key, ev.data)
      return false
    case 'hello':
    case 'cluster.stats':
      if (!s.queueComplete && typeof ev.data?.queue_depth === 'number') s.queueDepth = ev.data.queue_depth
      if (ev.data?.jobs && typeof ev.data.jobs.total === 'number') s.counts = ev.data.jobs
      return false
    case 'worker.left':
      s.workers.delete(ev.data.key)
      return false
    case 'job.deleted':
      removeJob(s, ev.data.id)
      return false
  }
  if (ev.type.startsWith('job.')) {
    upsertJob(s, ev.data as Job)
    noteWaiting(s, ev.data as Job)
  }
  return false
}

export async function load(s: State) {
  const [jobs, workers, kinds, queue] = await Promise.all([api.jobs('', 200), api.workers(), api.kinds(), api.queue()])
  s.jobs = new Map()
  s.order = []
  for (const j of [...jobs.jobs].reverse()) upsertJob(s, j)
  s.workers = new Map(workers.workers.map((w) => [w.key, w]))
  s.kinds = kinds.kinds
  s.older = jobs.next_cursor ?? ''
  // The server's queue covers every job, not only the 200 loaded.
  s.waiting = new Map(queue.jobs.map((q) => [q.job, { kind: q.kind, n: q.waiting }]))
  s.queueDepth = queue.depth
  s.queueComplete = !queue.more
  s.storeRoom = queue.store_room_bytes ?? null
  rebuildQueue(s)
  if (s.view) await loadView(s, s.view)
}

// refreshRoom reads the store's room again: it changes with every upload
// and output, and no event carries it.
export async function refreshRoom(s: State) {
  try {
    s.storeRoom = (await api.queue(1)).store_room_bytes ?? null
  } catch {
    // kept: the banner says when the server is away
  }
}

// lowRoom is the store's room under which the page says what it means.
export const lowRoom = 1 << 30

// loadView shows the jobs of state ('' for all): the server's newest of
// them join those loaded (the newest of all may hold none of a state, such
// as a running job behind thousands of queued ones).
export async function loadView(s: State, state: JobState | '') {
  s.view = state
  s.viewOlder = ''
  if (!state) return
  const page = await api.jobs(state, 200)
  if (s.view !== state) return // another tab was picked meanwhile
  for (const j of page.jobs) merge(s, j)
  s.viewOlder = page.next_cursor ?? ''
}

// loadSearch brings in the jobs a search names that the page may not hold
// (it holds the newest jobs): the job of a whole id, or the newest of a
// kind's, in the state shown.
export async function loadSearch(s: State, text: string) {
  const q = text.trim()
  if (/^[A-Za-z0-9._-]+_[0-9a-hjkmnp-tv-z]{26}$/.test(q)) {
    if (s.jobs.has(q)) return
    merge(s, await api.job(q))
    return
  }
  const kind = s.kinds.find((k) => k.name.toLowerCase() === q.toLowerCase())
  if (!kind) return
  const page = await api.jobs(s.view, 200, '', kind.name)
  for (const j of page.jobs) merge(s, j)
}

// olderCursor is the cursor of the next page of the jobs shown.
export function olderCursor(s: State): string {
  return s.view ? s.viewOlder : s.older
}

// loadOlder adds the server's next page of the jobs shown, older than
// those loaded.
export async function loadOlder(s: State) {
  const state = s.view
  const cursor = olderCursor(s)
  if (!cursor) return
  const page = await api.jobs(state, 200, cursor)
  for (const j of page.jobs) merge(s, j)
  if (!state) s.older = page.next_cursor ?? ''
  else if (s.view === state) s.viewOlder = page.next_cursor ?? ''
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
  const queueTick = setInterval(() => rebuildQueue(s), 250)
  const roomTick = setInterval(() => { if (s.connection === 'live') refreshRoom(s) }, 15000)
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
    // Events are applied in batches, at most every 50 ms: a render per
    // event would cost the page a pass over every job, thousands of times
    // a second when thousands of jobs are submitted.
    let pending: ClusterEvent[] = []
    let timer: ReturnType<typeof setTimeout> | null = null
    ws.onmessage = (m) => {
      pending.push(JSON.parse(m.data))
      timer ??= setTimeout(() => {
        timer = null
        const batch = pending
        pending = []
        let reload = false
        for (const ev of batch) reload = apply(s, ev) || reload
        if (reload) load(s).catch(() => ws?.close())
      }, 50)
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
    clearInterval(queueTick)
    clearInterval(roomTick)
    ws?.close()
  }
}
