import type { ApiError, CanceledJobs, Dataset, Job, Kind, Minute, QueuedJob, Schedule, TaskAttempt, Worker } from './types'

const TOKEN_KEY = 'mrcluster.token'

export function token(): string { return sessionStorage.getItem(TOKEN_KEY) ?? '' }
export function setToken(t: string) { sessionStorage.setItem(TOKEN_KEY, t) }

export class RequestError extends Error {
  constructor(public status: number, public error: ApiError) { super(error.message) }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {}
  const raw = body instanceof Blob
  if (body !== undefined && !raw) headers['Content-Type'] = 'application/json'
  if (token()) headers.Authorization = `Bearer ${token()}`
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : raw ? body : JSON.stringify(body) })
  if (resp.status === 204) return undefined as T
  const data = await resp.json().catch(() => ({}))
  if (resp.status === 401) {
    // The page asks for the token; the action can be tried again after.
    window.dispatchEvent(new CustomEvent('mrcluster:unauthorized'))
  }
  if (!resp.ok) {
    throw new RequestError(resp.status, data.error ?? { code: 'http', message: `${method} ${path}: ${resp.status}` })
  }
  return data as T
}

export const api = {
  jobs: (state = '', limit = 50, cursor = '', kind = '') =>
    call<{ jobs: Job[]; next_cursor?: string }>('GET', `/api/v1/jobs?limit=${limit}` + (state ? `&state=${state}` : '') + (cursor ? `&cursor=${cursor}` : '') + (kind ? `&kind=${encodeURIComponent(kind)}` : '')),
  job: (id: string) => call<Job>('GET', `/api/v1/jobs/${encodeURIComponent(id)}`),
  // submit posts a job spec: kind, partitions, params, and what the
  // form sets of input, reducers, timeout, priority, delay.
  submit: (spec: Record<string, unknown>) => call<Job>('POST', '/api/v1/jobs', spec),
  schedules: () => call<{ schedules: Schedule[] }>('GET', '/api/v1/schedules'),
  addSchedule: (body: { name: string; cron: string; timezone: string; missed: string; overlap: string; job: Record<string, unknown> }) =>
    call<Schedule>('POST', '/api/v1/schedules', body),
  pauseSchedule: (name: string, resume = false) =>
    call<Schedule>('POST', `/api/v1/schedules/${encodeURIComponent(name)}/${resume ? 'resume' : 'pause'}`),
  deleteSchedule: (name: string) => call<void>('DELETE', `/api/v1/schedules/${encodeURIComponent(name)}`),
  datasets: () => call<{ datasets: Dataset[] }>('GET', '/api/v1/datasets'),
  putFile: (dataset: string, file: string, body: Blob) =>
    call<Dataset>('PUT', `/api/v1/datasets/${encodeURIComponent(dataset)}/files/${encodeURIComponent(file)}`, body),
  deleteDataset: (name: string) => call<void>('DELETE', `/api/v1/datasets/${encodeURIComponent(name)}`),
  dataset: (name: string) => call<Dataset>('GET', `/api/v1/datasets/${encodeURIComponent(name)}`),
  // putFileFromJob stores a succeeded job's output as a file of a dataset.
  putFileFromJob: (dataset: string, file: string, job: string) =>
    call<Dataset>('PUT', `/api/v1/datasets/${encodeURIComponent(dataset)}/files/${encodeURIComponent(file)}?from_job=${encodeURIComponent(job)}`),
  deleteFile: (dataset: string, file: string) =>
    call<void>('DELETE', `/api/v1/datasets/${encodeURIComponent(dataset)}/files/${encodeURIComponent(file)}`),
  tasks: (id: string) => call<{ tasks: TaskAttempt[] }>('GET', `/api/v1/jobs/${encodeURIComponent(id)}/tasks`),
  cancel: (id: string) => call<Job>('POST', `/api/v1/jobs/${encodeURIComponent(id)}/cancel`),
  // cancelJobs cancels up to 1,000 unfinished jobs of a kind, a state, or both.
  cancelJobs: (which: JobsToCancel) => call<CanceledJobs>('POST', '/api/v1/jobs/cancel', which),
  retry: (id: string) => call<Job>('POST', `/api/v1/jobs/${encodeURIComponent(id)}/retry`),
  rerun: (id: string) => call<Job>('POST', `/api/v1/jobs/${encodeURIComponent(id)}/rerun`),
  deleteJob: (id: string) => call<void>('DELETE', `/api/v1/jobs/${encodeURIComponent(id)}`),
  kinds: () => call<{ kinds: Kind[] }>('GET', '/api/v1/kinds'),
  putKind: (name: string, description: string, module: Blob) =>
    call<Kind>('PUT', `/api/v1/kinds/${encodeURIComponent(name)}` + (description ? `?description=${encodeURIComponent(description)}` : ''), module),
  setKindLimits: (name: string, concurrency: number, rate: string) =>
    call<Kind>('PUT', `/api/v1/kinds/${encodeURIComponent(name)}/limits`, { concurrency, rate }),
  pauseKind: (name: string, resume = false) => call<Kind>('POST', `/api/v1/kinds/${encodeURIComponent(name)}/${resume ? 'resume' : 'pause'}`),
  deleteKind: (name: string) => call<void>('DELETE', `/api/v1/kinds/${encodeURIComponent(name)}`),
  workers: () => call<{ workers: Worker[] }>('GET', '/api/v1/workers'),
  queue: (limit?: number) => call<{ depth: number; jobs: QueuedJob[]; more?: boolean; store_room_bytes?: number }>('GET', '/api/v1/queue' + (limit ? `?limit=${limit}` : '')),
  history: () => call<{ minutes: Minute[] }>('GET', '/api/v1/history'),
}

// JobsToCancel names the unfinished jobs a cancel of many takes: those of
// a kind, of a state (scheduled, queued or running), or of both.
export type JobsToCancel = { kind: string; state?: string } | { kind?: string; state: string }

// cancelEvery cancels every unfinished job of which, a thousand a request,
// while a request cancels some and says more matched; it returns how many
// were canceled and those that could not be, with why.
export async function cancelEvery(which: JobsToCancel, send: (which: JobsToCancel) => Promise<CanceledJobs> = api.cancelJobs): Promise<{ canceled: number; failed: string[] }> {
  let canceled = 0
  const failed: string[] = []
  for (;;) {
    const r = await send(which)
    canceled += r.canceled.length
    for (const f of r.failed ?? []) failed.push(`${f.id}: ${f.error}`)
    if (!r.more || r.canceled.length === 0) return { canceled, failed }
  }
}

// outputURL is where a finished job's output downloads from.
export function outputURL(id: string): string {
  const t = token()
  return `/api/v1/jobs/${encodeURIComponent(id)}/output?download=1` + (t ? `&access_token=${encodeURIComponent(t)}` : '')
}

// fileURL is where a file of a dataset downloads from, as it was uploaded.
export function fileURL(dataset: string, file: string): string {
  const t = token()
  return `/api/v1/datasets/${encodeURIComponent(dataset)}/files/${encodeURIComponent(file)}?download=1` + (t ? `&access_token=${encodeURIComponent(t)}` : '')
}

// eventsURL is the events websocket of the page's own server; browsers
// cannot set headers on websockets, so the token rides as a parameter.
export function eventsURL(loc: Location = window.location): string {
  const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:'
  const t = token()
  return `${proto}//${loc.host}/api/v1/events` + (t ? `?access_token=${encodeURIComponent(t)}` : '')
}
