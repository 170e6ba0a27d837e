import { afterEach, describe, expect, it, vi } from 'vitest'
import { answered, apply, count, loadOlder, loadSearch, loadView, newState, newestFirst, rebuildQueue, refreshRoom, upsertJob } from '../store'
import type { Job } from '../types'

function job(id: string, created: string, over: Partial<Job> = {}): Job {
  return {
    id, kind: 'short', state: 'queued', partitions: 4,
    tasks: { total: 4, queued: 4, running: 0, done: 0, failed: 0 },
    result: null, error: '', created_at: created, started_at: null, finished_at: null, ...over,
  }
}

afterEach(() => vi.unstubAllGlobals())

describe('store', () => {
  it('reads the store\'s room with the queue, and again on its own', async () => {
    const urls: string[] = []
    let room: number | undefined = 5 << 30
    vi.stubGlobal('fetch', vi.fn(async (url: string) => {
      urls.push(url)
      return new Response(JSON.stringify({ depth: 0, jobs: [], store_room_bytes: room }), { status: 200 })
    }))
    const s = newState()
    expect(s.storeRoom).toBe(null)
    await refreshRoom(s)
    expect(s.storeRoom).toBe(5 << 30)
    expect(urls).toEqual(['/api/v1/queue?limit=1'])
    room = undefined // a server that cannot tell
    await refreshRoom(s)
    expect(s.storeRoom).toBe(null)
  })

  it('keeps jobs newest first whatever order they arrive in', () => {
    const s = newState()
    upsertJob(s, job('b', '2026-01-01T00:00:02Z'))
    upsertJob(s, job('a', '2026-01-01T00:00:01Z'))
    upsertJob(s, job('c', '2026-01-01T00:00:03Z'))
    expect(newestFirst(s)).toEqual(['c', 'b', 'a'])
  })

  it('keeps what the events brought when an action\'s answer comes after them', () => {
    const s = newState()
    const steps = (...states: string[]) => states.map((state) => ({ state, at: '2026-01-01T00:00:01Z' }))
    const retried = job('a', '2026-01-01T00:00:01Z', { state: 'queued', history: steps('queued', 'canceled', 'retried', 'queued') })
    const succeeded = job('a', '2026-01-01T00:00:01Z', {
      state: 'succeeded', history: steps('queued', 'canceled', 'retried', 'queued', 'running', 'succeeded'),
      tasks: { total: 4, queued: 0, running: 0, done: 4, failed: 0 },
    })
    apply(s, { type: 'job.succeeded', time: '', data: succeeded })
    answered(s, retried) // the retry's answer, late
    expect(s.jobs.get('a')!.state).toBe('succeeded')
    expect(s.queueDepth).toBe(0)
    const s2 = newState()
    apply(s2, { type: 'job.canceled', time: '', data: job('a', '2026-01-01T00:00:01Z', { state: 'canceled', history: steps('queued', 'canceled') }) })
    answered(s2, retried) // before any event of the retry
    expect(s2.jobs.get('a')!.state).toBe('queued')
    expect(s2.queueDepth).toBe(4)
  })

  it('applies job events as deltas and derives the queue', () => {
    const s = newState()
    apply(s, { type: 'job.submitted', time: '', data: job('a', '2026-01-01T00:00:01Z') })
    expect(s.queueDepth).toBe(4)
    apply(s, { type: 'job.progress', time: '', data: job('a', '2026-01-01T00:00:01Z', { state: 'running', tasks: { total: 4, queued: 1, running: 3, done: 0, failed: 0 } }) })
    rebuildQueue(s)
    expect(s.queue).toEqual([{ job: 'a', kind: 'short', waiting: 1 }])
    expect(s.queueDepth).toBe(1)
    apply(s, { type: 'task.done', time: '', data: { job: 'a', partitions: [0, 1, 2] } })
    expect(s.doneThisSecond).toBe(3)
    apply(s, { type: 'job.succeeded', time: '', data: job('a', '2026-01-01T00:00:01Z', { state: 'succeeded', tasks: { total: 4, queued: 0, running: 0, done: 4, failed: 0 }, result: { values: [1, 1, 1, 1], sum: 4 } }) })
    expect(s.queueDepth).toBe(0)
    expect(s.jobs.get('a')!.result!.sum).toBe(4)
    expect(s.order).toEqual(['a'])
  })

  it('takes the depth from the server\'s stats when its queue list was cut short', () => {
    const s = newState()
    apply(s, { type: 'job.submitted', time: '', data: job('a', '2026-01-01T00:00:01Z') })
    apply(s, { type: 'cluster.stats', time: '', data: { queue_depth: 99, workers_busy: 0, workers_total: 4 } })
    expect(s.queueDepth).toBe(4) // a whole list: its own count, exact per event
    s.queueComplete = false // the server listed only the oldest jobs (more: true)
    apply(s, { type: 'cluster.stats', time: '', data: { queue_depth: 99, workers_busy: 0, workers_total: 4 } })
    expect(s.queueDepth).toBe(99)
    apply(s, { type: 'hello', time: '', data: { queue_depth: 7 } })
    expect(s.queueDepth).toBe(7)
  })

  it('forgets a deleted job, and its waiting tasks', () => {
    const s = newState()
    apply(s, { type: 'job.submitted', time: '', data: job('a', '2026-01-01T00:00:01Z') })
    apply(s, { type: 'job.submitted', time: '', data: job('b', '2026-01-01T00:00:02Z') })
    expect(s.queueDepth).toBe(8)
    apply(s, { type: 'job.deleted', time: '', data: { id: 'a' } })
    expect(s.jobs.has('a')).toBe(false)
    expect(s.order).toEqual(['b'])
    expect(s.queueDepth).toBe(4)
    apply(s, { type: 'job.deleted', time: '', data: { id: 'nope' } })
    expect(s.order).toEqual(['b'])
  })

  it('keeps the queue depth in step over thousands of job events', () => {
    const s = newState()
    for (let i = 0; i < 5000; i++) {
      const id = `noop_${String(i).padStart(5, '0')}`
      apply(s, { type: 'job.submitted', time: '', data: job(id, '2026-01-01T00:00:01Z', { kind: 'noop', tasks: { total: 1, queued: 1, running: 0, done: 0, failed: 0 } }) })
      if (i % 2) apply(s, { type: 'job.succeeded', time: '', data: job(id, '2026-01-01T00:00:01Z', { state: 'succeeded', tasks: { total: 1, queued: 0, running: 0, done: 1, failed: 0 } }) })
    }
    rebuildQueue(s)
    expect(s.queueDepth).toBe(2500)
    expect(s.queue.length).toBe(12)
    expect(s.queue[0].job).toBe('noop_00000')
  })

  it('tracks workers and asks for a reload on resync', () => {
    const s = newState()
    apply(s, { type: 'worker.status', time: '', data: { key: 'h.0', busy: true } })
    expect(s.workers.get('h.0')!.busy).toBe(true)
    apply(s, { type: 'worker.left', time: '', data: { key: 'h.0' } })
    expect(s.workers.size).toBe(0)
    expect(apply(s, { type: 'resync', time: '', data: null })).toBe(true)
  })
})

describe('older jobs', () => {
  it('loads the server\'s next page of older jobs, in order, until there is none', async () => {
    const { vi } = await import('vitest')
    const { load, loadOlder } = await import('../store')
    const pages: Record<string, { jobs: Job[]; next_cursor?: string }> = {
      '': { jobs: [job('c', '2026-01-01T00:00:03Z'), job('b', '2026-01-01T00:00:02Z')], next_cursor: 'p2' },
      p2: { jobs: [job('a', '2026-01-01T00:00:01Z')] },
    }
    const urls: string[] = []
    vi.stubGlobal('fetch', vi.fn(async (url: string) => {
      urls.push(url)
      const u = new URL(url, 'http://x')
      const body = u.pathname === '/api/v1/jobs' ? pages[u.searchParams.get('cursor') ?? '']
        : u.pathname === '/api/v1/queue' ? { depth: 0, jobs: [] }
          : u.pathname === '/api/v1/kinds' ? { kinds: [] } : { workers: [] }
      return new Response(JSON.stringify(body), { status: 200 })
    }))
    const s = newState()
    await load(s)
    expect(newestFirst(s)).toEqual(['c', 'b'])
    expect(s.older).toBe('p2')
    await loadOlder(s)
    expect(newestFirst(s)).toEqual(['c', 'b', 'a'])
    expect(s.older).toBe('')
    await loadOlder(s) // nothing more: no request
    expect(urls.filter((u) => u.includes('cursor=')).length).toBe(1)
    vi.unstubAllGlobals()
  })

  it('counts the cluster\'s jobs by state from the server\'s stats, not those it loaded', () => {
    const s = newState()
    apply(s, { type: 'job.submitted', time: '', data: job('a', '2026-01-01T00:00:01Z') })
    expect(count(s, 'queued')).toBe(1) // before any stats: the jobs loaded
    expect(count(s, 'running')).toBe(0)
    expect(count(s, '')).toBe(1)
    const jobs = { total: 10301, scheduled: 0, queued: 300, running: 1, succeeded: 10000, failed: 0, canceled: 0 }
    apply(s, { type: 'hello', time: '', data: { queue_depth: 308, jobs } })
    expect(count(s, 'running')).toBe(1)
    expect(count(s, 'queued')).toBe(300)
    expect(count(s, '')).toBe(10301)
    apply(s, { type: 'cluster.stats', time: '', data: { queue_depth: 0, jobs: { ...jobs, running: 0, succeeded: 10001 } } })
    expect(count(s, 'running')).toBe(0)
    apply(s, { type: 'cluster.stats', time: '', data: { queue_depth: 0 } }) // a server of an earlier version
    expect(count(s, 'succeeded')).toBe(10001)
  })

  it('loads the server\'s jobs of the state looked at, and their older pages', async () => {
    const s = newState()
    upsertJob(s, job('new', '2026-01-01T00:00:09Z'))
    // The running job is older than every job loaded; an event made it
    // succeed while the page of running jobs was on its way.
    const urls: string[] = []
    vi.stubGlobal('fetch', vi.fn(async (url: string) => {
      urls.push(url)
      const page = url.includes('cursor=c1')
        ? { jobs: [job('older', '2026-01-01T00:00:01Z', { state: 'running' })] }
        : { jobs: [job('old', '2026-01-01T00:00:02Z', { state: 'running' }), job('gone', '2026-01-01T00:00:03Z', { state: 'running', history: [{ state: 'queued', at: '' }, { state: 'running', at: '' }] })], next_cursor: 'c1' }
      return new Response(JSON.stringify(page), { status: 200 })
    }))
    apply(s, { type: 'job.succeeded', time: '', data: job('gone', '2026-01-01T00:00:03Z', { state: 'succeeded', history: [{ state: 'queued', at: '' }, { state: 'running', at: '' }, { state: 'succeeded', at: '' }] }) })
    await loadView(s, 'running')
    expect(urls).toEqual(['/api/v1/jobs?limit=200&state=running'])
    expect(newestFirst(s)).toEqual(['new', 'gone', 'old'])
    expect(s.jobs.get('gone')!.state).toBe('succeeded') // the event's, newer than the page's
    await loadOlder(s)
    expect(urls[1]).toBe('/api/v1/jobs?limit=200&state=running&cursor=c1')
    expect(newestFirst(s)).toEqual(['new', 'gone', 'old', 'older'])
    expect(s.viewOlder).toBe('')
    await loadView(s, '')
    expect(urls.length).toBe(2) // all: the newest, loaded already
  })

  it('asks the server for the job of a whole id searched for, or a kind\'s jobs', async () => {
    const s = newState()
    s.kinds = [{ name: 'wordcount' } as any]
    s.view = 'succeeded'
    const urls: string[] = []
    const old = job('wordcount_01m8x5zaevh2bhwav12ckq83sh', '2025-01-01T00:00:01Z', { kind: 'wordcount', state: 'succeeded' })
    vi.stubGlobal('fetch', vi.fn(async (url: string) => {
      urls.push(url)
      return new Response(JSON.stringify(url.includes('?') ? { jobs: [old] } : old), { status: 200 })
    }))
    await loadSearch(s, ' wordcount_01m8x5zaevh2bhwav12ckq83sh ')
    expect(urls).toEqual(['/api/v1/jobs/wordcount_01m8x5zaevh2bhwav12ckq83sh'])
    expect(s.jobs.get(old.id)!.state).toBe('succeeded')
    await loadSearch(s, old.id) // held now: not asked again
    await loadSearch(s, 'WordCount')
    expect(urls[1]).toBe('/api/v1/jobs?limit=200&state=succeeded&kind=wordcount')
    await loadSearch(s, 'word') // part of a name: the page's own filter only
    await loadSearch(s, '')
    expect(urls.length).toBe(2)
  })
})
