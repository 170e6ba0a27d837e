import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import SubmitForm from '../SubmitForm.vue'
import Datasets from '../Datasets.vue'
import JobDetail from '../JobDetail.vue'
import { axisLabel, elapsed, fieldOf, jobPercent, partialTasks, reduceInputs, storedName, taskOf, waitingTasks, workerJob, workerState } from '../format'
import type { Dataset, Job, Kind } from '../types'

afterEach(() => vi.unstubAllGlobals())

const kinds: Kind[] = [
  { name: 'short', description: 'sleeps' },
  { name: 'grep', description: 'matching lines', reads_data: true, params: [{ name: 'pattern', description: 'a Go regexp', required: true }] },
]
const datasets: Dataset[] = [
  { name: 'books', files: [{ name: 'a.txt', size: 10, uploaded_at: '' }], size: 10, updated_at: '2026-11-27T10:00:00Z' },
  { name: 'logs', files: [], size: 0, updated_at: '2026-11-27T10:00:00Z' },
]

describe('SubmitForm for a kind that reads data', () => {
  it('asks for input, reducers and the kind\'s params, and sends them', async () => {
    const fetch = vi.fn(async () => new Response(JSON.stringify({ id: 'grep_x' }), { status: 202 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(SubmitForm, { props: { kinds, datasets } })
    expect(w.find('select[name="input"]').exists()).toBe(false)
    await w.find('select[name="kind"]').setValue('grep')
    expect(w.find('select[name="input"]').exists()).toBe(true)
    await w.find('input[name="reducers"]').setValue('3')
    await w.find('input[name="param-pattern"]').setValue('(?i)whale')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(JSON.parse((fetch.mock.calls[0] as any)[1].body)).toEqual({
      kind: 'grep', partitions: 8, params: { pattern: '(?i)whale' }, input: ['books'], reducers: 3,
    })
    expect(w.emitted('submitted')).toEqual([['grep_x']])
  })

  it('shows a param error under that param', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response(
      JSON.stringify({ error: { code: 'invalid', message: 'params.pattern is required for kind "grep": a Go regexp' } }), { status: 400 })))
    const w = mount(SubmitForm, { props: { kinds, datasets } })
    await w.find('select[name="kind"]').setValue('grep')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.find('[data-test="error-param-pattern"]').text()).toContain('is required')
  })

  it('routes data errors to their fields', () => {
    expect(fieldOf('input: dataset "x" does not exist; upload it first')).toBe('input')
    expect(fieldOf('reducers must be an integer from 1 to 1024, got 0')).toBe('reducers')
    expect(fieldOf('params of kind "grep": pattern "a(" is not a Go regular expression')).toBe('params.pattern')
    expect(fieldOf('partitions must be an integer from 1 to 100, got 0')).toBe('partitions')
  })
})

describe('Datasets', () => {
  it('lists datasets and uploads every chosen file', async () => {
    const fetch = vi.fn(async () => new Response(JSON.stringify(datasets[0]), { status: 201 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(Datasets, { props: { datasets } })
    expect(w.findAll('tr[data-dataset]').map((r) => r.attributes('data-dataset'))).toEqual(['books', 'logs'])
    const input = w.find('input[type="file"]')
    Object.defineProperty(input.element, 'files', { value: [new File(['a b'], 'one.txt'), new File(['c'], 'two words: draft.txt')] })
    await input.trigger('change')
    // The name is not guessed from a file: without one, the form says so.
    expect((w.find('input[name="dataset"]').element as HTMLInputElement).value).toBe('')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(fetch).not.toHaveBeenCalled()
    expect(w.find('[data-test="dataset-error"]').text()).toContain('name the dataset')
    await w.find('input[name="dataset"]').setValue('one')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(fetch.mock.calls.map((c: any) => [c[1].method, c[0]])).toEqual([
      ['PUT', '/api/v1/datasets/one/files/one.txt'],
      ['PUT', '/api/v1/datasets/one/files/two%20words-%20draft.txt'],
    ])
    expect(w.emitted('changed')).toHaveLength(1)
  })

  it('shows a dataset\'s files, read whole, to download or delete one', async () => {
    const whole: Dataset = { name: 'books', files: [{ name: 'a.txt', size: 10, uploaded_at: '' }, { name: 'b c.txt', size: 5, uploaded_at: '' }], size: 15, updated_at: '' }
    const after: Dataset = { ...whole, files: [whole.files[0]], size: 10 }
    const answers = [whole, null, after]
    const fetch = vi.fn(async () => {
      const a = answers.shift()
      return a === null ? new Response(null, { status: 204 }) : new Response(JSON.stringify(a), { status: 200 })
    })
    vi.stubGlobal('fetch', fetch)
    vi.stubGlobal('confirm', () => true)
    const w = mount(Datasets, { props: { datasets } })
    expect(w.find('tr[data-files]').exists()).toBe(false)
    await w.find('[data-test="files-books"]').trigger('click')
    await flushPromises()
    const links = w.findAll('tr[data-files="books"] li a')
    expect(links.map((a) => a.text())).toEqual(['a.txt', 'b c.txt'])
    expect(links[1].attributes('href')).toBe('/api/v1/datasets/books/files/b%20c.txt?download=1')
    await w.find('li[data-file="b c.txt"] button').trigger('click')
    await flushPromises()
    expect(fetch.mock.calls.map((c: any) => [c[1].method, c[0]])).toEqual([
      ['GET', '/api/v1/datasets/books'],
      ['DELETE', '/api/v1/datasets/books/files/b%20c.txt'],
      ['GET', '/api/v1/datasets/books'],
    ])
    expect(w.findAll('tr[data-files="books"] li').map((li) => li.attributes('data-file'))).toEqual(['a.txt'])
    expect(w.emitted('changed')).toHaveLength(1)
    await w.find('[data-test="files-books"]').trigger('click')
    expect(w.find('tr[data-files]').exists()).toBe(false)
  })
})

describe('JobDetail of a data job', () => {
  it('shows the phase, counters, preview and a download link', async () => {
    const job: Job = {
      id: 'wordcount_x', kind: 'wordcount', state: 'succeeded', partitions: 4, input: ['books'], reducers: 2, phase: 'reduce',
      counters: { input_bytes: 2048, input_records: 10, map_output_records: 30, reduce_output_records: 7 },
      preview: ['a 3', 'b 1'], backups: ['map/2'],
      history: [{ state: 'queued', at: '2026-11-27T10:00:00Z' }, { state: 'running', at: '2026-11-27T10:00:00.2Z' },
        { state: 'reduce', at: '2026-11-27T10:00:00.8Z' }, { state: 'succeeded', at: '2026-11-27T10:00:01Z' }],
      tasks: { total: 6, queued: 0, running: 0, done: 6, failed: 0 },
      result: null, error: '', created_at: '2026-11-27T10:00:00Z', started_at: '2026-11-27T10:00:00Z', finished_at: '2026-11-27T10:00:01Z',
    }
    vi.stubGlobal('fetch', vi.fn(async (url: string) => new Response(JSON.stringify(url.endsWith('/tasks') ? { tasks: [] } : job), { status: 200 })))
    const w = mount(JobDetail, { props: { id: job.id } })
    await flushPromises()
    expect(w.find('[data-test="phase"]').text()).toBe('done')
    expect(w.find('[data-test="output-records"]').text()).toContain('7')
    expect(w.find('[data-test="preview"]').text()).toBe('a 3\nb 1')
    expect(w.find('[data-test="download"]').attributes('href')).toBe('/api/v1/jobs/wordcount_x/output?download=1')
    expect(w.findAll('[data-test="history"] li .badge').map((b) => b.text())).toEqual(['queued', 'running', 'reduce phase', 'succeeded'])
    expect(w.find('[data-test="history"]').text()).toContain('+200 ms')
    expect(w.find('[data-test="backups"]').text()).toContain('map/2')
  })

  it('saves a succeeded job\'s output as a dataset\'s file', async () => {
    const job: Job = {
      id: 'wordcount_y', kind: 'wordcount', state: 'succeeded', partitions: 1, input: ['books'], reducers: 1,
      counters: { input_bytes: 10, input_records: 1, map_output_records: 2, reduce_output_records: 2 }, preview: ['a 1', 'b 1'],
      tasks: { total: 2, queued: 0, running: 0, done: 2, failed: 0 },
      result: null, error: '', created_at: '2026-11-27T10:00:00Z', started_at: '2026-11-27T10:00:00Z', finished_at: '2026-11-27T10:00:01Z',
    }
    const stored: Dataset = { name: 'counts', files: [{ name: 'wordcount_y.txt', size: 8, uploaded_at: '' }], size: 8, updated_at: '' }
    const fetch = vi.fn(async (url: string, init: any) => new Response(JSON.stringify(
      init?.method === 'PUT' ? stored : url.endsWith('/tasks') ? { tasks: [] } : job), { status: init?.method === 'PUT' ? 201 : 200 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(JobDetail, { props: { id: job.id } })
    await flushPromises()
    await w.find('[data-test="save-output"]').trigger('submit')
    expect(w.text()).toContain('name the dataset')
    await w.find('input[name="save-as"]').setValue('counts')
    await w.find('[data-test="save-output"]').trigger('submit')
    await flushPromises()
    const put = fetch.mock.calls.find((c: any) => c[1]?.method === 'PUT') as any
    expect(put[0]).toBe('/api/v1/datasets/counts/files/wordcount_y.txt?from_job=wordcount_y')
    expect(w.find('[data-test="saved"]').text()).toContain('stored as counts/wordcount_y.txt')
  })

  it('lists two runs of one task under one attempt, and marks the one that did not count', async () => {
    const job: Job = {
      id: 'noop_x', kind: 'noop', state: 'succeeded', partitions: 1,
      history: [{ state: 'queued', at: '2026-11-27T10:00:00Z' }, { state: 'succeeded', at: '2026-11-27T10:00:01Z' }],
      tasks: { total: 1, queued: 0, running: 0, done: 1, failed: 0 },
      result: { values: [1], sum: 1 }, error: '', created_at: '2026-11-27T10:00:00Z', started_at: '2026-11-27T10:00:00Z', finished_at: '2026-11-27T10:00:01Z',
    }
    const run = (worker: string, at: string, superseded: boolean) => ({
      partition: 0, attempt: 1, worker, value: 1, started_at: at, finished_at: at, duration_ms: 0.1, state: 'done', superseded,
    })
    // A lost run (its worker died: its end, and how long it ran, never heard of).
    const lost = { ...run('', '2026-11-27T10:00:00.05Z', false), duration_ms: 0, state: 'lost', error: 'the queue heard no end of this attempt' }
    // One whose worker the server saw go: its worker and start are known,
    // and it was noticed lost 300 ms later.
    const seen = { ...run('c.3', '2026-11-27T10:00:00.2Z', false), attempt: 2, finished_at: '2026-11-27T10:00:00.5Z', duration_ms: 300, state: 'lost', error: 'the queue heard no end of this attempt' }
    const tasks = [run('a.1', '2026-11-27T10:00:00.1Z', false), run('b.2', '2026-11-27T10:00:00.6Z', true), lost, seen]
    vi.stubGlobal('fetch', vi.fn(async (url: string) => new Response(JSON.stringify(url.endsWith('/tasks') ? { tasks } : job), { status: 200 })))
    const w = mount(JobDetail, { props: { id: job.id } })
    await flushPromises()
    const rows = w.findAll('[data-test="tasks"] tbody tr').filter((r) => !r.text().includes('lost'))
    expect(rows).toHaveLength(2)
    expect(rows.map((r) => r.find('[data-test="superseded"]').exists())).toEqual([false, true])
    expect(rows.map((r) => r.find('[data-test="took"]').text())).toEqual(['0.1 ms', '0.1 ms'])
    const lostRows = w.findAll('[data-test="tasks"] tbody tr').filter((r) => r.text().includes('lost'))
    expect(lostRows.map((r) => r.find('[data-test="took"]').text())).toEqual(['—', '300.0 ms'])
    expect(lostRows[1].text()).toContain('c.3')
    // Lost runs are not failed attempts: the list above the table says so.
    expect(w.find('[data-test="failures-heading"]').text()).toBe('Lost attempts')
    expect(w.findAll('[data-test="failures"] li').map((l) => l.text())).toEqual([
      expect.stringContaining('attempt 1 (lost) on a worker'), expect.stringContaining('attempt 2 (lost) on c.3'),
    ])
    // The timeline draws both runs, the one that did not count apart, and
    // the lost one whose worker was seen go, in that worker's lane; not the
    // other lost one, whose times are not known.
    const bars = w.findAll('[data-test="gantt"] > rect.task')
    expect(bars.map((b) => b.classes('superseded'))).toEqual([false, true, false])
    expect(bars.map((b) => b.classes('lost'))).toEqual([false, false, true])
    expect(w.findAll('[data-test="gantt"] text.lane').map((l) => l.text())).toContain('c.3')
    expect(w.findAll('[data-test="gantt"] text.lane').map((l) => l.text())).not.toContain('')
  })
})

describe('storedName', () => {
  it('keeps the names people give files, and makes what a file name cannot hold \'-\' (as the CLI does)', () => {
    expect(storedName('My Notes (été).txt')).toBe('My Notes (été).txt')
    expect(storedName('日本語 2026.txt')).toBe('日本語 2026.txt')
    expect(storedName('a:b,c*d?.txt')).toBe('a-b-c-d-.txt')
    expect(storedName('tab\there.txt')).toBe('tab-here.txt')
    expect(storedName('a..b.txt')).toBe('a.b.txt')
    expect(storedName(' .hidden. ')).toBe('hidden')
  })
})

describe('axisLabel', () => {
  const ticks = (span: number) => [0, 0.25, 0.5, 0.75, 1].map((f) => axisLabel(span * f, span))
  it('labels every tick of a span differently, in a unit that suits it', () => {
    expect(ticks(30)).toEqual(['0 ms', '7.5 ms', '15 ms', '22.5 ms', '30 ms'])
    expect(ticks(2)).toEqual(['0 ms', '0.5 ms', '1 ms', '1.5 ms', '2 ms'])
    expect(ticks(1500)).toEqual(['0 s', '0.38 s', '0.75 s', '1.13 s', '1.5 s'])
    expect(ticks(40_000)).toEqual(['0 s', '10 s', '20 s', '30 s', '40 s'])
    expect(ticks(600_000)).toEqual(['0 min', '2.5 min', '5 min', '7.5 min', '10 min'])
    expect(ticks(3 * 3_600_000)).toEqual(['0 h', '0.75 h', '1.5 h', '2.25 h', '3 h'])
    for (const span of [1, 7, 33, 999, 1001, 12_345, 119_999, 7_654_321]) {
      expect(new Set(ticks(span)).size).toBe(5)
    }
  })
})

describe('elapsed', () => {
  it('reads a task of minutes in minutes, and a quick one in milliseconds', () => {
    expect(elapsed(13.66, true)).toBe('13.7 ms')
    expect(elapsed(13.66)).toBe('14 ms')
    expect(elapsed(12_340)).toBe('12.3 s')
    expect(elapsed(183_214.5)).toBe('3 m 3 s')
    expect(elapsed(119_600)).toBe('2 m 0 s')
    expect(elapsed(7_500_000)).toBe('2 h 5 m')
  })
})

describe('waitingTasks', () => {
  it('names the tasks whose last run was interrupted and that have not finished since', () => {
    const at = (s: number) => `2026-12-05T01:00:0${s}Z`
    const tasks = [
      { phase: 'map', partition: 0, state: 'done', finished_at: at(1) },
      { phase: 'reduce', partition: 0, state: 'interrupted', finished_at: at(2), error: 'no room' },
      { phase: 'reduce', partition: 0, state: 'done', finished_at: at(3) },
      { phase: 'reduce', partition: 1, state: 'interrupted', finished_at: at(4), error: 'no room' },
      { phase: 'reduce', partition: 1, state: 'interrupted', finished_at: at(9), error: 'not run: no room yet' },
      { phase: 'reduce', partition: 2, state: 'failed', finished_at: at(5), error: 'boom' },
    ]
    expect(waitingTasks(tasks)).toEqual([tasks[4]])
  })
})

describe('taskOf', () => {
  it('names a busy worker\'s task, its attempt past the first, and a backup copy', () => {
    expect(taskOf({ partition: 3, attempt: 1 })).toBe('partition 3')
    expect(taskOf({ phase: 'map', partition: 0, attempt: 2 })).toBe('map 0 · attempt 2')
    expect(taskOf({ phase: 'reduce', partition: 1, attempt: 1, backup: true })).toBe('reduce 1 · backup')
  })
})

describe('workerState and workerJob', () => {
  const w = { busy: false, stopping: false, job_id: '' }
  it('says what a worker does, and names its job', () => {
    expect(workerState(w, false)).toBe('free')
    expect(workerJob(w)).toBe('–')
    expect(workerState({ ...w, busy: true, job_id: 'j1', phase: 'reduce' }, false)).toBe('reducing')
    expect(workerJob({ ...w, busy: true, job_id: 'j1' })).toBe('j1')
    expect(workerState({ ...w, busy: true }, true)).toBe('not answering')
    expect(workerState({ ...w, busy: true, stopping: true }, false)).toBe('stopping')
  })
  it('says a worker waits to run a task alone, and for which job', () => {
    const waiting = { ...w, waits_alone: 'j2' }
    expect(workerState(waiting, false)).toBe('waits to run alone')
    expect(workerJob(waiting)).toBe('j2')
  })
})

describe('reduceInputs', () => {
  it('names the hot reducer and its multiple of the median', () => {
    expect(reduceInputs([100, 120, 2400, 110])).toEqual({ min: 100, median: 120, max: 2400, hottest: 2, ratio: 20 })
  })
  it('says nothing of a job without reducers, and an even spread is a multiple of 1', () => {
    expect(reduceInputs(undefined)).toBeNull()
    expect(reduceInputs([])).toBeNull()
    expect(reduceInputs([5, 5, 5])?.ratio).toBe(1)
  })
  it('takes reducers of nothing but one for all of the median', () => {
    expect(reduceInputs([0, 0, 0, 300])?.ratio).toBe(Infinity)
    expect(reduceInputs([0, 0])?.ratio).toBe(1)
  })
})

describe('partialTasks and jobPercent', () => {
  const w = (job_id: string, partition: number, progress?: number, phase?: string) => ({ busy: true, job_id, partition, progress, phase })
  it('sums the running tasks of each job, a task and its backup copy once', () => {
    const p = partialTasks([w('a', 0, 0.5), w('a', 1, 0.25), w('a', 1, 0.75), w('a', 1, 0.1, 'reduce'), w('b', 0), { ...w('c', 0, 0.9), busy: false }])
    expect(p.get('a')).toBeCloseTo(1.35)
    expect(p.has('b')).toBe(false)
    expect(p.has('c')).toBe(false)
  })
  it('moves an unfinished job by its running tasks, never to 100 before it ends', () => {
    const running = { state: 'running', tasks: { done: 1, total: 4 } }
    expect(jobPercent(running)).toBe(25)
    expect(jobPercent(running, 0.5)).toBe(38)
    expect(jobPercent({ state: 'running', tasks: { done: 3, total: 4 } }, 1)).toBe(99)
    expect(jobPercent({ state: 'succeeded', tasks: { done: 4, total: 4 } }, 0.5)).toBe(100)
  })
})
