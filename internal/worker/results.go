package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// finished is a task whose result waits to be stored before the task is
// acknowledged.
type finished struct {
	result job.TaskResult
	msg    jetstream.Msg
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

func (p *Pool) store(batch []finished) {
	byJob := map[string][]finished{}
	var order []string
	for _, f := range batch {
		if _, ok := byJob[f.result.Job]; !ok {
			order = append(order, f.result.Job)
		}
		byJob[f.result.Job] = append(byJob[f.result.Job], f)
	}
	type pending struct {
		fut   jetstream.PubAckFuture
		tasks []finished
	}
	var sent []pending
	for _, id := range order {
		tasks := byJob[id]
		results := make([]job.TaskResult, len(tasks))
		for i, f := range tasks {
			results[i] = f.result
		}
		data, _ := json.Marshal(results)
		fut, err := p.cfg.Store.JS.PublishMsgAsync(&nats.Msg{Subject: natsx.ResultSubject + id, Data: data})
		if err != nil {
			p.retry(tasks, err)
			continue
		}
		sent = append(sent, pending{fut, tasks})
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for _, s := range sent {
		select {
		case <-s.fut.Ok():
			for _, f := range s.tasks {
				_ = f.msg.Ack()
			}
		case err := <-s.fut.Err():
			p.retry(s.tasks, err)
		case <-timeout.C:
			p.retry(s.tasks, context.DeadlineExceeded)
		}
	}
}

// retry hands tasks whose results could not be stored back to the queue
// for another attempt.
func (p *Pool) retry(tasks []finished, err error) {
	p.log.Warn("could not store task results; the tasks will run again", "job", tasks[0].result.Job, "tasks", len(tasks), "err", err)
	for _, f := range tasks {
		_ = f.msg.NakWithDelay(time.Second)
	}
}
