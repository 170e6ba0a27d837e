package natsx

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// The JetStream side of package store's ports: what every other package
// of mrcluster reaches its state through.

// ports makes the store.Store of a set of JetStream handles.
func ports(nc *nats.Conn, s *Store) *store.Store {
	return &store.Store{
		Jobs:        &store.Jobs{KV: kv{s.Jobs, s.JS}, Archive: archive{js: s.JS, st: s.Archive}, ArchiveAfter: s.archiveAfter, Shared: s.shared},
		Workers:     kv{s.Workers, s.JS},
		Datasets:    kv{s.Datasets, s.JS},
		Idempotency: kv{s.Idempotency, s.JS},
		Health:      kv{s.Health, s.JS},
		Tasks:       &stream{js: s.JS, nc: nc, st: s.Tasks, lanes: taskLanes(), tokens: s.Tokens, anchored: true, store: s},
		Results:     &stream{js: s.JS, nc: nc, st: s.Results, lanes: []*lane{{priority: job.DefaultPriority, prefix: ResultSubject, consumer: CoordConsumer}}},
		Blocks:      s.blobs(s.Blocks, BlocksBucket, false),
		Shuffle:     s.blobs(s.Shuffle, ShuffleBucket, true),
		Output:      s.blobs(s.Output, OutputBucket, true),
		Kinds:       kv{s.Kinds, s.JS},
		Modules:     s.blobs(s.Modules, ModulesBucket, false),
		Schedules:   kv{s.Schedules, s.JS},
		KindState:   kv{s.KindState, s.JS},
		Tokens:      kv{s.Tokens, s.JS},
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
	case IsOverLimit(err) || IsOutOfSpace(err):
		return fmt.Errorf("%w: %w", store.ErrNoRoom, err)
	}
	return err
}

// blobs is the port of object store os, named bucket; fresh says its
// names are never used twice (they hold a random attempt id).
func (s *Store) blobs(os jetstream.ObjectStore, bucket string, fresh bool) blobs {
	if s.dead == nil {
		s.dead = newDeadChunks(s.log)
	}
	b := blobs{os: os, js: s.JS, bucket: bucket, fresh: fresh, dead: s.dead}
	if st, ok := s.objStreams[bucket]; ok {
		b.st = st
	}
	return b
}

type kv struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
}

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

// CreateAll publishes the keys' first revisions asynchronously, each
// expecting no earlier one, and waits for their answers: one create is a
// request and its round trip, and a batch submit's records were 64 such
// requests in flight from as many goroutines. A key that exists (a delete
// marker too: job ids are never used again) is ErrConflict.
func (k kv) CreateAll(ctx context.Context, keys []string, values [][]byte) ([]uint64, []error) {
	prefix := "$KV." + k.kv.Bucket() + "."
	return publishAll(ctx, k.js, len(keys), func(i int) *nats.Msg {
		return &nats.Msg{Subject: prefix + keys[i], Data: values[i], Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: {"0"}}}
	}, createErr)
}

// publishAll publishes msg(0), …, msg(n-1) asynchronously and waits for
// their answers: the stored sequence or the error (errOf's) of each. One
// that no stream answered ("no responders": nothing was stored, a leader
// being elected) is sent again every 100 ms until ctx ends; what is not
// sent by then is not sent.
//
// The connection holds at most 4,000 publishes without an answer (nats.go's
// default); one past that waits for room until ctx ends, not nats.go's
// default of 200 ms: sixteen batch submits of 1,000 jobs at once, 32,000
// publishes, were refused as "stalled" and withdrawn, and their retries
// failed the same way while the withdrawals loaded the store.
func publishAll(ctx context.Context, js jetstream.JetStream, n int, msg func(int) *nats.Msg, errOf func(error) error) ([]uint64, []error) {
	seqs, errs := make([]uint64, n), make([]error, n)
	futures := make([]jetstream.PubAckFuture, n)
	for i := range n {
		if ctx.Err() != nil {
			errs[i] = fmt.Errorf("not sent to the store: %w", ctx.Err())
			continue
		}
		futures[i], errs[i] = js.PublishMsgAsync(msg(i), stallWait(ctx)...)
		errs[i] = errOf(errs[i])
	}
	for i, f := range futures {
		for f != nil {
			select {
			case ack := <-f.Ok():
				seqs[i], f = ack.Sequence, nil
			case err := <-f.Err():
				errs[i], f = errOf(err), nil
				if !errors.Is(errs[i], store.ErrNotStored) {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
					f, err = js.PublishMsgAsync(msg(i), stallWait(ctx)...)
					errs[i] = errOf(err)
				}
			case <-ctx.Done():
				errs[i], f = fmt.Errorf("no acknowledgement from the store: %w", ctx.Err()), nil
			}
		}
	}
	return seqs, errs
}

// stallWait makes a publish wait for room among the connection's
// unanswered publishes until ctx ends.
func stallWait(ctx context.Context) []jetstream.PublishOpt {
	if deadline, ok := ctx.Deadline(); ok {
		if wait := time.Until(deadline); wait > 0 {
			return []jetstream.PublishOpt{jetstream.WithStallWait(wait)}
		}
	}
	return nil
}

// createErr is storeErr for a create's publish: a wrong last sequence is
// a key that exists.
func createErr(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w: %w", store.ErrConflict, jetstream.ErrKeyExists, err)
	}
	return storeErr(err)
}

func (k kv) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	rev, err := k.kv.Update(ctx, key, value, rev)
	return rev, storeErr(err)
}

// WriteTTL publishes the key's next revision expecting rev as its last
// (0: none), with JetStream's per-message time to live: the bucket's
// stream removes it by itself, without a marker.
func (k kv) WriteTTL(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	h := nats.Header{jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(rev, 10)}}
	if ttl > 0 {
		h.Set(jetstream.MsgTTLHeader, ttl.String())
	}
	ack, err := k.js.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + k.kv.Bucket() + "." + key, Data: value, Header: h})
	if err != nil {
		return 0, createErr(err)
	}
	return ack.Sequence, nil
}

func (k kv) ForgetUpTo(ctx context.Context, key string, rev uint64) error {
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket())
	if err != nil {
		return storeErr(err)
	}
	return storeErr(st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+k.kv.Bucket()+"."+key), jetstream.WithPurgeSequence(rev+1)))
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

// Forget purges the keys' subjects from the bucket's stream: their delete
// markers go too, and with them what JetStream keeps per subject.
func (k kv) Forget(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket())
	if err != nil {
		return storeErr(err)
	}
	for _, key := range keys {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+k.kv.Bucket()+"."+key)); err != nil {
			return storeErr(err)
		}
	}
	return nil
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

// Entries reads the keys' messages in stream order with a consumer of
// its own: the bucket keeps one message per key, so every
// message is a live entry or a deletion's marker. A watch of the keys
// (the library's) asks for the last message of each subject, which
// JetStream finds by walking every subject under the filter at the
// consumer's creation: reading the first 100 files of a dataset of 7,000
// cost as much as reading all of them.
//
// In a cluster the consumer is placed on any replica of the bucket, and
// one that lags (a server catching up after a restart) reads a part of
// the keys, with no sign of it: a dataset's files read that way made a
// word count of no input succeed. So the read is checked against the
// stream's leader (completeEntries), unless the read's consumer was
// placed on the server that led the stream when the read began (always so
// for a server alone): that one held every write acknowledged before.
func (k kv) Entries(ctx context.Context, prefix string) ([]store.Entry, error) {
	out, _, err := k.entries(ctx, prefix)
	return out, err
}

// entries is Entries, and whether the read was checked against the
// stream's leader.
func (k kv) entries(ctx context.Context, prefix string) (out []store.Entry, checked bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, entriesTimeout)
		defer cancel()
	}
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket()) // its info: the leader now
	if err != nil {
		return nil, false, storeErr(err)
	}
	out, seen, last, host, done, err := k.readEntries(ctx, prefix)
	if err != nil {
		return nil, false, err
	}
	if done {
		// A read that ended where its server's messages did is whole when
		// that server held every write: alone, or the leader.
		switch c := st.CachedInfo().Cluster; {
		case c == nil || c.Name == "", host != "" && host == c.Leader:
			return out, false, nil
		}
	}
	out, err = k.completeEntries(ctx, st, prefix, out, seen, last)
	return out, true, err
}

// readEntries reads the entries under prefix with a consumer of its own:
// them, the subjects it saw (deletion markers included), the last stream
// sequence it was delivered, and the server the consumer was placed on in
// a cluster; done is false when the read ended short of what that server
// holds.
func (k kv) readEntries(ctx context.Context, prefix string) (out []store.Entry, seen map[string]bool, last uint64, host string, done bool, err error) {
	subject := "$KV." + k.kv.Bucket() + "."
	// A consumer made within ctx, not the library's ordered one: that one
	// makes its consumer again at every fetch, and tries to make it for
	// ever, ctx or not (a server of the cluster paused held an upload's
	// answer past its client's patience).
	cfg := jetstream.ConsumerConfig{
		FilterSubjects: []string{subject + prefix + ">"}, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1, InactiveThreshold: time.Minute,
	}
	var cons jetstream.Consumer
	for {
		// A consumer placed on a server that does not answer (paused)
		// is asked for again, maybe placed elsewhere, until ctx ends.
		cctx, cancel := context.WithTimeout(ctx, entriesConsumerTimeout)
		c, err := k.js.CreateConsumer(cctx, "KV_"+k.kv.Bucket(), cfg)
		cancel()
		if err == nil {
			cons = c
			break
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, 0, "", false, storeErr(err)
		}
	}
	// The consumer goes with the read: left to expire, a thousand reads
	// in a row reached the stream's limit of consumers.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = k.js.DeleteConsumer(dctx, "KV_"+k.kv.Bucket(), cons.CachedInfo().Name)
	}()
	if c := cons.CachedInfo().Cluster; c != nil {
		host = c.Leader
	}
	seen, empty := map[string]bool{}, 0
	for wait := 10 * time.Millisecond; ; {
		batch, err := cons.FetchNoWait(entriesBatch)
		if err != nil {
			return nil, nil, 0, "", false, storeErr(err)
		}
		n, pending := 0, uint64(0)
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, nil, 0, "", false, err
			}
			pending = meta.NumPending
			seen[m.Subject()] = true
			last = max(last, meta.Sequence.Stream)
			if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" {
				continue
			}
			out = append(out, store.Entry{Key: strings.TrimPrefix(m.Subject(), subject), Value: m.Data(), Revision: meta.Sequence.Stream})
		}
		if err := batch.Error(); n == 0 && errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
			// A consumer just made on another server of a cluster is
			// not reachable yet: the interest in its requests is still
			// on its way through the routes.
			time.Sleep(wait)
			wait = min(2*wait, 200*time.Millisecond)
			continue
		} else if err != nil {
			return nil, nil, 0, "", false, storeErr(err)
		}
		switch {
		case n > 0 && pending == 0:
			return out, seen, last, host, true, nil
		case n > 0:
			empty = 0
		default:
			// Nothing pending, or a fetch that got no answer within the
			// library's second (a busy or stalled server): the latter
			// ended the read here, with what it had, and a dataset read
			// that way lacked files. The consumer says which.
			info, err := cons.Info(ctx)
			if err != nil {
				return nil, nil, 0, "", false, storeErr(err)
			}
			if info.NumPending == 0 {
				return out, seen, last, host, true, nil
			}
			// A few of these in a row: the stream's leader fills in
			// what the read did not bring (completeEntries), rather than
			// fetches asking a stalled server, or one that will not
			// serve a damaged message, until the deadline.
			if empty++; empty == entriesEmptyFetches {
				return out, seen, last, host, false, nil
			}
			time.Sleep(wait)
			wait = min(2*wait, 200*time.Millisecond)
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, 0, "", false, storeErr(err)
		}
	}
}

// completeEntries checks a read of the entries under prefix (out, the
// subjects it saw, deletion markers included, and the last stream
// sequence it was delivered) against the stream's leader, which answers
// for every acknowledged write. The read's server had applied the stream
// up to last (a replica applies the stream in order): what the leader
// holds under prefix after last is newer than the read, a key written
// again (the read holds its earlier value: a file uploaded again just
// before a listing was listed at its older upload), a new key or a
// deletion; it is read from the leader one message after the other, and
// usually there is none (one request). Then the subjects the leader holds
// under prefix that the read still misses (a damaged message the read's
// server would not pass) are read from it, one request each. A key the
// read saw and the leader does not name is kept (a leaderless group is
// answered by any member).
func (k kv) completeEntries(ctx context.Context, st jetstream.Stream, prefix string, out []store.Entry, seen map[string]bool, last uint64) ([]store.Entry, error) {
	name := "KV_" + k.kv.Bucket()
	subject := "$KV." + k.kv.Bucket() + "."
	newer := map[string]leaderMsg{}
	for seq := last + 1; ; {
		m, found, err := k.leaderGet(ctx, name, map[string]any{"seq": seq, "next_by_subj": subject + prefix + ">"})
		if err != nil {
			return nil, err
		}
		if !found {
			break
		}
		newer[m.Subject], seen[m.Subject] = m, true
		seq = m.Seq + 1
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject+prefix+">"))
	if err != nil {
		return nil, storeErr(err)
	}
	for subj, n := range info.State.Subjects {
		if n == 0 || seen[subj] {
			continue
		}
		m, found, err := k.leaderGet(ctx, name, map[string]any{"last_by_subj": subj})
		if err != nil {
			return nil, err
		}
		if found {
			newer[subj] = m
		}
	}
	if len(newer) == 0 {
		return out, nil
	}
	// The read's entries, each key once (a read that went on while the
	// key was written again met both), with the leader's over them.
	byKey := make(map[string]store.Entry, len(out)+len(newer))
	for _, e := range out {
		if old, ok := byKey[e.Key]; !ok || old.Revision < e.Revision {
			byKey[e.Key] = e
		}
	}
	for subj, m := range newer {
		key := strings.TrimPrefix(subj, subject)
		if m.deleted() {
			delete(byKey, key)
			continue
		}
		byKey[key] = store.Entry{Key: key, Value: m.Data, Revision: m.Seq}
	}
	out = slices.Collect(maps.Values(byKey))
	slices.SortFunc(out, func(a, b store.Entry) int { return cmp.Compare(a.Revision, b.Revision) })
	return out, nil
}

// leaderGet asks the leader of stream name for a message (req: a
// message-get request, last_by_subj or next_by_subj; a direct get may be
// answered by a replica that lags); found is false when there is none.
func (k kv) leaderGet(ctx context.Context, name string, req map[string]any) (m leaderMsg, found bool, err error) {
	return leaderGet(ctx, k.js, name, req)
}

// leaderGet is kv.leaderGet for any stream. The request is sent in
// attempts, the first of leaderGetAttempt and each next twice as long,
// until ctx ends: a request the leader of the moment does not answer (a
// server paused while it led the stream, stepping down once continued) is
// sent again to whoever leads then. With one request under the caller's
// deadline, a dataset's listing asked as a paused server was continued
// went unanswered for its client's 20 s (a CI run of TestServerPausedAgain
// on 2026-12-07).
func leaderGet(ctx context.Context, js jetstream.JetStream, name string, req map[string]any) (m leaderMsg, found bool, err error) {
	data, err := json.Marshal(req)
	if err != nil {
		return m, false, err
	}
	var reply *nats.Msg
	for wait := leaderGetAttempt; ; wait *= 2 {
		actx, cancel := context.WithTimeout(ctx, wait)
		reply, err = js.Conn().RequestWithContext(actx, "$JS.API.STREAM.MSG.GET."+name, data)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if errors.Is(err, nats.ErrNoResponders) { // no leader now: an election
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err != nil {
		return m, false, storeErr(fmt.Errorf("read %s from the leader of %s: %w", data, name, err))
	}
	var resp struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *leaderMsg `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return m, false, fmt.Errorf("read %s from the leader of %s: %w", data, name, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == 10037: // no message found
		return m, false, nil
	case resp.Error != nil:
		return m, false, fmt.Errorf("read %s from the leader of %s: %s", data, name, resp.Error.Description)
	case resp.Message == nil:
		return m, false, fmt.Errorf("read %s from the leader of %s: an answer without a message", data, name)
	}
	return *resp.Message, true, nil
}

// deleted reports whether m marks its key's deletion.
func (m leaderMsg) deleted() bool {
	if len(m.Header) == 0 {
		return false
	}
	h, err := nats.DecodeHeadersMsg(m.Header)
	if err != nil {
		return false
	}
	op := h.Get("KV-Operation")
	return op == "DEL" || op == "PURGE"
}

// leaderGetAttempt is the time of a first attempt of leaderGet: a read
// from a stream's leader answers within milliseconds when it answers.
var leaderGetAttempt = 2 * time.Second

// leaderMsg is a message as the stream's leader gives it.
type leaderMsg struct {
	Subject string    `json:"subject"`
	Seq     uint64    `json:"seq"`
	Header  []byte    `json:"hdrs"`
	Data    []byte    `json:"data"`
	Time    time.Time `json:"time"`
}

// entriesEmptyFetches is how many empty fetches in a row, while its
// consumer says messages are pending, end a read of Entries.
const entriesEmptyFetches = 3

// entriesBatch is how many messages Entries asks for at once.
const entriesBatch = 1000

// entriesConsumerTimeout bounds one try to make the consumer of a read of
// Entries.
const entriesConsumerTimeout = 5 * time.Second

// entriesTimeout bounds a read of Entries whose caller set no deadline.
const entriesTimeout = time.Minute

func (k kv) DeletePrefix(ctx context.Context, prefix string) error {
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket())
	if err != nil {
		return storeErr(err)
	}
	return storeErr(st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+k.kv.Bucket()+"."+prefix+">")))
}

func (k kv) Watch(ctx context.Context) (store.Watcher, error) {
	// What the bucket holds now is what the watch calls stored.
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket())
	if err != nil {
		return nil, storeErr(err)
	}
	w, err := k.kv.WatchAll(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &watcher{w: w, st: st, bucket: k.kv.Bucket(), stored: st.CachedInfo().State.LastSeq,
		ch: make(chan *store.Entry), stop: make(chan struct{}), done: make(chan struct{})}
	go out.run(ctx)
	return out, nil
}

type watcher struct {
	w      jetstream.KeyWatcher
	st     jetstream.Stream
	bucket string
	stored uint64 // the bucket's last stream sequence as the watch began
	ch     chan *store.Entry
	stop   chan struct{}
	once   sync.Once
	done   chan struct{}
}

// watchStuck is how long a watch's stored entries may stop coming before
// it asks the bucket whether any is left (a var: tests shorten it).
var watchStuck = 2 * time.Second

// storedAfter reports whether the bucket still holds a message stored
// before the watch began after stream sequence seq (true when it cannot
// say).
func (w *watcher) storedAfter(ctx context.Context, seq uint64) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := w.st.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject("$KV."+w.bucket+".>"))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false
	case err != nil:
		return true
	}
	return m.Sequence <= w.stored
}

func (w *watcher) Updates() <-chan *store.Entry { return w.ch }

// Stop ends the watch, whether or not anyone still reads its updates (a
// reader that stopped at the end of the stored entries does not).
func (w *watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	// The library hands each entry over while holding its watcher's lock,
	// and closes the channel once its subscription ended: entries no one
	// takes keep its delivery goroutine waiting for good (found by goleak
	// in this package's tests). They are taken until the channel closes,
	// which comes once the subscription ended and the entry being
	// delivered is taken.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		limit := time.NewTimer(10 * time.Second)
		defer limit.Stop()
		for {
			select {
			case _, ok := <-w.w.Updates():
				if !ok {
					return
				}
			case <-limit.C:
				return
			}
		}
	}()
	_ = w.w.Stop()
	<-drained
}

// run passes the watch's entries on, and nil once the stored ones are
// passed. The library says so by a nil of its own, counted from what its
// consumer said pending at its start: when the last of those leave the
// bucket before they are delivered (a finished job's record leaving for
// the archive, by its TTL, as a server restarts), it never does, and a
// server's start waited for ever (CI, twice in a day, a goroutine dump
// each time: the read model waiting on this watch for 16 minutes). So
// the watch also says it itself: before an entry written after the watch
// began (the ordered consumer delivers in order: every stored one came
// before it), or once stored entries stopped coming for watchStuck and
// the bucket holds no stored message after the last one passed on. The
// library's nil after this watch's is dropped.
func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	defer close(w.ch)
	send := func(out *store.Entry) bool {
		select {
		case w.ch <- out:
			return true
		case <-w.stop:
		case <-ctx.Done():
		}
		return false
	}
	said := false   // nil was sent: the stored entries are passed on
	var seen uint64 // the stream sequence of the last entry passed on
	last := time.Now()
	tick := time.NewTicker(watchStuck / 2)
	defer tick.Stop()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-w.w.Updates():
			if !ok {
				return
			}
		case <-tick.C:
			if !said && time.Since(last) >= watchStuck && !w.storedAfter(ctx, seen) {
				said = true
				if !send(nil) {
					return
				}
			}
			continue
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		}
		if e == nil || !said && e.Revision() > w.stored {
			if !said {
				said = true
				if !send(nil) {
					return
				}
			}
			if e == nil {
				continue // the library's own nil: this watch's went first
			}
		}
		seen, last = max(seen, e.Revision()), time.Now()
		if !send(&store.Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut}) {
			return
		}
	}
}

// stream is a JetStream stream and its shared durable consumer.
type stream struct {
	js jetstream.JetStream
	nc *nats.Conn
	st jetstream.Stream
	// lanes are the stream's subjects and their shared consumers, highest
	// priority first: one for results, one per priority for tasks.
	lanes []*lane

	mu sync.Mutex // guards the lanes' consumers and the kind lanes
	// tokens counts the tasks of rate-limited kind lanes started per
	// window, in the whole cluster.
	tokens jetstream.KeyValue
	// kinds are the task queue's kind lanes, listed from the stream's
	// consumers at most every kindsEvery.
	kinds        []*lane
	kindsAt      time.Time
	listingKinds bool
	listed       bool          // a listing ended: kinds and later hold its lanes
	listDone     chan struct{} // closed when the listing under way ends
	// later are the task queue's later lanes (LaterLaneSubject), by
	// priority, listed with the kind lanes: a store made by an earlier
	// version has none, and its tasks go to the priority lanes.
	later map[int]*lane
	// anchored: the task queue, whose publishes carry its anchor
	// (TaskAnchorSubject) at most every anchorAfter; anchoredAt is when
	// one last did, in Unix nanoseconds.
	anchored   bool
	anchoredAt atomic.Int64
	// store is the Store the stream belongs to.
	store *Store
	// wake follows TaskWakeSubject (the task queue's); notified is when
	// this stream last sent it (Unix nanoseconds), trailing is set while
	// a notice is due at the end of notifyEvery.
	wake     wakes
	notified atomic.Int64
	trailing atomic.Bool
}

// anchorAfter is how long after a publish of tasks that carried the task
// queue's anchor the next one carries it again.
const anchorAfter = 10 * time.Millisecond

// token is key as one token of a task's subject: a job id of a kind whose
// name has dots would otherwise be several, and match no lane's filter
// (job ids have no '~'). The results stream, read by one consumer without
// a filter, keeps keys as they are.
func (s *stream) token(key string) string {
	if len(s.lanes) == 1 {
		return key
	}
	return strings.ReplaceAll(key, ".", "~")
}

// kindsEvery is how often a process looks for kind lanes another made.
const kindsEvery = 2 * time.Second

// kindLanes returns the task queue's kind lanes. The listing (up to 5 s
// while the stream's leader is away) is made without the lock, by one
// goroutine at a time: the others, every fetch of the pool among them, go
// on with the last list meanwhile.
func (s *stream) kindLanes(ctx context.Context) []*lane {
	if len(s.lanes) == 1 {
		return nil // not the task queue
	}
	s.mu.Lock()
	if s.listingKinds || time.Since(s.kindsAt) < kindsEvery {
		defer s.mu.Unlock()
		return s.kinds
	}
	s.listingKinds, s.kindsAt = true, time.Now()
	done := make(chan struct{})
	s.listDone = done
	defer close(done)
	known := map[string]jetstream.Consumer{}
	for _, l := range s.kinds {
		known[l.consumer] = l.cons
	}
	for _, l := range s.later {
		known[l.consumer] = l.cons
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []*lane
	later := map[int]*lane{}
	list := s.st.ListConsumers(ctx)
	for info := range list.Info() {
		if p, ok := laterPriority(info.Name); ok {
			later[p] = &lane{priority: p, prefix: LaterLaneSubject(p), consumer: info.Name, cons: known[info.Name]}
			continue
		}
		if !strings.HasPrefix(info.Name, kindLanePrefix) {
			continue
		}
		// A new lane each time (its consumer kept): fetches of another
		// goroutine read the old one's rate without the lock.
		l := &lane{priority: job.MaxPriority, prefix: strings.TrimSuffix(info.Config.FilterSubject, "*"), consumer: info.Name}
		l.cons = known[info.Name]
		l.rate, l.window = store.ParseRate(info.Config.Metadata[rateKey])
		out = append(out, l)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listingKinds = false
	if err := list.Err(); err != nil {
		return s.kinds // keep the last list
	}
	// A lane set meanwhile cleared kindsAt: the next call lists again.
	s.kinds, s.later, s.listed = out, later, true
	return out
}

// laterPriority returns the priority of a later lane's consumer name.
func laterPriority(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, laterLanePrefix)
	if !ok || len(rest) != 1 {
		return 0, false
	}
	p := int(rest[0] - '0')
	return p, p >= job.MinPriority && p <= job.MaxPriority
}

// listLater lists the lanes (kindLanes) for a publish of tasks of jobs
// under way: until a first listing has ended, it waits for the one under
// way, within ctx (a reduce phase published meanwhile went to its
// priority's lane, not knowing the later one: seen under load).
func (s *stream) listLater(ctx context.Context) {
	s.kindLanes(ctx)
	s.mu.Lock()
	done, wait := s.listDone, s.listingKinds && !s.listed
	s.mu.Unlock()
	if wait {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// placeLater returns msgs with the tasks of jobs under way (Later) that
// go to their priority's own lane marked so: a later lane goes before its
// priority's new work only while some waits there; with none, there is
// nothing to go before, and in its priority's lane the task wakes the
// fetch of a pool that waits for work (an idle pool waits on the default
// lane: a word count's reduce phase queued in the later lane of an idle
// cluster started up to 250 ms late, a tenth of a 2 s job). A lane whose
// count cannot be read is taken as busy. One request per priority.
func (s *stream) placeLater(ctx context.Context, msgs []store.Message) []store.Message {
	var waiting map[int]bool
	for i, m := range msgs {
		if !m.Later || m.Lane != "" {
			continue
		}
		if waiting == nil {
			s.listLater(ctx) // at most every kindsEvery
			waiting = map[int]bool{}
			msgs = slices.Clone(msgs)
		}
		l := s.lane(m.Priority)
		if s.laterOf(l.priority) == nil {
			continue
		}
		busy, ok := waiting[l.priority]
		if !ok {
			busy = s.hasWaiting(ctx, l)
			waiting[l.priority] = busy
		}
		msgs[i].Later = busy
	}
	return msgs
}

// hasWaiting reports whether lane l has messages waiting for a fetch, or
// cannot tell within a second.
func (s *stream) hasWaiting(ctx context.Context, l *lane) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cons, err := s.shared(ctx, l)
	if err != nil {
		return true
	}
	info, err := cons.Info(ctx)
	return err != nil || info.NumPending > 0
}

// laterOf returns the later lane of a priority, as last listed (nil when
// the store has none).
func (s *stream) laterOf(priority int) *lane {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.later[priority]
}

// lanesNow returns every lane of the stream: the priority lanes, highest
// first, each after its later lane, then the kind lanes.
func (s *stream) lanesNow(ctx context.Context) []*lane {
	kinds := s.kindLanes(ctx)
	return append(s.priorityLanes(), kinds...)
}

// priorityLanes returns the priority lanes, highest first, each after its
// later lane, as last listed.
func (s *stream) priorityLanes() []*lane {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*lane, 0, 2*len(s.lanes))
	for _, l := range s.lanes {
		if later := s.later[l.priority]; later != nil {
			out = append(out, later)
		}
		out = append(out, l)
	}
	return out
}

// rateKey is the consumer metadata that holds a kind lane's rate limit.
const rateKey = "mrcluster.rate"

// takeTokens takes up to want of lane's starts left in the current window,
// in the whole cluster (a compare-and-set on the window's count), and
// returns how many it took.
func (s *stream) takeTokens(ctx context.Context, l *lane, want int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := fmt.Sprintf("%x.%d", l.consumer, time.Now().UnixNano()/int64(l.window))
	for range 20 {
		count, rev := 0, uint64(0)
		e, err := s.tokens.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, storeErr(err)
		default:
			count, _ = strconv.Atoi(string(e.Value()))
			rev = e.Revision()
		}
		take := min(want, l.rate-count)
		if take <= 0 {
			return 0, nil
		}
		value := []byte(strconv.Itoa(count + take))
		if rev == 0 {
			_, err = s.tokens.Create(ctx, key, value)
		} else {
			_, err = s.tokens.Update(ctx, key, value, rev)
		}
		if err == nil {
			return take, nil
		}
		if !IsConflict(err) {
			return 0, storeErr(err)
		}
	}
	return 0, nil // other processes keep taking them: next round
}

// SetLane makes or changes kind lane's consumer.
func (s *stream) SetLane(ctx context.Context, kind string, maxLeased int, rate string) error {
	def, err := s.shared(ctx, s.lane(job.DefaultPriority))
	if err != nil {
		return err
	}
	if maxLeased <= 0 {
		maxLeased = 20000
	}
	err = s.store.createConsumer(ctx, s.st, TasksStream, jetstream.ConsumerConfig{
		Durable:       KindLaneConsumer(kind),
		Description:   "shared by every worker: tasks of kind " + kind + ", at most this many leased at once",
		FilterSubject: KindLaneSubject(kind) + "*",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       def.CachedInfo().Config.AckWait,
		MaxAckPending: maxLeased,
		Metadata:      map[string]string{rateKey: rate},
	})
	if err != nil {
		return storeErr(err)
	}
	s.mu.Lock()
	s.kindsAt = time.Time{} // list again at the next fetch
	s.mu.Unlock()
	return nil
}

// waiting returns how many of want a lane could give now: its waiting
// messages, within its bound of leased ones.
func (s *stream) waiting(ctx context.Context, l *lane, want int) int {
	cons, err := s.shared(ctx, l)
	if err != nil {
		return 0
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0
	}
	room := want
	if m := info.Config.MaxAckPending; m > 0 {
		room = m - info.NumAckPending
	}
	return max(0, min(want, int(info.NumPending), room))
}

// kindProbe bounds a fetch from a kind lane: a lane at its bound holds a
// request until a task ends, so it is never asked without a deadline.
const kindProbe = 10 * time.Millisecond

// lane is a priority of a stream: its messages are prefix + key, read by
// one shared consumer.
type lane struct {
	priority int
	prefix   string
	consumer string
	cons     jetstream.Consumer // bound at the first use
	// rate, for a kind lane, bounds the tasks started per window (0: no
	// bound); window is a second or a minute.
	rate   int
	window time.Duration
}

// taskLanes are the task queue's lanes, highest first. The default
// priority's subjects are those of a queue before priorities.
func taskLanes() []*lane {
	var out []*lane
	for p := job.MaxPriority; p >= job.MinPriority; p-- {
		out = append(out, &lane{priority: p, prefix: TaskLaneSubject(p), consumer: TaskLaneConsumer(p)})
	}
	return out
}

// lane returns the lane of priority (the default's for 0 or unknown).
func (s *stream) lane(priority int) *lane {
	priority = job.ShownPriority(priority)
	for _, l := range s.lanes {
		if l.priority == priority {
			return l
		}
	}
	for _, l := range s.lanes {
		if l.priority == job.DefaultPriority {
			return l
		}
	}
	return s.lanes[0]
}

// shared returns a lane's shared consumer.
func (s *stream) shared(ctx context.Context, l *lane) (jetstream.Consumer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.cons == nil {
		cons, err := s.st.Consumer(ctx, l.consumer)
		if err != nil {
			return nil, fmt.Errorf("open consumer %s: %w", l.consumer, storeErr(err))
		}
		l.cons = cons
	}
	return l.cons, nil
}

// Publish publishes every message at once and waits for the acks under
// ctx's deadline. A message no stream answered was not stored, and is
// published again while the deadline allows (a leader being elected).
//
// The task queue's publishes end with its anchor, at most every
// anchorAfter (its error is no task's): tasks are what fills a block, and
// the anchor then lands in the new one at once. Stored only every second
// (AnchorTasks), it left a window after each new block in which the store
// made a new block file whenever the workers emptied the queue: 588 files
// for 30,000 one-task jobs at 2,500 a second; 14 with the publishes
// carrying it.
func (s *stream) Publish(ctx context.Context, msgs ...store.Message) []error {
	msgs = s.placeLater(ctx, msgs)
	n := len(msgs)
	if s.anchored && n > 0 {
		now, last := time.Now().UnixNano(), s.anchoredAt.Load()
		if now-last >= int64(anchorAfter) && s.anchoredAt.CompareAndSwap(last, now) {
			n++
		}
	}
	_, errs := publishAll(ctx, s.js, n, func(i int) *nats.Msg {
		if i == len(msgs) {
			return &nats.Msg{Subject: TaskAnchorSubject}
		}
		return s.msg(msgs[i])
	}, storeErr)
	errs = errs[:len(msgs)]
	for i, m := range msgs {
		if errs[i] == nil && s.elsewhere(m) {
			s.notify()
			break
		}
	}
	return errs
}

// elsewhere reports whether m goes to a lane of the task queue that an
// idle fetch does not wait on: not the default priority's own lane.
func (s *stream) elsewhere(m store.Message) bool {
	return len(s.lanes) > 1 && (m.Lane != "" || m.Later || job.ShownPriority(m.Priority) != job.DefaultPriority)
}

// notify tells idle fetches that tasks were queued in a lane they do not
// wait on (TaskWakeSubject): at most one notice every notifyEvery, the
// publishes within it told by one at its end, so that a server queuing
// thousands of tasks a second of another priority does not send each
// process of its cluster as many notices. Best effort: a fetch that misses
// one looks at every lane at its next start anyway.
func (s *stream) notify() {
	if s.nc == nil {
		return
	}
	now, last := time.Now().UnixNano(), s.notified.Load()
	if now-last >= int64(notifyEvery) && s.notified.CompareAndSwap(last, now) {
		_ = s.nc.Publish(TaskWakeSubject, nil)
		return
	}
	if s.trailing.CompareAndSwap(false, true) {
		time.AfterFunc(time.Duration(last+int64(notifyEvery)-now), func() {
			s.trailing.Store(false)
			s.notified.Store(time.Now().UnixNano())
			_ = s.nc.Publish(TaskWakeSubject, nil)
		})
	}
}

// notifyEvery bounds how often a stream sends TaskWakeSubject.
const notifyEvery = 10 * time.Millisecond

func (s *stream) msg(m store.Message) *nats.Msg {
	key := s.token(m.Key)
	l := s.lane(m.Priority)
	if m.Later {
		if later := s.laterOf(l.priority); later != nil {
			l = later
		}
	}
	subject := l.prefix + key
	if m.Lane != "" {
		subject = KindLaneSubject(m.Lane) + key
	}
	out := &nats.Msg{Subject: subject, Data: m.Data}
	if m.ID != "" {
		out.Header = nats.Header{jetstream.MsgIDHeader: {m.ID}}
	}
	return out
}

// Send publishes without waiting for the stream's answer: core NATS.
func (s *stream) Send(m store.Message) error {
	err := s.nc.PublishMsg(s.msg(m))
	if err == nil && s.elsewhere(m) {
		s.notify()
	}
	return err
}

func (s *stream) Purge(ctx context.Context, key string) error {
	subjects := []string{s.lanes[0].prefix + s.token(key)}
	if len(s.lanes) > 1 {
		// The task queue: the job's subject in every priority's lane
		// (mr.task.<job>, mr.task.p1.<job>, ...), and in every kind's
		// lane (mr.task.k.<kind>.<job>; a retried job's kind may have
		// gained or lost its lane since). Not mr.task.*.<job>: JetStream
		// matches a wildcard token against every subject at its level,
		// and the default lane's subjects, one per job queued, are at
		// that one, so that each purge cost as much as the jobs queued:
		// cancelling 10,000 of them took 4.7 s, 40,000 took 102 s. A kind
		// lane's token stands where there are only kinds.
		subjects = subjects[:0]
		for _, l := range s.lanes {
			subjects = append(subjects, l.prefix+s.token(key))
		}
		// The later lanes (mr.task.c.<N>.<job>) and the kind lanes: a
		// wildcard token where there are only priorities, or kinds.
		subjects = append(subjects, TaskSubject+"c.*."+s.token(key), TaskSubject+"k.*."+s.token(key))
	}
	for _, subject := range subjects {
		if err := s.st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			return storeErr(err)
		}
	}
	return nil
}

// Release implements store.Stream: lease is the delivery's acknowledgement
// subject, to which it sends a negative acknowledgement, as its holder
// would have, and waits for the consumer's answer. JetStream takes a
// nak of any delivery of a message still pending for its latest.
func (s *stream) Release(ctx context.Context, lease string) error {
	if !strings.HasPrefix(lease, "$JS.ACK.") {
		return fmt.Errorf("lease %q is not a JetStream delivery's acknowledgement subject", lease)
	}
	if _, err := s.nc.RequestWithContext(ctx, lease, []byte("-NAK")); err != nil {
		return storeErr(err)
	}
	return nil
}

// Holds implements store.Stream.
func (s *stream) Holds(ctx context.Context, seq uint64) (bool, error) {
	_, err := s.st.GetMsg(ctx, seq)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, storeErr(err)
}

// PurgeAcked implements store.Stream: it purges key's messages below the
// ack floor of the stream's first lane's consumer, the first message that
// consumer has not acknowledged yet.
func (s *stream) PurgeAcked(ctx context.Context, key string) error {
	l := s.lanes[0]
	cons, err := s.st.Consumer(ctx, l.consumer) // asks for the consumer's info: its ack floor now
	if err != nil {
		return storeErr(err)
	}
	info := cons.CachedInfo()
	if info.AckFloor.Stream == 0 {
		return nil // nothing acknowledged yet
	}
	return storeErr(s.st.Purge(ctx, jetstream.WithPurgeSubject(l.prefix+s.token(key)), jetstream.WithPurgeSequence(info.AckFloor.Stream+1)))
}

// laneWait bounds each wait of a fetch that found every lane empty on the
// default lane: between two waits it looks at the other lanes again when a
// notice said tasks were queued there (TaskWakeSubject), or, when the
// stream cannot follow the notices, always.
const laneWait = 250 * time.Millisecond

// wakes follows the notices of tasks queued in the lanes other than the
// default's: each notice closes the channel that waiters took before it.
type wakes struct {
	mu     sync.Mutex
	sub    *nats.Subscription
	ch     chan struct{}
	failed bool // the subscription could not be made: poll
	closed bool
}

// nextWake returns a channel closed at the next notice, or nil when the
// notices cannot be followed. Take it before looking at the lanes: a
// notice sent during the look then counts.
func (s *stream) nextWake() <-chan struct{} {
	w := &s.wake
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed || w.closed || s.nc == nil {
		return nil
	}
	if w.sub == nil {
		w.ch = make(chan struct{})
		sub, err := s.nc.Subscribe(TaskWakeSubject, func(*nats.Msg) {
			w.mu.Lock()
			defer w.mu.Unlock()
			close(w.ch)
			w.ch = make(chan struct{})
		})
		if err != nil {
			w.failed = true
			return nil
		}
		w.sub = sub
	}
	return w.ch
}

// close ends the subscription (Store.Close): the fetches after it poll.
func (w *wakes) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.sub != nil {
		_ = w.sub.Unsubscribe()
		w.sub = nil
	}
}

// Fetch sends pull requests: after a change of a consumer's leader in a
// cluster, the next one goes to the new leader. With lanes, it takes what
// each has now, highest first, and waits on the default lane only when
// all were empty.
func (s *stream) Fetch(ctx context.Context, max int, wait time.Duration, fn func(store.Delivery)) error {
	if len(s.lanes) == 1 {
		return s.fetch(ctx, s.lanes[0], max, jetstream.FetchMaxWait(wait), fn)
	}
	got := 0
	count := func(d store.Delivery) { got++; fn(d) }
	for deadline := time.Now().Add(wait); ; {
		wake := s.nextWake()
		for _, l := range s.kindLanes(ctx) {
			if got >= max {
				return nil
			}
			// Only what waits and fits the lane's bound is asked for: a
			// request the lane cannot fill waits its whole deadline, and
			// a rate's starts are spent only on tasks that wait.
			want := s.waiting(ctx, l, max-got)
			if want > 0 && l.rate > 0 {
				var err error
				if want, err = s.takeTokens(ctx, l, want); err != nil {
					return err
				}
			}
			if want == 0 {
				continue
			}
			if err := s.fetch(ctx, l, want, jetstream.FetchMaxWait(kindProbe), count); err != nil {
				return err
			}
		}
		for _, l := range s.priorityLanes() {
			if got >= max {
				return nil
			}
			if err := s.fetch(ctx, l, max-got, nil, count); err != nil {
				return err
			}
		}
		left := time.Until(deadline)
		if got > 0 || left <= 0 {
			return nil
		}
		// Every lane was empty: wait on the default one, a little at a
		// time, and look at them all again once a notice said another
		// lane got tasks (or at once, without notices). An idle pool
		// looked at all of them every laneWait: 36 requests a second,
		// half a percent of a server's core for each idle remote pool.
		for {
			if left < time.Millisecond {
				left = time.Millisecond // FetchMaxWait refuses less
			}
			if err := s.fetch(ctx, s.lane(job.DefaultPriority), max, jetstream.FetchMaxWait(min(left, laneWait)), count); err != nil || got > 0 {
				return err
			}
			if left = time.Until(deadline); left <= 0 {
				return nil
			}
			if wake == nil || woken(wake) {
				break
			}
		}
	}
}

// woken reports whether wake was closed: a notice came.
func woken(wake <-chan struct{}) bool {
	select {
	case <-wake:
		return true
	default:
		return false
	}
}

// FetchFrom takes what one priority's lanes have now: its later lane's
// first.
func (s *stream) FetchFrom(ctx context.Context, priority, max int, fn func(store.Delivery)) error {
	l := s.lane(priority)
	got := 0
	if later := s.laterOf(l.priority); later != nil {
		if err := s.fetch(ctx, later, max, nil, func(d store.Delivery) { got++; fn(d) }); err != nil || got >= max {
			return err
		}
	}
	return s.fetch(ctx, l, max-got, nil, fn)
}

// fetch sends one pull request to a lane's consumer: waiting as opt says,
// or not at all (nil).
func (s *stream) fetch(ctx context.Context, l *lane, max int, opt jetstream.FetchOpt, fn func(store.Delivery)) error {
	cons, err := s.shared(ctx, l)
	if err != nil {
		return err
	}
	var batch jetstream.MessageBatch
	if opt == nil {
		batch, err = cons.FetchNoWait(max)
	} else {
		batch, err = cons.Fetch(max, opt)
	}
	if err != nil {
		return storeErr(err)
	}
	for m := range batch.Messages() {
		fn(delivery{m: m, prefix: l.prefix, priority: l.priority})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
		return storeErr(err)
	}
	return nil
}

// Read reads every message of key through a consumer of its own, deleted
// after the read (ordered consumers outlived their reads, and 2,000 reads
// in a minute hit the limit of consumers).
func (s *stream) Read(ctx context.Context, key string, limit int) ([][]byte, error) {
	var out [][]byte
	err := s.each(ctx, s.lanes[0].prefix+key, limit, func(data []byte) { out = append(out, data) })
	switch {
	case errors.Is(err, store.ErrDamaged):
		return out, err
	case err != nil:
		return nil, fmt.Errorf("read %d of the messages of %s before the store stopped answering: %w", len(out), key, err)
	}
	return out, nil
}

// eachWait is how long a fetch of each waits for messages it knows are
// pending before the rest are read one by one.
const eachWait = 500 * time.Millisecond

// Scan reads the messages a lane may still deliver, one request each,
// from the first, each request asking for the next message at or after a
// sequence: a work queue takes no consumer that overlaps its lanes'. A
// message JetStream cannot read (a damaged part of the stream's files) is
// passed over by the answer, and so is one its lane will never deliver again: at or
// below what the lane's consumer delivered, unless leased (a stream whose
// index was rebuilt from its files holds again messages acked before).
// Messages of no lane (the queue's anchors) are passed over too.
func (s *stream) Scan(ctx context.Context, fn func(data []byte)) error {
	info, err := s.st.Info(ctx)
	if err != nil {
		return storeErr(err)
	}
	type floor struct {
		prefix string
		dead   func(seq uint64) bool
	}
	var floors []floor
	for _, l := range s.lanesNow(ctx) {
		cons, err := s.shared(ctx, l)
		if err != nil {
			return err
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return storeErr(err)
		}
		delivered, acked, leased := ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumAckPending > 0
		floors = append(floors, floor{l.prefix, func(seq uint64) bool {
			return seq <= acked || seq <= delivered && !leased
		}})
	}
	// The lane of a subject is the one of the longest prefix that leaves
	// it a single token, the job's.
	laneOf := func(subject string) *floor {
		var best *floor
		for i, f := range floors {
			rest, ok := strings.CutPrefix(subject, f.prefix)
			if ok && !strings.Contains(rest, ".") && (best == nil || len(f.prefix) > len(best.prefix)) {
				best = &floors[i]
			}
		}
		return best
	}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; {
		m, err := s.st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		switch {
		case err == nil:
			if f := laneOf(m.Subject); f != nil && !f.dead(m.Sequence) {
				fn(m.Data)
			}
			seq = m.Sequence + 1
		case errors.Is(err, jetstream.ErrMsgNotFound):
			// None at or after seq: the answer passes over deleted and
			// damaged messages itself. (Stepping on one by one walked
			// every acked message up to the last sequence: a million
			// requests behind one long task at the queue's head.)
			return nil
		default:
			return storeErr(err)
		}
	}
	return nil
}

// each calls fn with the data of every message on subjects filter, oldest
// first, up to limit.
func (s *stream) each(ctx context.Context, filter string, limit int, fn func([]byte)) error {
	cons, done, err := s.reader(ctx, filter)
	if err != nil {
		return err
	}
	defer done()
	info, err := cons.Info(ctx)
	if err != nil {
		return storeErr(err)
	}
	// A fetch that brings nothing while messages are pending is either a
	// busy store or a message JetStream will not serve (a damaged part of
	// the stream's files), which a consumer does not pass: the rest are
	// then read one request each, which passes over damaged messages, and
	// those missing at the end are damaged (store.ErrDamaged, after fn saw
	// the others). Fetches waited for the deadline, 6 s, at every read of
	// a damaged history.
	left, next := uint64(min(int(info.NumPending), limit)), uint64(1)
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(left, 500)), jetstream.FetchMaxWait(eachWait))
		if err != nil {
			return storeErr(err)
		}
		got := 0
		for m := range batch.Messages() {
			fn(m.Data())
			left--
			got++
			if meta, err := m.Metadata(); err == nil {
				next = meta.Sequence.Stream + 1
			}
		}
		if got == 0 {
			break
		}
	}
	return s.rest(ctx, filter, next, left, info.NumPending, fn)
}

// reader makes a consumer of every message on subjects filter, without
// acks, and returns it with the call that deletes it.
func (s *stream) reader(ctx context.Context, filter string) (jetstream.Consumer, func(), error) {
	cons, err := s.st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		Replicas:          1,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, nil, storeErr(err)
	}
	return cons, func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}, nil
}

// rest calls fn with the data of the next left messages on subjects filter
// from sequence next, one request each, of the total the read counted on
// filter at its start. Those the store does not deliver are damaged if its
// index still counts as many on filter; if it counts fewer, messages were
// deleted since (a purge of applied results, a job's deletion, racing the
// read), and the read ends with what it got: a history read that met the
// coordinator's purge of shared results reported "2 messages are damaged
// in the store". (Messages added since do not hide a deletion: the store
// would have delivered them. A damaged message met by a read that raced a
// deletion goes unreported: the history shows fewer attempts.)
func (s *stream) rest(ctx context.Context, filter string, next, left, total uint64, fn func([]byte)) error {
	for ; left > 0; left-- {
		m, err := s.st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(filter))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			now, err := s.counted(ctx, filter)
			if err != nil {
				return err
			}
			if now < total {
				return nil
			}
			return fmt.Errorf("%d messages of %s are %w: the store delivers none of them", left, filter, store.ErrDamaged)
		case err != nil:
			return storeErr(err)
		}
		fn(m.Data)
		next = m.Sequence + 1
	}
	return nil
}

// counted returns how many messages on subjects filter the stream's index
// counts: those it cannot deliver (damaged) too.
func (s *stream) counted(ctx context.Context, filter string) (uint64, error) {
	cons, done, err := s.reader(ctx, filter)
	if err != nil {
		return 0, err
	}
	defer done()
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, storeErr(err)
	}
	return info.NumPending, nil
}

// Info sums the lanes' consumers.
func (s *stream) Info(ctx context.Context) (store.StreamInfo, error) {
	// The stream's last sequence first: a lane that has nothing left to
	// deliver nor acknowledge a moment later handled every message up to it.
	st, err := s.st.Info(ctx)
	if err != nil {
		return store.StreamInfo{}, storeErr(err)
	}
	out := store.StreamInfo{Last: st.State.LastSeq, Acked: st.State.LastSeq}
	for _, l := range s.lanesNow(ctx) {
		cons, err := s.shared(ctx, l)
		if err != nil {
			return store.StreamInfo{}, err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return store.StreamInfo{}, storeErr(err)
		}
		out.Waiting += int(info.NumPending)
		out.Leased += info.NumAckPending
		out.AckWait = info.Config.AckWait
		if info.NumPending > 0 || info.NumAckPending > 0 {
			out.Acked = min(out.Acked, info.AckFloor.Stream)
		}
	}
	return out, nil
}

type delivery struct {
	m        jetstream.Msg
	prefix   string
	priority int
}

func (d delivery) Priority() int { return d.priority }

func (d delivery) Key() string {
	return strings.ReplaceAll(strings.TrimPrefix(d.m.Subject(), d.prefix), "~", ".")
}
func (d delivery) Data() []byte { return d.m.Data() }

func (d delivery) Seq() uint64 {
	if meta, err := d.m.Metadata(); err == nil {
		return meta.Sequence.Stream
	}
	return 0
}

func (d delivery) Stored() time.Time {
	if meta, err := d.m.Metadata(); err == nil {
		return meta.Timestamp
	}
	return time.Time{}
}

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

func (d delivery) Lease() string     { return d.m.Reply() }
func (d delivery) Term() error       { return d.m.Term() }
func (d delivery) InProgress() error { return d.m.InProgress() }

// blobs is an object store, in the library's format. An object of one
// chunk is read with two requests, its info and its chunk, where the
// library opens a consumer of its own for every read (~0.5 ms, a third of
// that with the requests); a larger one through a consumer of ours, going
// on with requests when it stalls (see stream). A chunk that JetStream
// finds damaged when it reads it (a byte flipped on disk) stops a
// consumer there, every time, while a request is answered the next chunk,
// which the count of chunks catches. Objects are written by publishes of
// ours too (put), not by the library's Put, nor read by its Get.
type blobs struct {
	os jetstream.ObjectStore
	js jetstream.JetStream
	// st is the bucket's stream (nil: every call goes through the library).
	st     jetstream.Stream
	bucket string
	// fresh says names are never used twice: a put need not look for an
	// object to replace.
	fresh bool
	// dead takes the chunks whose purge the store refused.
	dead *deadChunks
}

// chunkSize is the size of an object's chunks, the library's default.
const chunkSize = 128 << 10

// putWindow is how many of an object's chunks a put has sent and not
// seen acknowledged at most: each holds its buffer until then.
const putWindow = 8

func (b blobs) Put(ctx context.Context, name string, r io.Reader) error {
	if b.st == nil {
		_, err := b.os.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
		return storeErr(err)
	}
	return storeErr(b.put(ctx, name, r))
}

// put stores what r reads as object name, as the library's Put does: its
// chunks on a subject of a new id, then its info (which replaces the
// info of an object of the same name), then the chunks of the object it
// replaced are purged. The library's Put sets up a publisher of its own
// at every call, and its goroutine (resetPendingAcksOnReconnect, nats.go
// 1.55) stays blocked for good when the put ends before that goroutine
// first ran: a goroutine and its publisher leaked by most puts of more
// than one chunk (87 in one run of the dataset tests: every 4 MiB block,
// every shuffle run and output over 128 KiB), for the life of the
// process. put sends on the store's own publisher instead, at most
// putWindow chunks ahead of their acknowledgements.
func (b blobs) put(ctx context.Context, name string, r io.Reader) error {
	var replaced string // the chunks of the object this one replaces
	if !b.fresh {
		info, err := b.os.GetInfo(ctx, name, jetstream.GetObjectInfoShowDeleted())
		switch {
		case err == nil && !info.Deleted && info.NUID != "":
			replaced = "$O." + b.bucket + ".C." + info.NUID
		case err != nil && !errors.Is(err, jetstream.ErrObjectNotFound):
			return err
		}
	}
	size := chunkSize
	if l, ok := r.(interface{ Len() int }); ok {
		size = min(size, l.Len()+1) // staged in memory: no 128 KiB buffer for a run of a few bytes (+1: its end is seen at once)
	}
	id := nuid.Next()
	chunks := "$O." + b.bucket + ".C." + id
	h := sha256.New()
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}},
		Bucket:     b.bucket, NUID: id,
	}
	// A chunk's buffer is used again once its publish was acknowledged:
	// until then the library may send it again (no responders).
	bufs := make([][]byte, 0, putWindow)
	futures := make([]jetstream.PubAckFuture, 0, putWindow)
	acked := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return fmt.Errorf("no acknowledgement from the store: %w", ctx.Err())
		}
	}
	fail := func(err error) error {
		if info.Chunks > 0 {
			b.purge(chunks)
		}
		return err
	}
	for {
		n := int(info.Chunks)
		if n >= putWindow {
			// A future answers once: awaited, it is dropped.
			f := futures[n%putWindow]
			futures[n%putWindow] = nil
			if err := acked(f); err != nil {
				return fail(err)
			}
		} else {
			bufs, futures = append(bufs, make([]byte, size)), append(futures, nil)
			if size < chunkSize {
				size = chunkSize // a reader longer than it said
			}
		}
		buf := bufs[n%putWindow]
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			h.Write(buf[:k])
			m := nats.NewMsg(chunks)
			m.Data = buf[:k]
			f, perr := b.js.PublishMsgAsync(m, stallWait(ctx)...)
			if perr != nil {
				return fail(perr)
			}
			futures[n%putWindow] = f
			info.Chunks++
			info.Size += uint64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fail(err)
		}
	}
	for _, f := range futures {
		if f == nil {
			continue
		}
		if err := acked(f); err != nil {
			return fail(err)
		}
	}
	info.Digest = jetstream.GetObjectDigestValue(h)
	meta := nats.NewMsg(b.metaSubject(name))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	var err error
	if meta.Data, err = json.Marshal(info); err != nil {
		return fail(err)
	}
	if _, err := b.js.PublishMsg(ctx, meta); err != nil {
		// The store may have taken it and its answer not come back (a
		// deadline, an election): the stream's leader says which. Chunks
		// purged under a stored info would be an object that cannot be
		// read, so they stay unless the leader says the info is not ours.
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		got, gerr := b.os.GetInfo(gctx, name)
		cancel()
		switch {
		case gerr == nil && got.NUID == id:
			// stored after all
		case gerr == nil || errors.Is(gerr, jetstream.ErrObjectNotFound):
			return fail(err)
		default:
			return err
		}
	}
	if replaced != "" {
		b.purge(replaced)
	}
	return nil
}

// purge purges the chunks of a dead object (a failed put's, a replaced
// object's), within a deadline of its own (the put's may be what ended);
// refused, they are tried again in the background.
func (b blobs) purge(subject string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil && b.dead != nil {
		b.dead.add(b.st, b.bucket, subject)
	}
}

// open reads object name's info and returns a reader of its chunks; nil
// with no error when the library is to read it (a link, or no stream).
func (b blobs) open(ctx context.Context, name string) (*chunkReader, error) {
	if b.st == nil {
		return nil, nil
	}
	info, err := b.os.GetInfo(ctx, name)
	if err != nil {
		return nil, storeErr(err)
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, nil
	}
	return &chunkReader{ctx: ctx, st: b.st, os: b.os, subject: "$O." + b.bucket + ".C." + info.NUID, info: info, h: sha256.New()}, nil
}

func (b blobs) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	cr, err := b.open(ctx, name)
	if err != nil {
		return nil, err
	}
	if cr == nil {
		r, err := b.os.Get(ctx, name)
		if err != nil {
			return nil, storeErr(err)
		}
		return r, nil
	}
	if cr.info.Chunks <= 1 {
		// Read at once, so that a missing or damaged object is an error
		// of the open, as a missing one always is.
		data, err := io.ReadAll(cr)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	return b.stream(ctx, cr)
}

func (b blobs) GetSmall(ctx context.Context, name string, max int64) ([]byte, int64, error) {
	cr, err := b.open(ctx, name)
	switch {
	case err != nil:
		return nil, 0, err
	case cr == nil:
		data, err := b.GetBytes(ctx, name)
		return data, int64(len(data)), err
	case int64(cr.info.Size) > max:
		return nil, int64(cr.info.Size), nil
	}
	// A small object is a chunk or two: read with requests.
	data, err := io.ReadAll(cr)
	if err != nil {
		return nil, 0, err
	}
	return data, int64(len(data)), nil
}

func (b blobs) GetBytes(ctx context.Context, name string) ([]byte, error) {
	cr, err := b.open(ctx, name)
	if err != nil {
		return nil, err
	}
	if cr == nil {
		data, err := b.os.GetBytes(ctx, name)
		return data, storeErr(err)
	}
	var r io.Reader = cr
	if cr.info.Chunks > 1 {
		rc, err := b.stream(ctx, cr)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		r = rc
	}
	// Room for the object and the read that finds its end (ReadFrom asks
	// for bytes.MinRead more): a buffer of the object's size alone was
	// grown to twice it, and copied, at every read of a dataset block.
	buf := bytes.NewBuffer(make([]byte, 0, min(cr.info.Size, 64<<20)+bytes.MinRead))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pushTime is how long a read of an object of size bytes through a
// consumer may take before it goes on with requests: pushBase, and a
// second for every 4 MiB.
func pushTime(size uint64) time.Duration {
	return pushBase + time.Duration(size/(4<<20))*time.Second
}

var pushBase = 5 * time.Second

// stream reads an object of several chunks through a consumer of its
// stream (pulled), which brings chunks faster than a request per chunk (a
// message get answers in JSON, the data in base64; reading dataset blocks
// with requests cut a word count's speed by a third). A chunk JetStream
// finds damaged stops that consumer: a read that waits stallTime for its
// next chunk, or outlives pushTime, goes on with requests from where it
// was, which finish it (a busy store, a slow reader) or say the object is
// damaged. A consumer that cannot be made leaves the read to requests.
//
// The library's Get, which this replaced, hands each chunk to its reader
// through a pipe from its subscription's goroutine; when its context
// ended while it made its consumer it returned an error with a chunk on
// its way, and that goroutine waited on the pipe for good (a CI run's leak
// check found one in internal/app; 18 in a probe of 3,000 Gets under
// short deadlines). A fetch ends by itself, and holds no more chunks than
// it asked for.
func (b blobs) stream(ctx context.Context, cr *chunkReader) (io.ReadCloser, error) {
	lctx, cancel := context.WithTimeout(ctx, pushTime(cr.info.Size))
	p, err := b.pull(lctx, cr)
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, storeErr(ctx.Err())
		}
		return io.NopCloser(cr), nil
	}
	return &stalling{ctx: ctx, cancel: cancel, p: p, cr: cr}, nil
}

// pull makes a consumer of the chunks cr reads, deleted when the read
// ends, or with ctx (a reader that neither read to the end nor closed).
// One whose making ctx cut short goes by itself once idle for as long as a
// read through it may last (a read goes on with requests after that).
func (b blobs) pull(ctx context.Context, cr *chunkReader) (*pulled, error) {
	cfg := jetstream.ConsumerConfig{
		FilterSubject: cr.subject, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, Replicas: 1, InactiveThreshold: pushTime(cr.info.Size) + 5*time.Second,
	}
	cons, err := b.js.CreateConsumer(ctx, "OBJ_"+b.bucket, cfg)
	if err != nil {
		return nil, err
	}
	p := &pulled{ctx: ctx, js: b.js, stream: "OBJ_" + b.bucket, cons: cons, info: cr.info, h: sha256.New()}
	context.AfterFunc(ctx, p.close)
	return p, nil
}

// pullChunks is how many chunks a fetch asks for (1 MiB), the most a read
// holds for its reader: a download to a slow client holds no more. (As
// fast as 16 here; two fetches on their way at once, the next asked while
// one was read, made reads slower: the second often came tens of
// milliseconds late.)
const pullChunks = 8

// pulled reads an object's chunks with fetches from a consumer, and checks
// at the end that it read as many chunks and bytes as the object's info
// says, with its digest. Its reads end with ctx.
type pulled struct {
	ctx         context.Context
	js          jetstream.JetStream
	stream      string
	cons        jetstream.Consumer
	batch       jetstream.MessageBatch // the fetch on its way
	end         context.CancelFunc     // batch's context's
	asked, got  uint32                 // chunks batch asked for, and brought
	unreachable int                    // fetches answered by no one
	info        *jetstream.ObjectInfo
	h           hash.Hash
	chunks      uint32
	size        uint64
	buf         []byte
	once        sync.Once // of close
}

// errStalled says a fetch brought no chunk within its time.
var errStalled = errors.New("no chunk came within the fetch's time")

// read reads the object's next bytes, waiting at most stall for a chunk.
func (p *pulled) read(b []byte, stall time.Duration) (int, error) {
	for len(p.buf) == 0 {
		if p.chunks == p.info.Chunks {
			if p.size != p.info.Size || jetstream.GetObjectDigestValue(p.h) != p.info.Digest {
				return 0, jetstream.ErrDigestMismatch
			}
			p.close()
			return 0, io.EOF
		}
		if err := p.ctx.Err(); err != nil {
			// The read's time is up: what a fetch brought and the
			// reader did not take yet is read again with requests (a
			// select would take it or not, at random).
			return 0, err
		}
		if p.batch == nil {
			// A fetch within a context of its own: it ends with the
			// read, and nothing of it runs on.
			fctx, end := context.WithTimeout(p.ctx, stall)
			asked := min(pullChunks, p.info.Chunks-p.chunks)
			batch, err := p.cons.Fetch(int(asked), jetstream.FetchContext(fctx))
			if err != nil {
				end()
				return 0, err
			}
			p.batch, p.end, p.asked, p.got = batch, end, asked, 0
		}
		var m jetstream.Msg
		select {
		case m = <-p.batch.Messages():
		case <-p.ctx.Done():
			return 0, p.ctx.Err()
		}
		if m == nil { // the fetch ended
			err := p.batch.Error()
			p.batch = nil
			p.end()
			switch {
			case p.got == p.asked:
				continue
			case p.ctx.Err() != nil:
				return 0, p.ctx.Err()
			case errors.Is(err, nats.ErrNoResponders) && p.unreachable < 8:
				// A consumer just made on another server of a cluster
				// is not reachable yet: the interest in its fetches is
				// still on its way through the routes.
				select {
				case <-p.ctx.Done():
					return 0, p.ctx.Err()
				case <-time.After(time.Duration(5<<p.unreachable) * time.Millisecond):
				}
				p.unreachable++
				continue
			case err == nil, errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
				// Short of what it asked for within its time: a chunk
				// JetStream finds damaged stops the consumer there.
				return 0, errStalled
			}
			return 0, err
		}
		p.got++
		p.chunks++
		p.size += uint64(len(m.Data()))
		if p.size > p.info.Size {
			return 0, jetstream.ErrDigestMismatch
		}
		p.h.Write(m.Data())
		p.buf = m.Data()
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

// close deletes the consumer: left to expire, reads in a row would reach
// the stream's limit of consumers. A fetch under way ends with ctx.
func (p *pulled) close() {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 5*time.Second)
		defer cancel()
		_ = p.js.DeleteConsumer(ctx, p.stream, p.cons.CachedInfo().Name)
	})
}

// stallTime is how long a reader waits for an object's next chunk from its
// consumer before the read goes on with requests: longer than a busy
// store's pause, shorter than a person's patience. Going on with requests
// is slower, never wrong.
var stallTime = 3 * time.Second

// stalling reads an object through a consumer (p), and goes on with
// requests (cr) from where it was once the consumer stalls, its time is
// up, or what it brought does not match the object's info.
type stalling struct {
	ctx    context.Context
	cancel context.CancelFunc // p's context
	p      *pulled
	cr     *chunkReader
	off    int64 // bytes read
	byReq  bool  // reading with cr
	closed bool
}

func (s *stalling) Read(b []byte) (int, error) {
	if s.byReq {
		return s.cr.Read(b)
	}
	n, err := s.p.read(b, stallTime)
	switch {
	case err == nil:
		s.off += int64(n)
		return n, nil
	case err == io.EOF:
		s.leave()
		return 0, io.EOF
	case s.ctx.Err() != nil:
		return 0, storeErr(s.ctx.Err())
	}
	// Stalled (a busy store, a damaged chunk, a consumer placed on a
	// server that lags), the consumer's time up (a slow reader), or bytes
	// that do not match: the requests read on and say whether the object
	// is damaged.
	return s.byRequests(b)
}

// byRequests leaves the consumer and goes on with requests, past what was
// read.
func (s *stalling) byRequests(b []byte) (int, error) {
	s.leave()
	s.byReq = true
	if _, err := io.CopyN(io.Discard, s.cr, s.off); err != nil {
		return 0, err
	}
	return s.cr.Read(b)
}

// leave deletes the consumer.
func (s *stalling) leave() {
	if s.closed {
		return
	}
	s.closed = true
	s.p.close()
	s.cancel()
}

func (s *stalling) Close() error {
	s.leave()
	return nil
}

// chunkReader reads an object's chunks in order, one request each, and
// checks at the end that it read as many chunks and bytes as the object's
// info says, with its digest.
type chunkReader struct {
	ctx     context.Context
	st      jetstream.Stream
	os      jetstream.ObjectStore
	subject string
	info    *jetstream.ObjectInfo
	h       hash.Hash
	seq     uint64 // where the next chunk is looked for
	chunks  uint32 // chunks read
	size    uint64 // bytes read
	buf     []byte
	err     error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next reads the next chunk into buf, or checks the whole at the end.
func (r *chunkReader) next() error {
	name := r.info.Name
	if r.chunks == r.info.Chunks {
		if r.size != r.info.Size || jetstream.GetObjectDigestValue(r.h) != r.info.Digest {
			return fmt.Errorf("object %s is %w: its %d bytes do not match its digest", name, store.ErrDamaged, r.size)
		}
		return io.EOF
	}
	m, err := r.st.GetMsg(r.ctx, r.seq, jetstream.WithGetMsgSubject(r.subject))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) && r.chunks == 0:
		// Its info was there and its data is not: deleted (or replaced)
		// meanwhile, unless its info still says so (a put writes the
		// chunks first): then the data is damaged, as for a later chunk.
		// A damaged object of one chunk read as deleted, which a job
		// reports as an input lost rather than damaged.
		if now, ierr := r.os.GetInfo(r.ctx, name); ierr == nil && now.NUID == r.info.NUID && r.info.Chunks > 0 {
			return fmt.Errorf("object %s is %w: none of its %d chunks is readable", name, store.ErrDamaged, r.info.Chunks)
		}
		return fmt.Errorf("object %s: %w: its data is gone", name, store.ErrNotFound)
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("object %s is %w: %d of its %d chunks are readable", name, store.ErrDamaged, r.chunks, r.info.Chunks)
	case err != nil:
		return storeErr(err)
	}
	r.seq = m.Sequence + 1
	r.chunks++
	r.size += uint64(len(m.Data))
	if r.size > r.info.Size {
		return fmt.Errorf("object %s is %w: its chunks hold more than its %d bytes", name, store.ErrDamaged, r.info.Size)
	}
	r.h.Write(m.Data)
	r.buf = m.Data
	return nil
}

func (b blobs) Size(ctx context.Context, name string) (int64, error) {
	info, err := b.os.GetInfo(ctx, name)
	if err != nil {
		return 0, storeErr(err)
	}
	return int64(info.Size), nil
}

// Delete deletes object name and leaves nothing of it: its info, then
// its chunks. The library's Delete leaves a marker under the name (its
// info, marked deleted) for good, so that every job output and dataset
// block ever deleted kept a message, and an entry of JetStream's index of
// subjects in every server's memory. The info goes first, and only the
// revision read (a put of the same name since has a later one and stays):
// the object is gone for every reader at once, and chunks a crash leaves
// behind go with the store's sweep (SweepChunks).
func (b blobs) Delete(ctx context.Context, name string) error {
	if b.st == nil {
		if err := b.os.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return storeErr(err)
		}
		return nil
	}
	meta := b.metaSubject(name)
	m, found, err := leaderGet(ctx, b.js, "OBJ_"+b.bucket, map[string]any{"last_by_subj": meta})
	if err != nil || !found {
		return err
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return fmt.Errorf("the info of object %s in %s does not read: %w", name, b.bucket, err)
	}
	if err := b.st.Purge(ctx, jetstream.WithPurgeSubject(meta), jetstream.WithPurgeSequence(m.Seq+1)); err != nil {
		return storeErr(err)
	}
	if !info.Deleted && info.NUID != "" {
		b.purge("$O." + b.bucket + ".C." + info.NUID)
	}
	return nil
}

// metaSubject is the subject of object name's info.
func (b blobs) metaSubject(name string) string {
	return "$O." + b.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
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

// archive is the port of the archive stream: finished jobs' records, all
// on one subject, read by sequence.
type archive struct {
	js jetstream.JetStream
	st jetstream.Stream
}

// archiveSumHeader holds a record's CRC-32C, hex: JetStream checks its
// own checksums when it recovers a file, not when it serves a message, and
// flipped bytes in a record of the archive would be served as the job's.
const archiveSumHeader = "Mr-Sum"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func archiveSum(data []byte) string {
	return strconv.FormatUint(uint64(crc32.Checksum(data, castagnoli)), 16)
}

// intact reports whether a record of the archive is as appended (a record
// with no sum, of no version that wrote one, is taken as it is).
func intact(h nats.Header, data []byte) bool {
	sum := h.Get(archiveSumHeader)
	return sum == "" || sum == archiveSum(data)
}

func (a archive) Append(ctx context.Context, key string, data []byte) (uint64, error) {
	ack, err := a.js.PublishMsg(ctx, &nats.Msg{Subject: ArchiveSubject, Data: data, Header: nats.Header{ArchiveKeyHeader: {key}, archiveSumHeader: {archiveSum(data)}}})
	if err != nil {
		return 0, storeErr(err)
	}
	return ack.Sequence, nil
}

// Read asks the stream's leader (the stream allows no direct gets): a
// follower may not hold a record just appended.
func (a archive) Read(ctx context.Context, seq uint64) (string, []byte, error) {
	m, err := a.st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil, fmt.Errorf("%w: archived record %d: %w", store.ErrNotFound, seq, err)
	}
	if err != nil {
		return "", nil, storeErr(err)
	}
	key := m.Header.Get(ArchiveKeyHeader)
	if !intact(m.Header, m.Data) {
		return key, nil, fmt.Errorf("archived record %d of job %s: %w (its bytes fail their checksum)", seq, key, store.ErrDamaged)
	}
	return key, m.Data, nil
}

// JetStream's error codes for the deletion of a message that is not
// there: JSStreamMsgDeleteFailedF ("no message found") when the store
// says so, JSSequenceNotFoundErrF ("sequence N not found") when it removed
// nothing, which is its answer for a message removed already.
const (
	msgDeleteFailed  = 10057
	sequenceNotFound = 10043
)

// Remove removes the record at seq; one removed already is no error. Two
// removals of a copy happen: a job's deleter removes its copies, and every
// server whose watch sees the deletion removes those it indexed that are
// still there 5 s later (store.Jobs.removeSeenDeleted), which a deleter
// removing them at that moment may race.
// Until 2026-12-07 the second one's "sequence N not found" was taken for
// a failure and tried again for 20 s, holding up the removals queued
// behind it (removeLater takes them in turn): under retention's deletes
// the copies of deleted jobs piled up in the archive, on disk and in every
// server's index of it.
func (a archive) Remove(ctx context.Context, seq uint64) error {
	err := a.st.DeleteMsg(ctx, seq)
	if removedAlready(err) {
		return nil
	}
	return storeErr(err)
}

// removedAlready reports whether err is JetStream's answer to the
// deletion of a message that is not there. The library gives the
// server's answer as text.
func removedAlready(err error) bool {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	if !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return false
	}
	text := err.Error()
	return strings.Contains(text, "err_code="+strconv.Itoa(sequenceNotFound)+" ") ||
		strings.Contains(text, "err_code="+strconv.Itoa(msgDeleteFailed)+" ") && strings.Contains(text, "no message found")
}

// Last asks for the last message of the subject: the last one there (the
// stream's last sequence may be a removed one's).
func (a archive) Last(ctx context.Context) (uint64, error) {
	m, err := a.st.GetLastMsgForSubject(ctx, ArchiveSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, storeErr(err)
	}
	return m.Sequence, nil
}

// Through returns the last sequence the stream's leader has passed,
// whether or not a record is there now (a removed last one counts).
func (a archive) Through(ctx context.Context) (uint64, error) {
	info, err := a.st.Info(ctx)
	if err != nil {
		return 0, storeErr(err)
	}
	return info.State.LastSeq, nil
}

// Follow reads the stream with an ordered consumer of its own, from the
// first message.
func (a archive) Follow(ctx context.Context) (store.Watcher, error) {
	cons, err := a.js.OrderedConsumer(ctx, ArchiveStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, storeErr(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return nil, storeErr(err)
	}
	f := &follower{js: a.js, cons: cons, it: it, ch: make(chan *store.Entry, 256), stop: make(chan struct{}), done: make(chan struct{})}
	go f.run(ctx, info.NumPending)
	return f, nil
}

type follower struct {
	js   jetstream.JetStream
	mu   sync.Mutex // guards cons and it, which reopen replaces
	cons jetstream.Consumer
	it   jetstream.MessagesContext
	ch   chan *store.Entry
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func (f *follower) iter() jetstream.MessagesContext {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.it
}

func (f *follower) stopping(ctx context.Context) bool {
	select {
	case <-f.stop:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// reopen makes the ordered consumer again from stream sequence from, until
// it can or the follower stops: the library closes an ordered consumer's
// iterator for good when it cannot make its consumer again (a server cut
// off from the others by a partition), and a follower that stopped there
// would leave its read model without the archive's records.
func (f *follower) reopen(ctx context.Context, from uint64) bool {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := f.js.OrderedConsumer(cctx, ArchiveStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
		cancel()
		if err == nil {
			var it jetstream.MessagesContext
			if it, err = cons.Messages(jetstream.PullMaxMessages(512)); err == nil {
				f.mu.Lock()
				f.cons, f.it = cons, it
				f.mu.Unlock()
				if f.stopping(ctx) {
					it.Stop()
					return false
				}
				return true
			}
		}
		select {
		case <-time.After(wait):
		case <-f.stop:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// followStuck is how long a follower's first read of the archive waits
// for a record the consumer says is pending before it makes the consumer
// again (a var: tests shorten it).
var followStuck = 5 * time.Second

func (f *follower) Updates() <-chan *store.Entry { return f.ch }

func (f *follower) Stop() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

// run sends the messages as entries, and nil once those stored when it
// began are sent: at the message that says none is pending, or when the
// consumer says so (the last ones may have been removed before their
// delivery).
func (f *follower) run(ctx context.Context, pending uint64) {
	defer close(f.done)
	defer close(f.ch)
	msgs := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	wg.Go(func() {
		var last uint64 // the stream sequence of the last message passed on
		for !f.stopping(ctx) {
			m, err := f.iter().Next()
			switch {
			case err != nil && f.stopping(ctx):
				return
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				if !f.reopen(ctx, last+1) {
					return
				}
				continue
			case err != nil:
				// The ordered consumer makes itself again (a leader
				// elected, a server back): wait a little, not spin.
				select {
				case <-time.After(100 * time.Millisecond):
					continue
				case <-f.stop:
					return
				case <-ctx.Done():
					return
				}
			}
			if meta, err := m.Metadata(); err == nil {
				last = meta.Sequence.Stream
			}
			select {
			case msgs <- m:
			case <-f.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	defer func() {
		f.iter().Stop()
		wg.Wait()
		f.mu.Lock()
		cons := f.cons
		f.mu.Unlock()
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = f.js.DeleteConsumer(dctx, ArchiveStream, info.Name)
		}
	}()
	send := func(e *store.Entry) bool {
		select {
		case f.ch <- e:
			return true
		case <-f.stop:
		case <-ctx.Done():
		}
		return false
	}
	initial := pending > 0
	if !initial && !send(nil) {
		return
	}
	// got counts the stored messages delivered: JetStream passes over a
	// message whose bytes fail its checksum without a word, and one fewer
	// than it counted is a damaged one (Entry.Damaged with no key).
	var got uint64
	endInitial := func() bool {
		initial = false
		if got < pending && !send(&store.Entry{Damaged: true, Revision: pending - got}) {
			return false
		}
		return send(nil)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case m := <-msgs:
			last = time.Now()
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			e := &store.Entry{Key: m.Headers().Get(ArchiveKeyHeader), Value: m.Data(), Revision: meta.Sequence.Stream}
			if !intact(m.Headers(), e.Value) {
				e.Value, e.Damaged = nil, true
			}
			if !send(e) {
				return
			}
			if initial {
				got++
			}
			if initial && meta.NumPending == 0 && !endInitial() {
				return
			}
		case <-tick.C:
			if !initial || time.Since(last) < time.Second {
				continue // none pending, or still arriving
			}
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			f.mu.Lock()
			cons := f.cons
			f.mu.Unlock()
			info, err := cons.Info(ictx)
			cancel()
			if err == nil && info.NumPending == 0 {
				if !endInitial() {
					return
				}
				continue
			}
			if time.Since(last) >= followStuck {
				// Records said pending and none delivered for that long:
				// a CI run saw a server's restart wait for them for 16
				// minutes, its consumer pulling and getting nothing. The
				// consumer is made again from the last record passed on
				// (the reading goroutine reopens it as its iterator ends).
				last = time.Now()
				f.iter().Stop()
			}
		case <-f.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}
