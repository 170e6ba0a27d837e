import { afterEach, describe, expect, it, vi } from 'vitest'
import { api, RequestError } from '../api'

afterEach(() => vi.unstubAllGlobals())

describe('api', () => {
  it('announces a refusal for want of a token, so the page can ask for one', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response(
      JSON.stringify({ error: { code: 'unauthorized', message: 'this server needs a token for POST /api/v1/jobs' } }), { status: 401 })))
    const seen = vi.fn()
    window.addEventListener('mrcluster:unauthorized', seen)
    await expect(api.submit('short', 1)).rejects.toBeInstanceOf(RequestError)
    expect(seen).toHaveBeenCalledTimes(1)
    window.removeEventListener('mrcluster:unauthorized', seen)
  })
})
