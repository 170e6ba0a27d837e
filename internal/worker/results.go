package worker

import (
	"context"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/store"
)

// finished is a task result waiting to be stored; when it is the task's
// last word, its lease is acked once it is stored. A history-only record
// (a lost or retried attempt) has no lease.
type finished struct {
	result job.TaskResult
	lease  *lease
}

// maxResultBatch bounds how many results one stored message carries.
const maxResultBatch = 256

// publishResults stores results and then acknowledges their tasks. Results
// that pile up while a store is in flight go out together, one message per
// job: at low load each result is stored at once, under load the number of
// stream writes per task falls.
func (p *Pool) publishResults() {
	batch := make([]finished, 0, maxResultBatch)
	for f := range p.results {
		batch = append(batch[:0], f)
	drain:
		for len(batch) < maxResultBatch {
			select {
			case f, ok := <-p.results:
				if !ok {
					break drain
				}
				batch = append(batch, f)
			default:
				break drain
			}
		}
		p.store(batch)
	}
}

// store publishes a batch, one message per job, and waits for the acks
// under one deadline: every wait ends by then, whatever happens to the
// others (a partition, a leader election, a full disk).
func (p *Pool) store(batch []finished) {
	byJob := map[string][]finished{}
	var order []string
	for _, f := range batch {
		if _, ok := byJob[f.result.Job]; !ok {
			order = append(order, f.result.Job)
		}
		byJob[f.result.Job] = append(byJob[f.result.Job], f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mr.StoreCallTimeout)
	defer cancel()
	msgs := make([]store.Message, 0, len(order))
	var sent [][]finished
	for _, id := range order {
		tasks := byJob[id]
		results := make([]job.TaskResult, len(tasks))
		for i, f := range tasks {
			results[i] = f.result
		}
		m, err := store.ResultMessage(results)
		if err != nil {
			p.retry(tasks, err)
			continue
		}
		msgs = append(msgs, m)
		sent = append(sent, tasks)
	}
	for i, err := range p.cfg.Store.Results.Publish(ctx, msgs...) {
		if err != nil {
			p.retry(sent[i], err)
			continue
		}
		for _, f := range sent[i] {
			if f.lease != nil {
				f.lease.ack()
			}
		}
	}
}

// retry hands tasks whose results could not be stored back to the queue
// for another run, which is not counted as a failed attempt. History-only
// records are dropped: the task's final result will be stored.
func (p *Pool) retry(tasks []finished, err error) {
	p.log.Warn("could not store task results; the tasks will run again", "job", tasks[0].result.Job, "results", len(tasks), "err", err)
	for _, f := range tasks {
		if f.lease == nil {
			continue
		}
		t, derr := store.DecodeTask(f.lease.m.Data())
		if derr != nil {
			f.lease.hb.stop()
			continue
		}
		t.Runs, t.Failures = f.result.Attempt, f.result.Failures
		if f.result.Error == "" {
			t.Failures = 0
		} else {
			t.Failures--
		}
		// Its history says why it runs again (if the store takes it by
		// then; the channel is this goroutine's own, so never wait on it).
		r := f.result
		r.Outcome, r.Error = job.OutcomeInterrupted, "its result could not be stored: "+err.Error()
		r.Commit, r.Counters, r.Preview = "", nil, nil
		select {
		case p.results <- finished{result: r}:
		default:
		}
		p.later(f.lease, p.backoff(1), t)
	}
}
