// Package memstore keeps a store.Store in memory: what the unit tests of
// the coordinator, the workers and the read model run on, in milliseconds.
// It behaves as the JetStream store does in every way package storetest
// checks: revisions and compare-and-set, watches, leases that run out,
// redelivery counts, purges, deduplication, notices.
package memstore

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
)

// Config tunes a memory store.
type Config struct {
	// AckWait is how long a task may be held without a sign of life
	// (30 s when zero).
	AckWait time.Duration
}

// New returns an empty store.
func New(cfg Config) *store.Store {
	ackWait := cfg.AckWait
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	return &store.Store{
		Jobs:        &store.Jobs{KV: NewKV()},
		Workers:     NewKV(),
		Datasets:    NewKV(),
		Idempotency: NewKV(),
		Health:      NewKV(),
		Tasks:       NewStream(ackWait, true),
		Results:     NewStream(10*time.Second, false),
		Blocks:      NewBlobs(),
		Shuffle:     NewBlobs(),
		Output:      NewBlobs(),
		Kinds:       NewKV(),
		Modules:     NewBlobs(),
		Schedules:   NewKV(),
		KindState:   NewKV(),
		Tokens:      NewKV(),
		Notices:     &store.Notes{N: NewNotices()},
	}
}

// KV is a bucket in memory.
type KV struct {
	mu       sync.Mutex
	rev      uint64
	entries  map[string]store.Entry
	watchers map[*watcher]struct{}
}

// NewKV returns an empty bucket.
func NewKV() *KV {
	return &KV{entries: map[string]store.Entry{}, watchers: map[*watcher]struct{}{}}
}

// Get implements store.KV.
func (kv *KV) Get(ctx context.Context, key string) (store.Entry, error) {
	if err := ctx.Err(); err != nil {
		return store.Entry{}, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	e, ok := kv.entries[key]
	if !ok {
		return store.Entry{}, store.ErrNotFound
	}
	e.Value = bytes.Clone(e.Value)
	return e, nil
}

// CreateAll creates the keys one after the other (store.KVCreateAll).
func (kv *KV) CreateAll(ctx context.Context, keys []string, values [][]byte) ([]uint64, []error) {
	revs, errs := make([]uint64, len(keys)), make([]error, len(keys))
	for i, key := range keys {
		revs[i], errs[i] = kv.Create(ctx, key, values[i])
	}
	return revs, errs
}

// Create implements store.KV.
func (kv *KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	return kv.write(ctx, key, value, func(e store.Entry, ok bool) bool { return !ok })
}

// Update implements store.KV.
func (kv *KV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return kv.write(ctx, key, value, func(e store.Entry, ok bool) bool { return ok && e.Revision == rev })
}

// Put implements store.KV.
func (kv *KV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return kv.write(ctx, key, value, func(store.Entry, bool) bool { return true })
}

func (kv *KV) write(ctx context.Context, key string, value []byte, ok func(store.Entry, bool) bool) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	old, exists := kv.entries[key]
	if !ok(old, exists) {
		return 0, store.ErrConflict
	}
	kv.rev++
	e := store.Entry{Key: key, Value: bytes.Clone(value), Revision: kv.rev}
	kv.entries[key] = e
	kv.notify(e)
	return kv.rev, nil
}

// Delete implements store.KV.
// Forget has nothing to do: a deleted key leaves no marker here.
func (kv *KV) Forget(ctx context.Context, _ ...string) error { return ctx.Err() }

func (kv *KV) Delete(ctx context.Context, key string, rev uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	old, ok := kv.entries[key]
	if !ok {
		if rev > 0 {
			return store.ErrConflict
		}
		return nil
	}
	if rev > 0 && old.Revision != rev {
		return store.ErrConflict
	}
	delete(kv.entries, key)
	kv.rev++
	kv.notify(store.Entry{Key: key, Revision: kv.rev, Deleted: true})
	return nil
}

// Keys implements store.KV.
func (kv *KV) Keys(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	out := make([]string, 0, len(kv.entries))
	for k := range kv.entries {
		out = append(out, k)
	}
	return out, nil
}

// Entries implements store.KV.
func (kv *KV) Entries(ctx context.Context, prefix string) ([]store.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	kv.mu.Lock()
	var out []store.Entry
	for k, e := range kv.entries {
		if strings.HasPrefix(k, prefix) {
			e.Value = bytes.Clone(e.Value)
			out = append(out, e)
		}
	}
	kv.mu.Unlock()
	slices.SortFunc(out, func(a, b store.Entry) int { return cmp.Compare(a.Revision, b.Revision) })
	return out, nil
}

// DeletePrefix implements store.KV.
func (kv *KV) DeletePrefix(ctx context.Context, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	for k := range kv.entries {
		if strings.HasPrefix(k, prefix) {
			delete(kv.entries, k)
		}
	}
	return nil
}

// Watch implements store.KV.
func (kv *KV) Watch(ctx context.Context) (store.Watcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w := &watcher{ch: make(chan *store.Entry, 64), kv: kv, wake: make(chan struct{}, 1), done: make(chan struct{})}
	ctx, w.cancel = context.WithCancel(ctx)
	w.wake <- struct{}{}
	kv.mu.Lock()
	for _, e := range kv.entries {
		w.queue = append(w.queue, e)
	}
	// In the order of their last write, as JetStream sends them.
	slices.SortFunc(w.queue, func(a, b store.Entry) int { return cmp.Compare(a.Revision, b.Revision) })
	w.queue = append(w.queue, store.Entry{}) // nil: the initial values are sent
	kv.watchers[w] = struct{}{}
	kv.mu.Unlock()
	go w.run(ctx)
	return w, nil
}

// notify queues e for every watcher; kv.mu is held.
func (kv *KV) notify(e store.Entry) {
	e.Value = bytes.Clone(e.Value)
	for w := range kv.watchers {
		w.mu.Lock()
		w.queue = append(w.queue, e)
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// watcher sends a bucket's changes in order, never blocking the writers:
// changes wait in a queue of its own.
type watcher struct {
	kv     *KV
	ch     chan *store.Entry
	mu     sync.Mutex
	queue  []store.Entry
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func (w *watcher) Updates() <-chan *store.Entry { return w.ch }

func (w *watcher) Stop() {
	w.cancel()
	<-w.done
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	defer close(w.ch)
	defer func() {
		w.kv.mu.Lock()
		delete(w.kv.watchers, w)
		w.kv.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			if len(w.queue) == 0 {
				w.mu.Unlock()
				break
			}
			e := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			var out *store.Entry
			if e.Key != "" {
				out = &e
			}
			select {
			case w.ch <- out:
			case <-ctx.Done():
				return
			}
		}
	}
}

// Blobs is an object store in memory.
type Blobs struct {
	mu   sync.Mutex
	objs map[string][]byte
}

// NewBlobs returns an empty object store.
func NewBlobs() *Blobs { return &Blobs{objs: map[string][]byte{}} }

// Put implements store.Blobs.
func (b *Blobs) Put(ctx context.Context, name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objs[name] = data
	return nil
}

// Get implements store.Blobs.
func (b *Blobs) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	data, err := b.GetBytes(ctx, name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// GetBytes implements store.Blobs.
func (b *Blobs) GetBytes(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.objs[name]
	if !ok {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(data), nil
}

// GetSmall implements store.Blobs.
func (b *Blobs) GetSmall(ctx context.Context, name string, max int64) ([]byte, int64, error) {
	data, err := b.GetBytes(ctx, name)
	if err != nil || int64(len(data)) > max {
		return nil, int64(len(data)), err
	}
	return data, int64(len(data)), nil
}

// Size implements store.Blobs.
func (b *Blobs) Size(ctx context.Context, name string) (int64, error) {
	data, err := b.GetBytes(ctx, name)
	return int64(len(data)), err
}

// Delete implements store.Blobs.
func (b *Blobs) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.objs, name)
	return nil
}

// Names lists the stored objects whose name starts with prefix: what a
// test checks a finished job left behind.
func (b *Blobs) Names(prefix string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for n := range b.objs {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// Notices delivers notices in memory, each to its subscribers in their
// own goroutine, in order.
type Notices struct {
	mu   sync.Mutex
	subs map[*sub]struct{}
}

type sub struct {
	prefix, group string
	fn            func(string, []byte)
	ch            chan [2]string
	done          chan struct{}
}

// NewNotices returns notices with no subscriber.
func NewNotices() *Notices { return &Notices{subs: map[*sub]struct{}{}} }

// Publish implements store.Notices. A subscriber 1,024 notices behind
// misses the next ones, as a slow NATS subscriber would.
func (n *Notices) Publish(subject string, data []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	groups := map[string]bool{}
	for s := range n.subs {
		if !strings.HasPrefix(subject, s.prefix) {
			continue
		}
		if s.group != "" {
			if groups[s.group] {
				continue
			}
			groups[s.group] = true
		}
		select {
		case s.ch <- [2]string{subject, string(data)}:
		default:
		}
	}
	return nil
}

// Subscribe implements store.Notices.
func (n *Notices) Subscribe(prefix, group string, fn func(string, []byte)) (func(), error) {
	s := &sub{prefix: prefix, group: group, fn: fn, ch: make(chan [2]string, 1024), done: make(chan struct{})}
	n.mu.Lock()
	n.subs[s] = struct{}{}
	n.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		defer close(s.done)
		for {
			select {
			case m := <-s.ch:
				s.fn(m[0], []byte(m[1]))
			case <-stopped:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.subs, s)
			n.mu.Unlock()
			close(stopped)
			<-s.done
		})
	}, nil
}
