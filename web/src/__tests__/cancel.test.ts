import { describe, expect, it } from 'vitest'
import { cancelEvery } from '../api'
import type { CanceledJobs } from '../types'

describe('cancelEvery', () => {
  it('asks again while more matched, and adds up what each request canceled', async () => {
    const answers: CanceledJobs[] = [
      { canceled: ['a', 'b'], more: true },
      { canceled: ['c'], failed: [{ id: 'd', error: 'the store did not answer' }], more: false },
    ]
    const asked: object[] = []
    const got = await cancelEvery({ kind: 'grep' }, async (which) => { asked.push(which); return answers.shift()! })
    expect(asked).toEqual([{ kind: 'grep' }, { kind: 'grep' }])
    expect(got).toEqual({ canceled: 3, failed: ['d: the store did not answer'] })
  })

  it('stops when a request cancels nothing, though more matched', async () => {
    let calls = 0
    const got = await cancelEvery({ state: 'queued' }, async () => {
      calls++
      return { canceled: [], failed: [{ id: 'x', error: 'stuck' }], more: true }
    })
    expect(calls).toBe(1)
    expect(got).toEqual({ canceled: 0, failed: ['x: stuck'] })
  })
})
