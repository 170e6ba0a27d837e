import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import SubmitForm from '../SubmitForm.vue'
import { fieldOf } from '../format'

afterEach(() => vi.unstubAllGlobals())

describe('SubmitForm', () => {
  it('shows the API validation error next to the field it names', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response(
      JSON.stringify({ error: { code: 'invalid', message: 'partitions must be an integer from 1 to 10000, got 0' } }),
      { status: 400 },
    )))
    const w = mount(SubmitForm, { props: { kinds: [{ name: 'short', description: '' }] } })
    await w.find('input[name="partitions"]').setValue('0')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.find('[data-test="error-partitions"]').text()).toContain('from 1 to 10000')
    expect(w.emitted('submitted')).toBeUndefined()
  })

  it('submits and reports the new job', async () => {
    const fetch = vi.fn(async () => new Response(JSON.stringify({ id: 'short_x' }), { status: 202 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(SubmitForm, { props: { kinds: [{ name: 'short', description: '' }] } })
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.emitted('submitted')).toEqual([['short_x']])
    expect(JSON.parse((fetch.mock.calls[0] as any)[1].body)).toEqual({ kind: 'short', partitions: 8, params: {} })
  })

  it('leaves a data job\'s map tasks to the cluster when blank', async () => {
    const fetch = vi.fn(async () => new Response(JSON.stringify({ id: 'wordcount_x' }), { status: 202 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(SubmitForm, { props: {
      kinds: [{ name: 'wordcount', description: '', reads_data: true }],
      datasets: [{ name: 'books', files: [] }],
    } as any })
    await w.find('input[name="partitions"]').setValue('')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.emitted('submitted')).toEqual([['wordcount_x']])
    expect(JSON.parse((fetch.mock.calls[0] as any)[1].body)).toEqual({ kind: 'wordcount', params: {}, input: ['books'], reducers: 2 })
  })

  it('adds a schedule of the job, and shows a cron error under its field', async () => {
    const fetch = vi.fn()
      .mockResolvedValueOnce(new Response(JSON.stringify({ error: { code: 'invalid', message: 'cron "every day": expected 5 to 6 fields' } }), { status: 400 }))
      .mockResolvedValueOnce(new Response(JSON.stringify({ name: 'nightly' }), { status: 201 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(SubmitForm, { props: { kinds: [{ name: 'short', description: '' }] } })
    await w.find('input[name="when"][value="cron"]').setValue(true)
    await w.find('input[name="schedule-name"]').setValue('nightly')
    await w.find('input[name="cron"]').setValue('every day')
    await w.find('input[name="timezone"]').setValue('Europe/Paris')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.find('[data-test="error-cron"]').text()).toContain('expected 5 to 6 fields')
    await w.find('input[name="cron"]').setValue('0 3 * * *')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.emitted('scheduled')).toEqual([['nightly']])
    expect(w.emitted('submitted')).toBeUndefined()
    const [path, init] = fetch.mock.calls[1] as any
    expect(path).toBe('/api/v1/schedules')
    expect(JSON.parse(init.body)).toEqual({ name: 'nightly', cron: '0 3 * * *', timezone: 'Europe/Paris', missed: 'skip', overlap: 'allow', job: { kind: 'short', partitions: 8, params: {} } })
    expect((w.find('input[name="cron"]').element as HTMLInputElement).value).toBe('')
  })

  it('submits a job to run later', async () => {
    const fetch = vi.fn(async () => new Response(JSON.stringify({ id: 'short_y' }), { status: 202 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(SubmitForm, { props: { kinds: [{ name: 'short', description: '' }] } })
    await w.find('input[name="when"][value="later"]').setValue(true)
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(w.find('[data-test="error-delay"]').text()).toContain('how long from now')
    await w.find('input[name="delay"]').setValue('10m')
    await w.find('select[name="priority"]').setValue(4)
    await w.find('input[name="max_attempts"]').setValue('5')
    await w.find('form').trigger('submit')
    await flushPromises()
    expect(JSON.parse((fetch.mock.calls[0] as any)[1].body)).toEqual({ kind: 'short', partitions: 8, params: {}, priority: 4, max_attempts: 5, delay: '10m' })
  })

  it('routes errors to fields', () => {
    expect(fieldOf('job: partitions must be an integer from 1 to 10, got 0')).toBe('partitions')
    expect(fieldOf('timezone "Mars/Base" is not an IANA time zone')).toBe('timezone')
    expect(fieldOf('schedule "x" exists; delete it first')).toBe('name')
    expect(fieldOf('unknown kind "x"; known kinds: short')).toBe('kind')
    expect(fieldOf('partitions is required')).toBe('partitions')
    expect(fieldOf('max_attempts must be an integer from 1 to 100 (left out: the server\'s --max-attempts), got 0')).toBe('max_attempts')
    expect(fieldOf('the job store is not answering')).toBe('form')
  })
})
