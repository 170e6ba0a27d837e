// Package store is what mrcluster keeps, seen from the code that uses it:
// the ports through which the coordinator, the workers, the read model and
// the data engine reach their state, with no knowledge of the substrate.
//
// Three kinds of storage serve every need:
//   - KV, a bucket of keys with revisions, compare-and-set and watch: job
//     records, worker statuses, dataset manifests, idempotency keys;
//   - Stream, messages filed by key (a job id), each taken by one reader of
//     a shared consumer under a lease: the task queue and the task results;
//   - Blobs, named objects of any size: dataset blocks, map and reduce
//     outputs.
//
// and Notices carry what needs no storage (cancel a job's tasks, stop a
// task's other copies, a task started). Store groups one of each that
// mrcluster uses; package natsx makes one on JetStream, package memstore
// one in memory for unit tests, and package storetest checks that both
// behave alike.
package store

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
)

// Errors every implementation returns, to be tested with errors.Is.
var (
	// ErrNotFound: no such key or object.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a compare-and-set lost the race (the key exists, or
	// its revision moved).
	ErrConflict = errors.New("changed by another writer")
	// ErrNotStored: a publish reached no stream, so nothing was stored and
	// publishing again makes no duplicate.
	ErrNotStored = errors.New("no stream stored the message")
	// ErrDamaged: an object's stored bytes are not the ones written (a
	// part the store found damaged and will not serve, or bytes that do
	// not match its digest). Reading it again gives the same answer.
	ErrDamaged = errors.New("damaged in the store")
	// ErrBehind: this process has not yet read the job archive as far
	// as it goes (a server just started, or continued after a pause);
	// asking again shortly answers.
	ErrBehind = errors.New("try again")
	// ErrNoRoom: the store holds all it may (the limit of what its
	// streams hold, or the disk under them): deleting data, or more disk,
	// makes room; trying again at once fails again.
	ErrNoRoom = errors.New("the store has no room for it")
)

// Entry is one value of a KV bucket.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	// Deleted marks the removal of the key (in a watch).
	Deleted bool
	// Archived marks a finished job's record read from the archive (in
	// Jobs.Watch): the state it finished in, which the bucket's watch
	// usually delivers too.
	Archived bool
	// Damaged marks a record of the archive whose bytes are not those
	// written (Archive.Follow): its Value is not to be used.
	Damaged bool
}

// KV is a bucket of keys, each with the revision of its last write.
type KV interface {
	// Get returns the key's entry, or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// Create writes a key that does not exist, or fails with ErrConflict.
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	// Update writes a key whose last revision is rev, or fails with
	// ErrConflict.
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
	// Put writes a key whatever its revision.
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	// Delete removes a key, if it is there; with rev > 0, only at that
	// revision (ErrConflict otherwise).
	Delete(ctx context.Context, key string, rev uint64) error
	// Forget removes what is left of deleted keys: a deletion stays
	// in the bucket as a marker, so that watchers learn of it, and costs
	// its key's room for ever. Watchers are not told: call it once they
	// have seen the deletion.
	Forget(ctx context.Context, keys ...string) error
	// Keys lists the keys, in no order.
	Keys(ctx context.Context) ([]string, error)
	// Entries returns the entries whose keys start with prefix (whole
	// dot-separated parts of keys, ending with '.'; "" for all), in the
	// order of their last write.
	Entries(ctx context.Context, prefix string) ([]Entry, error)
	// DeletePrefix removes every key that starts with prefix (as for
	// Entries) in one request, and what is left of them; watchers are not
	// told, as for Forget.
	DeletePrefix(ctx context.Context, prefix string) error
	// Watch sends every entry, then nil once they are all sent, then each
	// change until ctx ends or Stop.
	Watch(ctx context.Context) (Watcher, error)
}

// KVCreateAll is a KV that creates many keys at once, their writes in
// flight together rather than a round trip each: a batch submit's job
// records.
type KVCreateAll interface {
	// CreateAll creates each key with its value: the revision or the
	// error (as Create's) of each, in order.
	CreateAll(ctx context.Context, keys []string, values [][]byte) ([]uint64, []error)
}

// KVExpiring is a KV whose writes can expire: a value written with a ttl
// leaves the bucket that long after, silently (watchers are not told, and
// nothing of the key is left). The job bucket's finished records expire so
// once the archive holds them.
type KVExpiring interface {
	// WriteTTL writes key at revision rev (0: a key that has no value)
	// with a value that expires after ttl; ErrConflict when the revision
	// moved.
	WriteTTL(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error)
	// ForgetUpTo removes key's values up to revision rev, silently (as
	// Forget), leaving a later one.
	ForgetUpTo(ctx context.Context, key string, rev uint64) error
}

// Archive is a log of records filed by sequence, all under one subject of
// the store: what a finished job's record moves to, so that the store
// keeps no per-key index for it (JetStream's costs about 200 bytes of
// memory per key, and the jobs of a week are hundreds of thousands).
type Archive interface {
	// Append stores data as key's and returns its sequence.
	Append(ctx context.Context, key string, data []byte) (uint64, error)
	// Read returns the record at seq, or ErrNotFound, or ErrDamaged when
	// its bytes are not those appended.
	Read(ctx context.Context, seq uint64) (key string, data []byte, err error)
	// Remove deletes the record at seq, if it is there.
	Remove(ctx context.Context, seq uint64) error
	// Last returns the sequence of the last record there (0: none).
	Last(ctx context.Context) (uint64, error)
	// Follow sends every record (Entry.Revision is its sequence; Damaged
	// when its bytes are not those appended), then nil once they are all
	// sent, then each record appended, until ctx ends or Stop. Removals are
	// not sent.
	Follow(ctx context.Context) (Watcher, error)
}

// ArchiveThrough is an Archive that says how far its leader has gone,
// removed records included: a copy at a sequence beyond it is one the
// leader has not received yet, not one lost.
type ArchiveThrough interface {
	Through(ctx context.Context) (uint64, error)
}

// Watcher follows a KV bucket.
type Watcher interface {
	Updates() <-chan *Entry
	Stop()
}

// Message is one message to put on a stream.
type Message struct {
	// Key files the message: a job id.
	Key  string
	Data []byte
	// ID, when set, makes a second publish of the same ID within a few
	// minutes a no-op.
	ID string
	// Priority is the lane of a task queue the message goes to: 1 (low)
	// to 4 (high); 0 is the default lane's, job.DefaultPriority.
	Priority int
	// Lane, when set, is a kind's own lane instead (SetLane).
	Lane string
	// Later marks a task of a job under way (job.Task.UnderWay): it goes
	// before the new work of its priority, so that a job's later phase
	// does not wait behind the jobs submitted after it.
	Later bool
}

// Stream is a durable log of messages filed by key, read by one shared
// consumer: each message goes to one reader, who holds it under a lease
// until it acks; a message whose lease runs out goes to another reader.
type Stream interface {
	// Publish stores msgs and returns, for each, nil once it is stored or
	// why it is not (ErrNotStored when publishing again is safe). It
	// returns by ctx's deadline.
	Publish(ctx context.Context, msgs ...Message) []error
	// Send publishes msg without waiting for the store's answer.
	Send(msg Message) error
	// Purge removes every message of key.
	Purge(ctx context.Context, key string) error
	// Release gives back to the queue, to be delivered again at once, the
	// message of a delivery that another process held (its Lease), whose
	// holder is known to be dead: without it the message waits out its
	// lease. Only for a delivery known to be the message's latest: a
	// release of an earlier one would deliver it once more.
	Release(ctx context.Context, lease string) error
	// Holds reports whether the message at seq is still in the stream:
	// false once it was purged, or acknowledged in a work queue.
	Holds(ctx context.Context, seq uint64) (bool, error)
	// PurgeAcked removes the messages of key that the shared consumer of a
	// stream with one (the results) acknowledged: all of them, or
	// (JetStream) those before the oldest message of the stream not
	// acknowledged yet.
	PurgeAcked(ctx context.Context, key string) error
	// Fetch takes up to max messages from the shared consumer and calls
	// fn with each as it arrives (under its lease from then on). It
	// returns when max came or wait passed, or earlier once some came.
	// A stream with priority lanes (the task queue) gives the messages of
	// its highest lane that has any first, then the next lane's.
	Fetch(ctx context.Context, max int, wait time.Duration, fn func(Delivery)) error
	// FetchFrom takes up to max messages of one priority lane, without
	// waiting for any: what keeps a low lane from starving.
	FetchFrom(ctx context.Context, priority, max int, fn func(Delivery)) error
	// SetLane makes a kind's own lane of the task queue, whose messages
	// are leased to at most maxLeased readers at once in the whole
	// cluster (0: no bound), and at most rate ("N/s", "N/m"; "": no
	// bound) per second or minute. Fetch takes from kind lanes first.
	SetLane(ctx context.Context, lane string, maxLeased int, rate string) error
	// Read returns the data of every message of key, oldest first, up to
	// limit: a history, not a consumption. When some cannot be read (the
	// store's files were damaged) it returns the others with ErrDamaged.
	Read(ctx context.Context, key string, limit int) ([][]byte, error)
	// Scan calls fn with the data of every message of the stream, of
	// every key, oldest first (a stream may hold messages of no key, such
	// as the task queue's anchors); a message the store cannot read (its
	// files were damaged) is passed over.
	Scan(ctx context.Context, fn func(data []byte)) error
	// Info counts the messages waiting and those leased, and says how
	// long a lease lasts without a sign of life.
	Info(ctx context.Context) (StreamInfo, error)
}

// StreamInfo is the state of a stream's shared consumer.
type StreamInfo struct {
	Waiting int
	Leased  int
	AckWait time.Duration
	// Last is the sequence of the last message stored when the info was
	// taken, and Acked how far the shared consumer (each of its lanes) had
	// acknowledged, or passed as gone, every message then: Acked >= n says
	// every message up to sequence n was handled.
	Last, Acked uint64
}

// Delivery is a message taken from a stream, held under a lease.
type Delivery interface {
	Key() string
	Data() []byte
	// Delivered counts the deliveries of this message, this one included:
	// more than one means earlier readers lost it.
	Delivered() int
	// Priority is the lane the message came from (job.DefaultPriority for
	// a stream without lanes).
	Priority() int
	// Seq is the message's place in its stream: the deliveries of one
	// message share it.
	Seq() uint64
	// Stored is when the stream stored the message (zero when unknown).
	Stored() time.Time
	// Ack ends the lease: the message is done.
	Ack() error
	// Nak gives the message back, to be delivered again after delay.
	Nak(delay time.Duration) error
	// Term drops a message that can never be handled.
	Term() error
	// InProgress renews the lease.
	InProgress() error
	// Lease names this delivery for Stream.Release ("" when the store
	// has no such name): what a process that finds this one's holder
	// dead can give back for it.
	Lease() string
}

// Blobs is a store of named objects.
type Blobs interface {
	// Put stores the object read from r under name, replacing any.
	Put(ctx context.Context, name string, r io.Reader) error
	// Get opens the object (ErrNotFound when there is none); the reader
	// reads within ctx.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// GetBytes reads the whole object.
	GetBytes(ctx context.Context, name string) ([]byte, error)
	// GetSmall reads the whole object when it is at most max bytes, and
	// returns its size (with no data when it is larger): one call where
	// a Size and a GetBytes would look the object up twice.
	GetSmall(ctx context.Context, name string, max int64) ([]byte, int64, error)
	// Size returns the object's size, or ErrNotFound.
	Size(ctx context.Context, name string) (int64, error)
	// Delete removes the object, if it is there.
	Delete(ctx context.Context, name string) error
}

// Notices carries messages that need no storage: a subscriber that is
// not there misses them.
type Notices interface {
	// Publish sends data on subject.
	Publish(subject string, data []byte) error
	// Subscribe calls fn with each message whose subject starts with
	// prefix; with a group, one subscriber of the group gets each. Calling
	// the returned function ends the subscription.
	Subscribe(prefix, group string, fn func(subject string, data []byte)) (func(), error)
}

// Store is everything mrcluster keeps.
type Store struct {
	// Jobs holds job records by id.
	Jobs *Jobs
	// Workers holds worker statuses by worker key; an entry expires when
	// its worker stops heartbeating.
	Workers KV
	// Datasets holds dataset manifests by name.
	Datasets KV
	// Idempotency maps submits' idempotency keys to their jobs.
	Idempotency KV
	// Health takes each server's write probe.
	Health KV

	// Tasks is the task queue, by job id; Results the task results.
	Tasks   Stream
	Results Stream

	// Blocks holds dataset blocks, Shuffle map outputs, Output reduce
	// outputs.
	Blocks  Blobs
	Shuffle Blobs
	Output  Blobs

	// Kinds holds uploaded kinds by name, Modules their WebAssembly
	// modules by content hash.
	Kinds   KV
	Modules Blobs

	// Tokens counts the starts of rate-limited kinds per window (package
	// natsx's kind lanes).
	Tokens KV
	// Schedules holds the cron schedules by name.
	Schedules KV
	// KindState holds the state of kinds by name: paused or not.
	KindState KV

	Notices *Notes
}

// ParseRate reads a rate limit, "N/s" or "N/m": at most N per second or
// per minute; 0 when v is none.
func ParseRate(v string) (int, time.Duration) {
	n, unit, ok := strings.Cut(v, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count <= 0 || unit != "s" && unit != "m" {
		return 0, 0
	}
	if unit == "m" {
		return count, time.Minute
	}
	return count, time.Second
}

// WorkerTTL is how long a worker's status lives without a heartbeat.
const WorkerTTL = 15 * time.Second

// Retry calls fn until it succeeds, for up to d, backing off: what a server
// of a cluster does with a call that times out while a leader is being
// elected.
func Retry(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(d)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := fn(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}
