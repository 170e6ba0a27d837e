package natsx

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// QueueCeiling publishes n messages to a file-backed work-queue stream
// and consumes and acks them with a pull consumer, as the cluster's tasks
// are, on an embedded server with its data in dir, and returns messages per
// second for the whole round: the ceiling of the cluster's task rate,
// which the benchmark prints beside it.
func QueueCeiling(ctx context.Context, dir string, n int) (float64, error) {
	js, stop, err := rawServer(dir)
	if err != nil {
		return 0, err
	}
	defer stop()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return 0, err
	}
	payload := []byte(`{"job":"noop_01jd0000000000000000000000","kind":"noop","partition":1234,"partitions":10000}`)
	start := time.Now()
	done := make(chan struct{})
	var got int
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		got++
		if got == n {
			close(done)
		}
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	for i := range n {
		if _, err := js.PublishAsync(fmt.Sprintf("raw.%d", i%16), payload); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// JobCeiling is the rate of the fewest store operations a small job makes
// with the cluster's durability, on the same embedded server, with nothing
// else: n jobs from clients concurrent clients, each job a record created in
// a file-backed key-value bucket and a task published to a work-queue
// stream, both acknowledged before the client goes on (a submit's 2xx);
// workers take the tasks from one pull consumer, write the record finished
// with a compare-and-set and ack the task; a watch of the bucket, as a read
// model's, counts the finished records. Jobs per second, from the first
// submit to the last finished record seen: the ceiling of small jobs,
// before HTTP, JSON, the task's result message and the archive. With batch
// over 1 a client submits that many jobs at once: their records' creates
// (compare-and-set publishes) and then their tasks go out as asynchronous
// publishes, and it waits for all their acknowledgements.
func JobCeiling(ctx context.Context, dir string, n, clients, batch int) (float64, error) {
	js, stop, err := rawServer(dir)
	if err != nil {
		return 0, err
	}
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWJOBS", Subjects: []string{"rawjob.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return 0, err
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "rawjobs", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	// A record about the size of a small job's.
	queued := []byte(`{"id":"noop_01KBM3R2W6Y8Z9A0B1C2D3E4F5","kind":"noop","state":"queued","partitions":1,"params":{"ms":0},` +
		`"created_at":"2026-12-03T10:00:00.000000000Z","updated_at":"2026-12-03T10:00:00.000000000Z","epoch":1,"log_in_record":true,"priority":2}`)
	finished := []byte(`{"id":"noop_01KBM3R2W6Y8Z9A0B1C2D3E4F5","kind":"noop","state":"succeeded","partitions":1,"params":{"ms":0},` +
		`"created_at":"2026-12-03T10:00:00.000000000Z","updated_at":"2026-12-03T10:00:00.001000000Z","epoch":1,"log_in_record":true,` +
		`"priority":2,"results":[[0,1]],"result":0,"task_log":[{"task":0,"attempt":1,"worker":"w-1","state":"succeeded","ms":0}]}`)

	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, err
	}
	defer func() { _ = w.Stop() }()
	done := make(chan struct{})
	go func() {
		seen := 0
		for e := range w.Updates() {
			if e != nil && e.Revision() > 0 && len(e.Value()) == len(finished) {
				if seen++; seen == n {
					close(done)
					return
				}
			}
		}
	}()

	msgs, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return 0, err
	}
	defer msgs.Stop()
	tasks := make(chan jetstream.Msg, 256)
	failed := make(chan error, 2*clients)
	go func() {
		defer close(tasks)
		for {
			m, err := msgs.Next()
			if err != nil {
				return
			}
			tasks <- m
		}
	}()
	for range 64 { // the workers, as many as a coordinator applies results at once
		go func() {
			for m := range tasks {
				key, rev, _ := strings.Cut(string(m.Data()), " ")
				r, _ := strconv.ParseUint(rev, 10, 64)
				if _, err := kv.Update(ctx, key, finished, r); err != nil {
					failed <- fmt.Errorf("finish %s: %w", key, err)
					return
				}
				if err := m.Ack(); err != nil {
					failed <- fmt.Errorf("ack %s: %w", key, err)
					return
				}
			}
		}()
	}
	submit := func(keys []string) error {
		if len(keys) == 1 {
			rev, err := kv.Create(ctx, keys[0], queued)
			if err == nil {
				_, err = js.Publish(ctx, "rawjob."+keys[0], []byte(keys[0]+" "+strconv.FormatUint(rev, 10)))
			}
			return err
		}
		var err error
		acks := make([]jetstream.PubAckFuture, len(keys))
		for i, key := range keys {
			m := nats.NewMsg("$KV.rawjobs." + key)
			m.Data = queued
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
			if acks[i], err = js.PublishMsgAsync(m); err != nil {
				return err
			}
		}
		tasks := make([]jetstream.PubAckFuture, len(keys))
		for i, a := range acks {
			select {
			case ack := <-a.Ok():
				if tasks[i], err = js.PublishAsync("rawjob."+keys[i], []byte(keys[i]+" "+strconv.FormatUint(ack.Sequence, 10))); err != nil {
					return err
				}
			case err := <-a.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, a := range tasks {
			select {
			case <-a.Ok():
			case err := <-a.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	start := time.Now()
	for i := range clients {
		go func() {
			var keys []string
			for j := i; j < n; j += clients {
				if keys = append(keys, fmt.Sprintf("j%d", j)); len(keys) < batch && j+clients < n {
					continue
				}
				if err := submit(keys); err != nil {
					failed <- fmt.Errorf("submit %s: %w", keys[0], err)
					return
				}
				keys = keys[:0]
			}
		}()
	}
	select {
	case <-done:
		return float64(n) / time.Since(start).Seconds(), nil
	case err := <-failed:
		return 0, err
	case <-ctx.Done():
		return 0, fmt.Errorf("jobs not finished: %w", ctx.Err())
	}
}

// GroupedJobs is the substrate of a design that stores several small jobs
// per write, measured for the benchmark beside the cluster (it is not how
// the cluster stores jobs): concurrent submits are gathered while a write
// is under way, and a group (up to 256 submits, about 256 KiB) is one message of a
// file-backed work-queue stream, acknowledged before any of its submits
// is answered; a worker takes a group whole and writes its finished
// records as one message of an archive stream, then acks the group; a
// reader of the archive counts the finished records. Nothing else: no
// read model, no retry, no cancel, no per-job history.
type GroupedJobs struct {
	js    jetstream.JetStream
	queue chan groupedJob
	seen  atomic.Int64
	more  chan struct{} // a token when seen grew
	stop  func()
}

type groupedJob struct {
	rec  []byte
	done chan error
}

// StartGroupedJobs starts GroupedJobs on an embedded server with its data
// in dir.
func StartGroupedJobs(ctx context.Context, dir string) (*GroupedJobs, error) {
	js, stop, err := rawServer(dir)
	if err != nil {
		return nil, err
	}
	g := &GroupedJobs{js: js, queue: make(chan groupedJob, 1024), more: make(chan struct{}, 1)}
	var stops []func()
	g.stop = func() {
		for _, s := range stops {
			s()
		}
		close(g.queue)
		stop()
	}
	fail := func(err error) (*GroupedJobs, error) {
		g.stop()
		return nil, err
	}
	tasks, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GROUPS", Subjects: []string{"group.task"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		return fail(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GROUPARCHIVE", Subjects: []string{"group.done"}, Storage: jetstream.FileStorage}); err != nil {
		return fail(err)
	}
	workers, err := tasks.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return fail(err)
	}
	wc, err := workers.Consume(func(m jetstream.Msg) {
		finished := bytes.ReplaceAll(m.Data(), []byte(`"queued"`), []byte(`"succeeded"`))
		if _, err := js.Publish(ctx, "group.done", finished); err == nil {
			_ = m.Ack()
		}
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		return fail(err)
	}
	stops = append(stops, wc.Stop)
	archive, err := js.OrderedConsumer(ctx, "GROUPARCHIVE", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fail(err)
	}
	ac, err := archive.Consume(func(m jetstream.Msg) {
		g.seen.Add(int64(bytes.Count(m.Data(), []byte("\n"))))
		select {
		case g.more <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fail(err)
	}
	stops = append(stops, ac.Stop)
	for range 4 { // writes under way at once
		go g.commit(ctx)
	}
	return g, nil
}

// commit writes the submits waiting in the queue, a group at a time.
func (g *GroupedJobs) commit(ctx context.Context) {
	var b bytes.Buffer
	for first := range g.queue {
		group, size := []groupedJob{first}, len(first.rec)
	gather:
		for len(group) < 256 && size < 256<<10 { // well under a message's 1 MiB
			select {
			case j, ok := <-g.queue:
				if !ok {
					break gather
				}
				group, size = append(group, j), size+len(j.rec)
			default:
				break gather
			}
		}
		b.Reset()
		for _, j := range group {
			b.Write(j.rec)
			b.WriteByte('\n')
		}
		_, err := g.js.Publish(ctx, "group.task", b.Bytes())
		for _, j := range group {
			j.done <- err
		}
	}
}

// Submit stores a job's record (one line of JSON, its state "queued"),
// grouped with the submits under way.
func (g *GroupedJobs) Submit(ctx context.Context, rec []byte) error {
	j := groupedJob{rec, make(chan error, 1)}
	select {
	case g.queue <- j:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Await waits until n records have been archived finished.
func (g *GroupedJobs) Await(ctx context.Context, n int) error {
	for g.seen.Load() < int64(n) {
		select {
		case <-g.more:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d jobs finished: %w", g.seen.Load(), n, ctx.Err())
		}
	}
	return nil
}

// Stop stops the pipeline and its server; no Submit may be under way.
func (g *GroupedJobs) Stop() { g.stop() }

// rawServer starts an embedded server with its data in dir, for a
// measure of the substrate alone, and connects to it; stop closes both.
func rawServer(dir string) (js jetstream.JetStream, stop func(), err error) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, err
	}
	c, err := emb.Connect("bench")
	if err == nil {
		if js, err = jetstream.New(c.nc); err != nil {
			c.Close()
		}
	}
	if err != nil {
		_ = emb.Stop(context.Background())
		return nil, nil, err
	}
	return js, func() {
		c.Close()
		_ = emb.Stop(context.Background())
	}, nil
}
