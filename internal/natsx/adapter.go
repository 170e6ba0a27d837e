package natsx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// The JetStream side of package store's ports: what every other package
// of mrcluster reaches its state through.

// ports makes the store.Store of a set of JetStream handles.
func ports(nc *nats.Conn, s *Store) *store.Store {
	return &store.Store{
		Jobs:        &store.Jobs{KV: kv{s.Jobs}},
		Workers:     kv{s.Workers},
		Datasets:    kv{s.Datasets},
		Idempotency: kv{s.Idempotency},
		Health:      kv{s.Health},
		Tasks:       &stream{js: s.JS, nc: nc, st: s.Tasks, subject: TaskSubject, consumer: WorkersConsumer},
		Results:     &stream{js: s.JS, nc: nc, st: s.Results, subject: ResultSubject, consumer: CoordConsumer},
		Blocks:      blobs{s.Blocks},
		Shuffle:     blobs{s.Shuffle},
		Output:      blobs{s.Output},
		Kinds:       kv{s.Kinds},
		Modules:     blobs{s.Modules},
		Schedules:   kv{s.Schedules},
		Notices:     &store.Notes{N: notices{nc}},
	}
}

// storeErr turns JetStream's errors into package store's.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrObjectNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	case IsConflict(err):
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %w", store.ErrNotStored, err)
	}
	return err
}

type kv struct{ kv jetstream.KeyValue }

func (k kv) Get(ctx context.Context, key string) (store.Entry, error) {
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return store.Entry{}, storeErr(err)
	}
	return store.Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}, nil
}

func (k kv) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.kv.Create(ctx, key, value)
	return rev, storeErr(err)
}

func (k kv) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	rev, err := k.kv.Update(ctx, key, value, rev)
	return rev, storeErr(err)
}

func (k kv) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.kv.Put(ctx, key, value)
	return rev, storeErr(err)
}

// Delete purges the key: its history goes, and watchers see it removed.
func (k kv) Delete(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev > 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := k.kv.Purge(ctx, key, opts...)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return storeErr(err)
}

func (k kv) Keys(ctx context.Context) ([]string, error) {
	keys, err := k.kv.ListKeys(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	var out []string
	for key := range keys.Keys() {
		out = append(out, key)
	}
	return out, nil
}

func (k kv) Watch(ctx context.Context) (store.Watcher, error) {
	w, err := k.kv.WatchAll(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &watcher{w: w, ch: make(chan *store.Entry), stop: make(chan struct{}), done: make(chan struct{})}
	go out.run(ctx)
	return out, nil
}

type watcher struct {
	w    jetstream.KeyWatcher
	ch   chan *store.Entry
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func (w *watcher) Updates() <-chan *store.Entry { return w.ch }

// Stop ends the watch, whether or not anyone still reads its updates (a
// reader that stopped at the end of the stored entries does not).
func (w *watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	_ = w.w.Stop()
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	defer close(w.ch)
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-w.w.Updates():
			if !ok {
				return
			}
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		}
		var out *store.Entry
		if e != nil {
			out = &store.Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut}
		}
		select {
		case w.ch <- out:
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// stream is a JetStream stream and its shared durable consumer.
type stream struct {
	js       jetstream.JetStream
	nc       *nats.Conn
	st       jetstream.Stream
	subject  string // + key
	consumer string

	mu   sync.Mutex
	cons jetstream.Consumer // bound at the first use
}

// shared returns the stream's shared consumer.
func (s *stream) shared(ctx context.Context) (jetstream.Consumer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cons == nil {
		cons, err := s.st.Consumer(ctx, s.consumer)
		if err != nil {
			return nil, fmt.Errorf("open consumer %s: %w", s.consumer, storeErr(err))
		}
		s.cons = cons
	}
	return s.cons, nil
}

// Publish publishes every message at once and waits for the acks under
// ctx's deadline. A message no stream answered was not stored, and is
// published again while the deadline allows (a leader being elected).
func (s *stream) Publish(ctx context.Context, msgs ...store.Message) []error {
	errs := make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		futures[i], errs[i] = s.js.PublishMsgAsync(s.msg(m))
	}
	for i, f := range futures {
		for f != nil {
			select {
			case <-f.Ok():
				f = nil
			case err := <-f.Err():
				errs[i], f = storeErr(err), nil
				if !errors.Is(errs[i], store.ErrNotStored) {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
					if f, err = s.js.PublishMsgAsync(s.msg(msgs[i])); err != nil {
						errs[i], f = storeErr(err), nil
					} else {
						errs[i] = nil
					}
				}
			case <-ctx.Done():
				errs[i], f = fmt.Errorf("no acknowledgement from the store: %w", ctx.Err()), nil
			}
		}
	}
	return errs
}

func (s *stream) msg(m store.Message) *nats.Msg {
	out := &nats.Msg{Subject: s.subject + m.Key, Data: m.Data}
	if m.ID != "" {
		out.Header = nats.Header{jetstream.MsgIDHeader: {m.ID}}
	}
	return out
}

// Send publishes without waiting for the stream's answer: core NATS.
func (s *stream) Send(m store.Message) error {
	return s.nc.PublishMsg(s.msg(m))
}

func (s *stream) Purge(ctx context.Context, key string) error {
	return storeErr(s.st.Purge(ctx, jetstream.WithPurgeSubject(s.subject+key)))
}

// Fetch sends one pull request: after a change of the consumer's leader
// in a cluster, the next one goes to the new leader.
func (s *stream) Fetch(ctx context.Context, max int, wait time.Duration, fn func(store.Delivery)) error {
	cons, err := s.shared(ctx)
	if err != nil {
		return err
	}
	batch, err := cons.Fetch(max, jetstream.FetchMaxWait(wait))
	if err != nil {
		return storeErr(err)
	}
	for m := range batch.Messages() {
		fn(delivery{m: m, prefix: s.subject})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return storeErr(err)
	}
	return nil
}

// Read reads every message of key through a consumer of its own, deleted
// after the read (ordered consumers outlived their reads, and 2,000 reads
// in a minute hit the limit of consumers).
func (s *stream) Read(ctx context.Context, key string, limit int) ([][]byte, error) {
	cons, err := s.st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     s.subject + key,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		Replicas:          1,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, storeErr(err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	var out [][]byte
	// The read is whole or an error: a fetch that brings nothing while
	// messages are pending (a busy cluster) is tried again, for a while.
	for left := min(int(info.NumPending), limit); left > 0; {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %d of the messages of %s before the store stopped answering: %w", len(out), key, ctx.Err())
		}
		batch, err := cons.Fetch(min(left, 500), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, storeErr(err)
		}
		for m := range batch.Messages() {
			out = append(out, m.Data())
			left--
		}
	}
	return out, nil
}

func (s *stream) Info(ctx context.Context) (store.StreamInfo, error) {
	cons, err := s.shared(ctx)
	if err != nil {
		return store.StreamInfo{}, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return store.StreamInfo{}, storeErr(err)
	}
	return store.StreamInfo{Waiting: int(info.NumPending), Leased: info.NumAckPending, AckWait: info.Config.AckWait}, nil
}

type delivery struct {
	m      jetstream.Msg
	prefix string
}

func (d delivery) Key() string  { return strings.TrimPrefix(d.m.Subject(), d.prefix) }
func (d delivery) Data() []byte { return d.m.Data() }

func (d delivery) Delivered() int {
	if meta, err := d.m.Metadata(); err == nil {
		return int(meta.NumDelivered)
	}
	return 1
}

func (d delivery) Ack() error { return d.m.Ack() }

func (d delivery) Nak(delay time.Duration) error {
	if delay <= 0 {
		return d.m.Nak()
	}
	return d.m.NakWithDelay(delay)
}

func (d delivery) Term() error       { return d.m.Term() }
func (d delivery) InProgress() error { return d.m.InProgress() }

type blobs struct{ os jetstream.ObjectStore }

func (b blobs) Put(ctx context.Context, name string, r io.Reader) error {
	_, err := b.os.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
	return storeErr(err)
}

func (b blobs) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	r, err := b.os.Get(ctx, name)
	if err != nil {
		return nil, storeErr(err)
	}
	return r, nil
}

func (b blobs) GetBytes(ctx context.Context, name string) ([]byte, error) {
	data, err := b.os.GetBytes(ctx, name)
	return data, storeErr(err)
}

func (b blobs) Size(ctx context.Context, name string) (int64, error) {
	info, err := b.os.GetInfo(ctx, name)
	if err != nil {
		return 0, storeErr(err)
	}
	return int64(info.Size), nil
}

func (b blobs) Delete(ctx context.Context, name string) error {
	if err := b.os.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	return nil
}

type notices struct{ nc *nats.Conn }

func (n notices) Publish(subject string, data []byte) error {
	return n.nc.Publish(subject, data)
}

func (n notices) Subscribe(prefix, group string, fn func(string, []byte)) (func(), error) {
	handler := func(m *nats.Msg) { fn(m.Subject, m.Data) }
	var sub *nats.Subscription
	var err error
	if group != "" {
		sub, err = n.nc.QueueSubscribe(prefix+">", group, handler)
	} else {
		sub, err = n.nc.Subscribe(prefix+">", handler)
	}
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
