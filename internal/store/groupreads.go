package store

import (
	"context"
	"sync"

	"github.com/mrcluster/mrcluster/internal/job"
)

// GroupReads reads each group's record (job.Job.Members) once for the
// reads of many of its jobs at once: a page of jobs, a batch answered
// again. Jobs must be set.
type GroupReads struct {
	Jobs *Jobs

	mu sync.Mutex
	m  map[string]*groupRead
}

type groupRead struct {
	once sync.Once
	g    *job.Job
	rev  uint64
	err  error
}

// Get returns group id's record and revision, read at its first Get.
func (r *GroupReads) Get(ctx context.Context, id string) (*job.Job, uint64, error) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]*groupRead{}
	}
	gr := r.m[id]
	if gr == nil {
		gr = &groupRead{}
		r.m[id] = gr
	}
	r.mu.Unlock()
	gr.once.Do(func() { gr.g, gr.rev, gr.err = r.Jobs.Get(ctx, id) })
	return gr.g, gr.rev, gr.err
}
