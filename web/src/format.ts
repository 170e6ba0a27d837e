// fieldOf says which form field an API error names, to show it there.
export function fieldOf(message: string): string {
  if (/partitions/.test(message)) return 'partitions'
  if (/kind/.test(message)) return 'kind'
  return 'form'
}

// duration formats the time between two instants (or until now).
export function duration(from: string | null, to: string | null, now = Date.now()): string {
  if (!from) return '–'
  const ms = (to ? Date.parse(to) : now) - Date.parse(from)
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`
  return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`
}

export function percent(done: number, total: number): number {
  return total > 0 ? Math.round((100 * done) / total) : 0
}
