package mr

import (
	"io"

	"github.com/mrcluster/mrcluster/internal/job"
)

// progressEvery is how many bytes a task reads between updates of its
// progress.
const progressEvery = 64 << 10

// readProgress counts the bytes a task reads into a share of its
// progress: from base, up to base+span once total bytes were read. One
// goroutine reads through it (a map's split, a reduce's merge).
type readProgress struct {
	p          *job.Progress
	total      int64
	base, span float64
	read, last int64
}

func (r *readProgress) add(n int64) {
	r.read += n
	if r.p == nil || r.total <= 0 || r.read-r.last < progressEvery && r.read < r.total {
		return
	}
	r.last = r.read
	r.p.Set(r.base + r.span*float64(r.read)/float64(r.total))
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
