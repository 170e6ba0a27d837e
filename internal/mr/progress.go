package mr

import (
	"context"
	"io"
	"math"
	"sync/atomic"
)

// Progress is how far a running task has come, from 0 to 1, for the
// worker's status (the dashboard's bar under a worker's task): a map task
// by the bytes of its split it has read, a reduce task half by the map
// outputs it has downloaded and half by the bytes of them it has merged
// (Hadoop's reduce progress counts its copy, sort and reduce phases
// likewise). A task of a kind that reads no data has none.
type Progress struct{ bits atomic.Uint64 }

// Load returns the fraction done, and whether the task said any.
func (p *Progress) Load() (float64, bool) {
	b := p.bits.Load()
	if b == 0 {
		return 0, false
	}
	return math.Float64frombits(b) - 1, true
}

// set stores fraction f (clipped to 0..1): kept as f+1, so that the zero
// value says nothing was set.
func (p *Progress) set(f float64) {
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

func progressOf(ctx context.Context) *Progress {
	p, _ := ctx.Value(progressKey{}).(*Progress)
	return p
}

// progressEvery is how many bytes a task reads between updates of its
// progress.
const progressEvery = 64 << 10

// readProgress counts the bytes a task reads into a share of its
// progress: from base, up to base+span once total bytes were read.
type readProgress struct {
	p          *Progress
	total      int64
	base, span float64
	read, last atomic.Int64
}

func (r *readProgress) add(n int64) {
	read := r.read.Add(n)
	if r.p == nil || r.total <= 0 || read-r.last.Load() < progressEvery && read < r.total {
		return
	}
	r.last.Store(read)
	r.p.set(r.base + r.span*float64(read)/float64(r.total))
}

// counted is a reader whose reads are counted into a readProgress.
type counted struct {
	r  io.Reader
	rp *readProgress
}

func (c counted) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.rp.add(int64(n))
	return n, err
}
