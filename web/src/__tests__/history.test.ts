import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import HistoryChart from '../HistoryChart.vue'

afterEach(() => {
  vi.useRealTimers()
  vi.unstubAllGlobals()
})

const minute = (done: number) => ({ at: '2026-12-04T05:00:00Z', tasks_done: done, jobs_succeeded: done ? 1 : 0, jobs_failed: 0, jobs_canceled: 0, queue_depth: 0, tasks_by_kind: done ? { short: done } : {} })

describe('HistoryChart', () => {
  it('reads the last hour again soon after the page saw tasks end, once for a burst of them', async () => {
    vi.useFakeTimers()
    let done = 0
    const fetch = vi.fn(async () => new Response(JSON.stringify({ minutes: [minute(done)] }), { status: 200 }))
    vi.stubGlobal('fetch', fetch)
    const w = mount(HistoryChart, { props: { changes: 0 } })
    await flushPromises()
    expect(fetch).toHaveBeenCalledTimes(1)
    expect(w.text()).toContain('0 tasks done')

    done = 8
    for (const n of [3, 5, 8]) await w.setProps({ changes: n })
    await vi.advanceTimersByTimeAsync(1999)
    expect(fetch).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(1)
    await flushPromises()
    expect(fetch).toHaveBeenCalledTimes(2)
    expect(w.text()).toContain('8 tasks done')
    w.unmount()
  })
})
