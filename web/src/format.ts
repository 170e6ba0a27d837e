// fieldOf says which form field an API error names, to show it there.
export function fieldOf(message: string): string {
  message = message.replace(/^job: /, '') // a schedule's job spec: its fields are the form's
  if (/^cron\b/.test(message)) return 'cron'
  if (/^timezone\b/.test(message)) return 'timezone'
  if (/^missed\b/.test(message)) return 'missed'
  if (/^delay\b|^run_at\b/.test(message)) return 'delay'
  if (/^schedule\b|^name\b/.test(message)) return 'name'
  if (/^priority\b/.test(message)) return 'priority'
  if (/^max_attempts\b/.test(message)) return 'max_attempts'
  const param = message.match(/params\.(\w+)|\b(pattern) /)
  if (param) return 'params.' + (param[1] ?? param[2])
  if (/^partitions|partitions must|partitions is/.test(message)) return 'partitions'
  if (/reducers/.test(message)) return 'reducers'
  if (/^timeout/.test(message)) return 'timeout'
  if (/\binput\b|dataset/.test(message)) return 'input'
  if (/kind/.test(message)) return 'kind'
  return 'form'
}

// bytes formats a byte count.
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`
  return `${(n / (1 << 30)).toFixed(2)} GiB`
}

// duration formats the time between two instants (or until now).
export function duration(from: string | null, to: string | null, now = Date.now()): string {
  if (!from) return '–'
  return elapsed((to ? Date.parse(to) : now) - Date.parse(from))
}

// elapsed formats a span of ms milliseconds: "13 ms" ("13.7 ms" when fine),
// "12.3 s", "3 m 4 s", "2 h 5 m" (a task of three minutes read 183214.5 ms).
export function elapsed(ms: number, fine = false): string {
  if (ms < 1000) return fine ? `${Math.max(0, ms).toFixed(1)} ms` : `${Math.max(0, Math.round(ms))} ms`
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`
  const s = Math.round(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`
}

export function percent(done: number, total: number): number {
  return total > 0 ? Math.round((100 * done) / total) : 0
}

// attemptKey tells apart the finished runs of a job's tasks: two runs of a
// task may carry one attempt number (the queue delivered it again after a
// crash), so the worker and the end are part of it.
export function attemptKey(t: { phase?: string; partition: number; attempt: number; worker: string; finished_at: string }): string {
  return `${t.phase ?? 'map'}.${t.partition}.${t.attempt}.${t.worker}.${t.finished_at}`
}

// storedName is the name a file is uploaded under, as `mrcluster dataset put`
// stores it: each character a file name cannot hold (/ \ : , * ? " < > | and
// control characters) made '-', no dot beside another, no dot or space first
// or last. Letters of any script, spaces and brackets stay.
export function storedName(name: string): string {
  let s = name.replace(/[^\p{L}\p{N}\p{M} ._\-+()[\]{}@!&'#~=%$^;]/gu, '-')
  while (s.includes('..')) s = s.replaceAll('..', '.')
  s = s.replace(/^[. ]+|[. ]+$/g, '')
  return s || name
}

// axisLabel is the label of a time axis's tick at ms from its start, on an
// axis spanning span ms with ticks a quarter of it apart: in the unit that
// suits the span (ms, s, min, h), with as many decimals as tell the ticks
// apart (a 30 ms span read 0.00 s, 0.01 s, 0.02 s, 0.02 s, 0.03 s).
export function axisLabel(ms: number, span: number): string {
  const units: [string, number][] = [['ms', 1], ['s', 1000], ['min', 60_000], ['h', 3_600_000]]
  const [unit, per] = span < 1000 ? units[0] : span < 120_000 ? units[1] : span < 7_200_000 ? units[2] : units[3]
  const step = span / 4 / per
  const decimals = Math.min(3, Math.max(0, Math.ceil(-Math.log10(step)) + 1))
  return `${Number((ms / per).toFixed(decimals))} ${unit}`
}

// waitingTasks returns, for an unfinished job, the last attempt of each task
// that was interrupted (the store failed under it, or had no room for its
// output) and has not finished since: why the job waits.
export function waitingTasks<T extends { phase?: string; partition: number; state: string; finished_at: string }>(tasks: T[]): T[] {
  const last = new Map<string, T>()
  for (const t of tasks) {
    const key = `${t.phase ?? 'map'} ${t.partition}`
    const prev = last.get(key)
    if (prev && (prev.state === 'done' || Date.parse(t.finished_at) < Date.parse(prev.finished_at))) continue
    last.set(key, t)
  }
  return [...last.values()].filter((t) => t.state === 'interrupted')
}

// workerState is what a worker card says a worker does: silent is whether
// it has not been heard from lately. One that waits to run a task alone
// holds a task whose last runs were lost with their worker, while its
// pool's other tasks end.
export function workerState(w: { busy: boolean; stopping: boolean; phase?: string; waits_alone?: string }, silent: boolean): string {
  if (silent) return 'not answering'
  if (w.stopping) return 'stopping'
  if (w.busy) return w.phase === 'reduce' ? 'reducing' : 'busy'
  return w.waits_alone ? 'waits to run alone' : 'free'
}

// workerJob is the job a worker card names: the one whose task it runs, or
// waits to run alone; '–' for none.
export function workerJob(w: { busy: boolean; job_id: string; waits_alone?: string }): string {
  if (w.busy) return w.job_id
  return w.waits_alone || '–'
}

// taskOf says which task of its job a busy worker runs: the phase (map or
// reduce for data jobs) and the partition, the attempt past the first, and
// whether it is a backup copy of a straggler.
export function taskOf(w: { phase?: string; partition: number; attempt: number; backup?: boolean }): string {
  const phase = w.phase === 'reduce' ? 'reduce' : w.phase === 'map' ? 'map' : 'partition'
  return `${phase} ${w.partition}${w.attempt > 1 ? ` · attempt ${w.attempt}` : ''}${w.backup ? ' · backup' : ''}`
}

// reduceInputs sums up the bytes each reducer reads: the smallest, the
// median and the largest, and the largest's reducer and its multiple of
// the median (a hot key shows as a multiple far above 1). Null when there
// is nothing to say.
export function reduceInputs(bytes: number[] | undefined): { min: number; median: number; max: number; hottest: number; ratio: number } | null {
  if (!bytes?.length) return null
  const sorted = [...bytes].sort((a, b) => a - b)
  const median = sorted[Math.floor(sorted.length / 2)]
  const max = sorted[sorted.length - 1]
  const hottest = bytes.indexOf(max)
  return { min: sorted[0], median, max, hottest, ratio: median > 0 ? max / median : max > 0 ? Infinity : 1 }
}

// partialTasks sums, by job, how far the busy workers' tasks have come
// (each task once: a backup copy and its original count as the furthest
// of the two), so that a job's bar moves while its long tasks run rather
// than only as they finish.
export function partialTasks(workers: Iterable<{ busy: boolean; job_id: string; phase?: string; partition: number; progress?: number }>): Map<string, number> {
  const furthest = new Map<string, number>()
  for (const w of workers) {
    if (!w.busy || w.progress == null) continue
    const task = `${w.job_id} ${w.phase ?? 'map'} ${w.partition}`
    furthest.set(task, Math.max(furthest.get(task) ?? 0, Math.min(Math.max(w.progress, 0), 1)))
  }
  const out = new Map<string, number>()
  for (const [task, p] of furthest) {
    const job = task.slice(0, task.indexOf(' '))
    out.set(job, (out.get(job) ?? 0) + p)
  }
  return out
}

// jobPercent is a job's progress in percent: its done tasks, and for an
// unfinished job the running tasks' share (partial, from partialTasks),
// never 100 before it is done.
export function jobPercent(j: { state: string; tasks: { done: number; total: number } }, partial = 0): number {
  const finished = j.state === 'succeeded' || j.state === 'failed' || j.state === 'canceled'
  if (finished || !partial) return percent(j.tasks.done, j.tasks.total)
  return Math.min(99, percent(j.tasks.done + partial, j.tasks.total))
}
