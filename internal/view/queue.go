package view

import (
	"sort"

	"github.com/mrcluster/mrcluster/internal/job"
)

// The queue's order: the jobs that are queued or running (they may have
// tasks waiting), oldest first, so that GET /api/v1/queue lists the first
// of them without walking, let alone sorting, every unfinished job (with
// 125,000 queued jobs a listing of all took a tenth of a server's CPU when
// polled four times a second). An entry that leaves those states stays in
// the slice, stale, until it reaches the front or until stale entries are
// half of it; jobs finish roughly in the order they were submitted, so
// most leave from the front.

// inQueueOrder reports whether en belongs in v.order.
func inQueueOrder(en *entry) bool {
	return !en.gone && (en.state == codeQueued || en.state == codeRunning)
}

// noteOrder keeps v.order as en changed: wasIn is whether it belonged
// before the change. v.mu must be held for writing.
func (v *View) noteOrder(en *entry, wasIn bool) {
	in := inQueueOrder(en)
	switch {
	case in && !en.ordered():
		en.set(bitOrdered, true)
		v.insertOrder(en)
	case in && !wasIn:
		v.orderStale-- // back in before it left the slice (a retry)
	case !in && wasIn && en.ordered():
		v.orderStale++
		v.trimOrder()
	}
}

// insertOrder puts en in v.order: at the end, where a new job goes, or
// where it belongs.
func (v *View) insertOrder(en *entry) {
	n := len(v.order)
	if v.loading || n == 0 || !less(en, v.order[n-1]) {
		v.order = append(v.order, en)
		return
	}
	i := sort.Search(n, func(i int) bool { return !less(v.order[i], en) })
	v.order = append(v.order, nil)
	copy(v.order[i+1:], v.order[i:])
	v.order[i] = en
}

// trimOrder drops the stale entries at the front of v.order, and every
// stale one once they are half of it.
func (v *View) trimOrder() {
	i := 0
	for i < len(v.order) && !inQueueOrder(v.order[i]) {
		v.order[i].set(bitOrdered, false)
		v.order[i] = nil
		i++
	}
	v.order = v.order[i:]
	v.orderStale -= i
	if v.orderStale > 1024 && 2*v.orderStale > len(v.order) {
		kept := make([]*entry, 0, max(len(v.order)-v.orderStale, 0)) // a fresh array: the old one's front is not held
		for _, en := range v.order {
			if inQueueOrder(en) {
				kept = append(kept, en)
			} else {
				en.set(bitOrdered, false)
			}
		}
		v.order, v.orderStale = kept, 0
	}
}

// sortOrder sorts v.order once the stored records are read at start.
func (v *View) sortOrder() {
	sort.Slice(v.order, func(a, b int) bool { return less(v.order[a], v.order[b]) })
}

// DefaultQueueLimit is how many jobs Queue lists unless asked otherwise.
const DefaultQueueLimit = 1000

// Queue returns the oldest jobs with tasks waiting for a worker, up to
// limit (0: DefaultQueueLimit), oldest first; more reports that there are
// others after them. depth is the number of tasks waiting, of every job.
// It looks at the queued and running jobs in submit order until it has
// limit: those whose tasks all run (at most one per busy worker) are
// passed over.
func (v *View) Queue(limit int) (jobs []QueuedJob, more bool, depth int) {
	if limit <= 0 {
		limit = DefaultQueueLimit
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	jobs = []QueuedJob{}
	for _, en := range v.order {
		j := v.active[en.id].j
		if j == nil && en.member() {
			j = en.j // a group's: its one task waits until it starts
		}
		if j == nil || !inQueueOrder(en) {
			continue
		}
		if j.Group != "" {
			if j.State == job.Queued {
				if len(jobs) == limit {
					more = true
					break
				}
				jobs = append(jobs, QueuedJob{Job: j.ID, Kind: j.Kind, Waiting: 1})
			}
			continue
		}
		if left, running := v.share(j); left > running {
			if len(jobs) == limit {
				more = true
				break
			}
			jobs = append(jobs, QueuedJob{Job: j.ID, Kind: j.Kind, Waiting: left - running})
		}
	}
	return jobs, more, v.left - v.running
}
