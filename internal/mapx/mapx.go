// Package mapx gives back the room of a map's peak. A Go map never
// shrinks: one that held the 200,000 jobs of a burst keeps room for them
// after they finish (a server that ran such a burst held 54 MiB more,
// idle, in two of its coordinator's maps).
package mapx

// minHigh is the peak below which a map is not worth copying.
const minHigh = 1024

// Note raises *high, the most m held since it was last copied, to len(m):
// call it after an insert.
func Note[M ~map[K]V, K comparable, V any](m M, high *int) {
	*high = max(*high, len(m))
}

// Shrunk returns m, or a copy of m with room for what it holds once it
// holds less than a quarter of its peak; it resets *high to the copy's
// size. Call it now and then, not at every delete: a copy costs a walk of
// the map.
func Shrunk[M ~map[K]V, K comparable, V any](m M, high *int) M {
	if *high < minHigh || len(m) >= *high/4 {
		return m
	}
	out := make(M, len(m))
	for k, v := range m {
		out[k] = v
	}
	*high = len(out)
	return out
}
