package view

import (
	"maps"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
)

// HistoryMinutes is how many minutes of history a view keeps.
const HistoryMinutes = 60

// Minute is what the cluster did in one minute, as this server's view saw
// it: the dashboard's charts over the last hour, which a page reload does
// not lose.
type Minute = client.Minute

// history is a ring of the last HistoryMinutes minutes. v.mu guards it.
type history struct {
	minutes [HistoryMinutes]Minute
}

// at returns the bucket of the minute of t, emptied when it last held an
// older minute.
func (h *history) at(t time.Time) *Minute {
	start := t.Truncate(time.Minute)
	m := &h.minutes[start.Unix()/60%HistoryMinutes]
	if !m.At.Equal(start) {
		*m = Minute{At: start}
	}
	return m
}

// note records the change of a job from prev (nil: new) to j, and the
// queue's depth after it. v.mu is held.
func (h *history) note(now time.Time, prev, j *job.Job, depth int) {
	m := h.at(now)
	done := j.Done + j.ReduceDone
	if prev != nil {
		done -= prev.Done + prev.ReduceDone
	}
	if done > 0 {
		m.TasksDone += done
		if m.TasksByKind == nil {
			m.TasksByKind = map[string]int{}
		}
		m.TasksByKind[j.Kind] += done
	}
	if prev == nil || prev.State != j.State {
		switch j.State {
		case job.Succeeded:
			m.JobsSucceeded++
		case job.Failed:
			m.JobsFailed++
		case job.Canceled:
			m.JobsCanceled++
		}
	}
	m.QueueDepth = max(m.QueueDepth, depth)
}

// History returns the last HistoryMinutes minutes up to now, oldest first,
// minutes without activity included (zero, with the queue's depth now for
// the current one).
func (v *View) History(now time.Time) []Minute {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.hist.at(now).QueueDepth = max(v.hist.at(now).QueueDepth, v.left-v.running)
	out := make([]Minute, HistoryMinutes)
	start := now.Truncate(time.Minute).Add(-(HistoryMinutes - 1) * time.Minute)
	for i := range out {
		t := start.Add(time.Duration(i) * time.Minute)
		m := v.hist.minutes[t.Unix()/60%HistoryMinutes]
		if !m.At.Equal(t) {
			m = Minute{At: t}
		}
		m.TasksByKind = maps.Clone(m.TasksByKind)
		out[i] = m
	}
	return out
}
