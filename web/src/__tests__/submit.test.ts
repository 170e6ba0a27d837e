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

  it('routes errors to fields', () => {
    expect(fieldOf('unknown kind "x"; known kinds: short')).toBe('kind')
    expect(fieldOf('partitions is required')).toBe('partitions')
    expect(fieldOf('the job store is not answering')).toBe('form')
  })
})
