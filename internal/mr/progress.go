package mr

import (
	"io"
	"sync/atomic"

	"github.com/mrcluster/mrcluster/internal/job"
)

// progressEvery is how many bytes a task reads between updates of its
// progress.
const progressEvery = 64 << 10

// readProgress counts the bytes a task reads into a share of its
// progress: from base, up to base+span once total bytes were read.
type readProgress struct {
	p          *job.Progress
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
	r.p.Set(r.base + r.span*float64(read)/float64(r.total))
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
