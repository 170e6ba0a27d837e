package job

import (
	"context"
	"math"
	"sync/atomic"
)

// Progress is how far a running task has come, from 0 to 1, for its
// worker's status (the dashboard's bar under a worker's task). A data
// task's is set by the engine (internal/mr): a map by the bytes of its
// split it has read, a reduce half by the map outputs it has downloaded
// and half by the bytes of them it has merged; the simulated kinds set
// theirs by the time slept. A task that sets none shows none.
type Progress struct{ bits atomic.Uint64 }

// Load returns the fraction done, and whether the task set any.
func (p *Progress) Load() (float64, bool) {
	b := p.bits.Load()
	if b == 0 {
		return 0, false
	}
	return math.Float64frombits(b) - 1, true
}

// Set stores fraction f, clipped to 0..1 (kept as f+1, so that the zero
// value says nothing was set). A nil Progress ignores it.
func (p *Progress) Set(f float64) {
	if p == nil {
		return
	}
	p.bits.Store(math.Float64bits(1 + min(max(f, 0), 1)))
}

type progressKey struct{}

// WithProgress returns ctx carrying p, which the task run under it sets.
func WithProgress(ctx context.Context, p *Progress) context.Context {
	return context.WithValue(ctx, progressKey{}, p)
}

// ProgressOf returns the Progress the task run with ctx sets (nil: none,
// whose Set does nothing).
func ProgressOf(ctx context.Context) *Progress {
	p, _ := ctx.Value(progressKey{}).(*Progress)
	return p
}
