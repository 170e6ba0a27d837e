package store

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// The archive of finished jobs' records. A finished job's record is
// appended to the archive, then written to the bucket with a time to live
// (Jobs.ArchiveAfter): the bucket forgets it by itself, silently, and the
// store keeps no per-key index of it (JetStream keeps about 200 bytes of
// memory for every key of a bucket, and the finished jobs of a week are
// hundreds of thousands). Every process that watches the jobs
// (Jobs.Watch) keeps an index of the archive, job id to sequence, which
// Get reads finished jobs through.

// DefaultArchiveAfter is how long a finished job's record stays in the
// bucket besides the archive: a watch of the bucket that lags less than
// this sees every record; one that lags more (a paused server) gets the
// finished state from the archive.
const DefaultArchiveAfter = 10 * time.Second

// archiveIndex maps job ids (hashed) to the sequences of their archived
// records: one almost always, several when a write after the append lost
// its race (its copy is removed) or a retried job finished again.
type archiveIndex struct {
	mu   sync.Mutex
	seed maphash.Seed
	one  map[uint64]uint64   // the newest copy
	more map[uint64][]uint64 // older copies still stored, rare
	// deleted notes the jobs whose deletion a watch delivered, by when:
	// a copy of one that the archive delivers after its deletion (a
	// follower behind the bucket's) is removed, not indexed.
	deleted map[uint64]time.Time
	// missed notes, by sequence, when the archive first answered "not
	// found" for a copy indexed (missedCopy).
	missed map[uint64]time.Time
	// damagedN counts the damaged records read, damagedKeys names the
	// jobs of the first maxDamaged.
	damagedN    int
	damagedKeys []string
}

// maxDamaged bounds the damaged records an index names.
const maxDamaged = 100

// damaged notes n damaged records, of job key ("": records the store did
// not deliver, their jobs unknown).
func (x *archiveIndex) damaged(key string, n uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.damagedN += int(n)
	if key != "" && len(x.damagedKeys) < maxDamaged {
		x.damagedKeys = append(x.damagedKeys, key)
	}
}

// Damaged returns how many records of the archive a watch found damaged
// (their bytes fail their checksums, or the store passed over them; their
// jobs are left out), and the jobs of the first ones it could name.
func (s *Jobs) Damaged() (int, []string) {
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	return s.idx.damagedN, append([]string(nil), s.idx.damagedKeys...)
}

// forgetDeletedAfter is how long a deletion is remembered.
const forgetDeletedAfter = 10 * time.Minute

func (x *archiveIndex) hashLocked(key string) uint64 {
	if x.one == nil {
		x.seed = maphash.MakeSeed()
		x.one, x.more, x.deleted, x.missed = map[uint64]uint64{}, map[uint64][]uint64{}, map[uint64]time.Time{}, map[uint64]time.Time{}
	}
	return maphash.String(x.seed, key)
}

// add indexes a copy of key's record at seq; false when key was deleted.
func (x *archiveIndex) add(key string, seq uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.hashLocked(key)
	if _, gone := x.deleted[h]; gone {
		return false
	}
	old, ok := x.one[h]
	switch {
	case !ok:
		x.one[h] = seq
	case old < seq:
		x.one[h] = seq
		x.keepOlder(h, old)
	case old > seq:
		// A copy this process indexed as it wrote it, delivered
		// again by the follower, or an older one delivered late.
		x.keepOlder(h, seq)
	}
	return true
}

// keepOlder adds seq to h's older copies, kept in order and once each.
func (x *archiveIndex) keepOlder(h, seq uint64) {
	more := x.more[h]
	if i, found := slices.BinarySearch(more, seq); !found {
		x.more[h] = slices.Insert(more, i, seq)
	}
}

// seqs returns the sequences of key's copies, newest first.
func (x *archiveIndex) seqs(key string) []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.hashLocked(key)
	newest, ok := x.one[h]
	if !ok {
		return nil
	}
	out := []uint64{newest}
	for i := len(x.more[h]) - 1; i >= 0; i-- {
		out = append(out, x.more[h][i])
	}
	return out
}

// forgetMissedAfter is how long the archive answers "not found" for a copy
// indexed before the index forgets it: a copy removed (its finishing write
// lost its race, or its job was deleted while this server's watch was
// behind) answers so for good, a copy that a lagging or deposed stream
// leader did not find for a while (the partitions' no-quorum time).
const forgetMissedAfter = 2 * time.Minute

// missedCopy notes that the archive answered "not found" for key's copy at
// seq, at now, and forgets the copy (reporting true) when it has answered
// so since more than forgetMissedAfter ago.
func (x *archiveIndex) missedCopy(key string, seq uint64, now time.Time) bool {
	x.mu.Lock()
	first, ok := x.missed[seq]
	if !ok {
		x.hashLocked(key)
		x.missed[seq] = now
	}
	x.mu.Unlock()
	if !ok || now.Sub(first) < forgetMissedAfter {
		return false
	}
	x.drop(key, seq)
	return true
}

// foundCopy notes that the archive had the copy at seq.
func (x *archiveIndex) foundCopy(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.missed) > 0 {
		delete(x.missed, seq)
	}
}

// drop forgets seq of key (removed), or every copy with seq 0; it returns
// the sequences forgotten.
func (x *archiveIndex) drop(key string, seq uint64) []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.hashLocked(key)
	all := append([]uint64(nil), x.more[h]...)
	if s, ok := x.one[h]; ok {
		all = append(all, s)
	}
	for _, s := range all {
		if seq == 0 || s == seq {
			delete(x.missed, s)
		}
	}
	if seq == 0 {
		delete(x.one, h)
		delete(x.more, h)
		return all
	}
	var keep []uint64
	for _, s := range all {
		if s != seq {
			keep = append(keep, s)
		}
	}
	delete(x.one, h)
	delete(x.more, h)
	for i, s := range keep {
		if i == len(keep)-1 {
			x.one[h] = s
		} else {
			x.more[h] = append(x.more[h], s)
		}
	}
	return []uint64{seq}
}

// dropAll forgets the copies seqs of key and returns them.
func (x *archiveIndex) dropAll(key string, seqs []uint64) []uint64 {
	for _, seq := range seqs {
		x.drop(key, seq)
	}
	return seqs
}

// deletedNow notes key's deletion and returns the copies to remove.
func (x *archiveIndex) deletedNow(key string) []uint64 {
	seqs := x.drop(key, 0)
	x.mu.Lock()
	defer x.mu.Unlock()
	now := time.Now()
	x.deleted[x.hashLocked(key)] = now
	if len(x.deleted)%1024 == 0 {
		for h, at := range x.deleted {
			if now.Sub(at) > forgetDeletedAfter {
				delete(x.deleted, h)
			}
		}
	}
	return seqs
}

// removeLater removes archived copies in the background: copies no one
// reads, whose removal no caller waits for. One goroutine at a time takes
// them in turn, before any look of removeSeenDeleted, and ends once none
// is left (a retention sweep deleting 200,000 jobs would otherwise start a
// goroutine per job on every server). After Stop it drops them: the store
// is closing.
func (s *Jobs) removeLater(seqs []uint64) {
	s.queueRemovals(seqs, time.Time{})
}

// removeSeenDeleted removes, seenDeletedAfter from now, the archived copies
// of a job whose deletion the bucket's watch delivered, each only if it is
// still there: its deleter removes them at once, and a server's watch is
// there for those a deleter that died left. Every server of a cluster sees
// every deletion, and a removal is a write every server of the archive's
// stream takes (a Raft proposal, made whether or not the record is there):
// removed at once, each deleted job's copy was removed two to four times.
// A read from the stream's leader is no such write.
func (s *Jobs) removeSeenDeleted(seqs []uint64) {
	s.queueRemovals(seqs, time.Now().Add(seenDeletedAfter))
}

// seenDeletedAfter is how long after a deletion a server looks for the
// copies its deleter should have removed (a var: tests shorten it).
var seenDeletedAfter = 5 * time.Second

// queueRemovals queues the removals of seqs, due at due (zero: now, and
// without a look first).
func (s *Jobs) queueRemovals(seqs []uint64, due time.Time) {
	if len(seqs) == 0 {
		return
	}
	s.rm.mu.Lock()
	defer s.rm.mu.Unlock()
	if s.rm.stopped {
		return
	}
	for _, seq := range seqs {
		if due.IsZero() {
			s.rm.now = append(s.rm.now, seq)
		} else {
			s.rm.looks = append(s.rm.looks, removal{seq: seq, due: due})
		}
	}
	if s.rm.running {
		if due.IsZero() {
			// Ahead of a look it waits for.
			s.rm.wakeLocked()
		}
		return
	}
	if s.rm.ctx == nil {
		s.rm.ctx, s.rm.cancel = context.WithCancel(context.Background())
		s.rm.stopping, s.rm.wake = make(chan struct{}), make(chan struct{}, 1)
	}
	s.rm.running, s.rm.done = true, make(chan struct{})
	go s.removeQueued(s.rm.ctx, s.rm.stopping, s.rm.wake, s.rm.done)
}

// removals are the queues of removeLater (now) and removeSeenDeleted
// (looks), each in the order asked: a removal asked now goes before the
// looks queued (a retention sweep of 100,000 jobs queues 100,000 looks on
// every server, each a read of the archive's leader, and an earlier
// epoch's copy, or a copy a delete could not remove, waited behind them
// all), and a look waits for the one before it to be due.
type removals struct {
	mu      sync.Mutex
	now     []uint64
	looks   []removal
	running bool
	done    chan struct{} // closed when the running removeQueued ends
	stopped bool
	ctx     context.Context // canceled by Stop
	cancel  context.CancelFunc
	// stopping is closed by Stop: removals not due yet are dropped (every
	// other server looks for the same copies, and a start does too).
	stopping chan struct{}
	// wake tells removeQueued that a removal was asked now, or that the
	// last watch ended (the looks it queued are dropped with it).
	wake chan struct{}
}

// wakeLocked wakes removeQueued from its wait for a look. rm.mu must be
// held.
func (rm *removals) wakeLocked() {
	select {
	case rm.wake <- struct{}{}:
	default:
	}
}

// removal is a look for the copy at seq, due at due.
type removal struct {
	seq uint64
	due time.Time
}

// stopRemovalsWithin bounds how long Stop lets queued removals go on.
const stopRemovalsWithin = 2 * time.Second

// Stop ends the background removals: those not due yet (a look for the
// copies of jobs deleted, removeSeenDeleted) are dropped at once, the
// others given until ctx ends, at most stopRemovalsWithin, then dropped,
// as a crash would drop them (a copy left is removed by whoever reads it next: an earlier
// epoch's by the index, a deleted job's by its deletion's marker). Every
// server of a cluster removes the copies it sees deleted, so a removal
// is not worth holding a stop for long; without Stop, a removal whose
// store is gone would try again for 20 s after its server stopped.
func (s *Jobs) Stop(ctx context.Context) {
	s.rm.mu.Lock()
	if !s.rm.stopped && s.rm.stopping != nil {
		close(s.rm.stopping)
	}
	s.rm.stopped = true
	s.rm.looks = nil
	done, cancel := s.rm.done, s.rm.cancel
	s.rm.mu.Unlock()
	if done == nil {
		return
	}
	defer cancel() // a removal asked after Stop finds it canceled, too
	t := time.NewTimer(stopRemovalsWithin)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-ctx.Done():
	case <-t.C:
	}
	cancel()
	<-done
}

func (s *Jobs) removeQueued(stop context.Context, stopping, wake <-chan struct{}, done chan struct{}) {
	defer close(done)
	for {
		s.rm.mu.Lock()
		if s.watches.Load() == 0 {
			s.rm.looks = nil // no watch runs: its looks went with it
		}
		if len(s.rm.now) == 0 && len(s.rm.looks) == 0 || stop.Err() != nil {
			s.rm.now, s.rm.looks, s.rm.running = nil, nil, false
			s.rm.mu.Unlock()
			return
		}
		var seq uint64
		look := len(s.rm.now) == 0
		if look {
			r := s.rm.looks[0]
			if time.Now().Before(r.due) {
				s.rm.mu.Unlock()
				s.await(r.due, stopping, wake)
				continue
			}
			seq, s.rm.looks = r.seq, s.rm.looks[1:]
		} else {
			seq, s.rm.now = s.rm.now[0], s.rm.now[1:]
		}
		s.rm.mu.Unlock()
		ctx, cancel := context.WithTimeout(stop, 30*time.Second)
		if look {
			if _, _, err := s.Archive.Read(ctx, seq); errors.Is(err, ErrNotFound) {
				cancel()
				continue // its deleter removed it
			}
		}
		_ = Retry(ctx, 20*time.Second, func(ctx context.Context) error { return s.Archive.Remove(ctx, seq) })
		cancel()
	}
}

// await waits until due, until the store stops, or until removeQueued is
// woken (a removal asked now, or the last watch ended).
func (s *Jobs) await(due time.Time, stopping, wake <-chan struct{}) {
	t := time.NewTimer(time.Until(due))
	defer t.Stop()
	select {
	case <-t.C:
	case <-stopping:
	case <-wake:
	}
}

// watchEnded notes the end of a watch: once none runs, the looks for the
// copies of deleted jobs that watches queued (removeSeenDeleted) are
// dropped with them.
func (s *Jobs) watchEnded() {
	if s.watches.Add(-1) > 0 {
		return
	}
	s.rm.mu.Lock()
	defer s.rm.mu.Unlock()
	s.rm.looks = nil
	s.rm.wakeLocked()
}

// Watch sends every job record, then nil once they are all sent, then
// each change, as KV.Watch does, with the archive's records first
// (Entry.Archived) and then the bucket's: a job in both is sent from both,
// the bucket's last. After the stored records, a record the archive
// receives is sent too, without its value (Entry.Value nil): its job is
// known finished, and the bucket usually sends the record as well (a watch
// of the bucket that fell behind by more than ArchiveAfter would miss it).
func (s *Jobs) Watch(ctx context.Context) (Watcher, error) {
	if s.Archive == nil {
		return s.KV.Watch(ctx)
	}
	// The archive's follower first: a record moved out of the bucket
	// after the bucket's watch began is then in the archive's.
	a, err := s.Archive.Follow(ctx)
	if err != nil {
		return nil, err
	}
	k, err := s.KV.Watch(ctx)
	if err != nil {
		a.Stop()
		return nil, err
	}
	s.watching.Store(true)
	s.watches.Add(1)
	m := &merged{a: a, k: k, ch: make(chan *Entry, watchBuffer), stop: make(chan struct{}), done: make(chan struct{})}
	go m.run(ctx, s)
	return m, nil
}

// watchBuffer is how many entries a watch holds for its reader: a reader
// takes what is there in batches (the read model decodes a batch on every
// core).
const watchBuffer = 256

type merged struct {
	a, k Watcher
	ch   chan *Entry
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func (m *merged) Updates() <-chan *Entry { return m.ch }

func (m *merged) Stop() {
	m.once.Do(func() { close(m.stop) })
	<-m.done
	m.a.Stop()
	m.k.Stop()
}

func (m *merged) run(ctx context.Context, s *Jobs) {
	defer close(m.done)
	defer s.watchEnded()
	defer close(m.ch)
	send := func(e *Entry) bool {
		select {
		case m.ch <- e:
			return true
		case <-m.stop:
		case <-ctx.Done():
		}
		return false
	}
	recv := func(w Watcher) (*Entry, bool) {
		select {
		case e, ok := <-w.Updates():
			return e, ok
		case <-m.stop:
		case <-ctx.Done():
		}
		return nil, false
	}
	for {
		e, ok := recv(m.a)
		if !ok {
			return
		}
		if e == nil {
			break
		}
		if out := s.archived(e); out != nil && !send(out) {
			return
		}
	}
	// From here the archive is indexed as fast as its follower reads it,
	// whatever the pace of this watch's reader: a Get that misses waits
	// for the index to reach the archive's last record (getArchived), and
	// a reader busy at a restart under load held that wait for seconds (a
	// retried batch's 503s, then list pages of 5 s reads, in a CI run). Its
	// entries go to the reader in turn, without their records: after the
	// stored ones a reader only notes which jobs the archive holds
	// finished (the bucket's watch says the state).
	var live liveArchive
	live.ready = make(chan struct{}, 1)
	var pump sync.WaitGroup
	defer pump.Wait()
	quit := make(chan struct{}) // this loop ended
	defer close(quit)
	pump.Go(func() {
		defer live.push(nil, true)
		for {
			var e *Entry
			var ok bool
			select {
			case e, ok = <-m.a.Updates():
			case <-quit:
			case <-m.stop:
			case <-ctx.Done():
			}
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			if out := s.archived(e); out != nil {
				out.Value = nil
				live.push(out, false)
			}
		}
	})
	// Records a start left beside a young copy (superseded) are named
	// again, as archived, once their finishing write is surely over.
	var timersMu sync.Mutex
	var timers []*time.Timer
	defer func() {
		timersMu.Lock()
		defer timersMu.Unlock()
		for _, t := range timers {
			t.Stop()
		}
	}()
	later := func(key string, after time.Duration) {
		timersMu.Lock()
		defer timersMu.Unlock()
		timers = append(timers, time.AfterFunc(after, func() { live.push(&Entry{Key: key, Archived: true}, false) }))
	}
	for {
		e, ok := recv(m.k)
		if !ok {
			return
		}
		if e != nil {
			s.bucketEntry(e)
			if !e.Deleted && s.superseded(ctx, e, later) {
				continue
			}
		}
		if !send(e) {
			return
		}
		if e == nil {
			break
		}
	}
	for {
		var e *Entry
		var ok bool
		select {
		case <-live.ready:
			batch, closed := live.take()
			for _, e := range batch {
				if !send(e) {
					return
				}
			}
			if closed {
				return
			}
			continue
		case e, ok = <-m.k.Updates():
			if ok && e != nil {
				s.bucketEntry(e)
			}
		case <-m.stop:
			return
		case <-ctx.Done():
			return
		}
		if !ok {
			return
		}
		if e != nil && !send(e) {
			return
		}
	}
}

// liveArchive holds the archive's entries indexed and not yet passed to
// the watch's reader.
type liveArchive struct {
	mu     sync.Mutex
	q      []*Entry
	closed bool          // the archive's follower stopped
	ready  chan struct{} // holds one signal while q or closed is new
}

func (l *liveArchive) push(e *Entry, closed bool) {
	l.mu.Lock()
	if e != nil {
		l.q = append(l.q, e)
	}
	l.closed = l.closed || closed
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

func (l *liveArchive) take() ([]*Entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.q
	l.q = nil
	return q, l.closed
}

// archived indexes a record the archive delivered and returns it as an
// entry of the watch (nil for a job deleted since: the copy is removed).
func (s *Jobs) archived(e *Entry) *Entry {
	if e.Key != "" && e.Revision > s.followed.Load() {
		s.followed.Store(e.Revision) // one watch writes it
	}
	if e.Damaged {
		s.idx.damaged(e.Key, max(e.Revision, 1))
		return nil
	}
	if !s.idx.add(e.Key, e.Revision) {
		s.removeLater([]uint64{e.Revision})
		return nil
	}
	return &Entry{Key: e.Key, Value: e.Value, Archived: true}
}

// bucketEntry notes a deletion the bucket's watch delivered: the job's
// archived copies go too (its deleter removed those it knew of).
func (s *Jobs) bucketEntry(e *Entry) {
	if e.Deleted {
		s.removeSeenDeleted(s.idx.deletedNow(e.Key))
	}
}

// superseded reports whether e, an unfinished job's record in the bucket
// read at a start, is older than the job's newest archived copy (an earlier
// epoch, or the same), and if so removes it from the bucket. JetStream's
// file store may bring back a key's earlier revision after a restart once
// the revision written over it (a finished record, which expires) is gone:
// a job that finished would seem to run again. Such a revision is always
// an unfinished record (a finished one is written to expire, and does not
// come back). A copy archived by a write that a crash cut short is the
// job's state too: the results it applied are delivered again and change
// nothing in it. Only a start's read asks (at run time a copy whose write
// is losing its race is there for a moment, and would be taken for the
// job's state), and in a cluster only of a copy older than twice the
// bucket's time to live: a younger one may be another server's finishing
// write's, whose bucket write is on its way; later is asked to name the
// job again once that cannot be.
func (s *Jobs) superseded(ctx context.Context, e *Entry, later func(key string, after time.Duration)) bool {
	seqs := s.idx.seqs(e.Key)
	exp, ok := s.KV.(KVExpiring)
	if len(seqs) == 0 || !ok {
		return false
	}
	j, err := DecodeJob(e.Value)
	if err != nil || j.State.Terminal() {
		return false
	}
	var a *job.Job
	var at uint64
	for _, seq := range seqs {
		key, data, err := s.Archive.Read(ctx, seq)
		if err != nil || key != e.Key {
			continue
		}
		if a, err = DecodeJob(data); err == nil {
			at = seq
			break
		}
	}
	switch {
	case a == nil:
		return false
	case a.Epoch < j.Epoch:
		s.removeLater(s.idx.drop(e.Key, at)) // an earlier epoch's, left by a retry
		return false
	case s.Shared && (a.FinishedAt == nil || time.Since(*a.FinishedAt) < s.settleAfter()):
		// In a cluster, another server's finishing write may be between
		// its copy and its bucket write: purged, the record would make
		// that write fail its compare-and-set, and the job be lost with
		// its copy. Left as it is for now; once no finishing write can
		// still be on its way, the watch names the job as archived, and
		// its reader's read of it (a Get) judges it (revived).
		wait := s.settleAfter()
		if a.FinishedAt != nil {
			wait -= time.Since(*a.FinishedAt)
		}
		later(e.Key, wait)
		return false
	}
	if until := s.forgetPaused.Load(); until != 0 && time.Now().UnixNano() < until {
		return false // purges failed just now: read from the bucket for now
	}
	fctx, cancel := context.WithTimeout(ctx, forgetTimeout)
	defer cancel()
	if err := exp.ForgetUpTo(fctx, e.Key, e.Revision); err != nil {
		// Read from the bucket for now; the next reader tries again (a
		// Get, revived; the read model's fill-in). The next ones wait
		// forgetPause: a start that met thousands of such revisions while
		// the bucket's stream had no leader to purge them spent a request's
		// deadline on each, and a server of a cluster was not ready after
		// three minutes (make chaos, 2026-12-06).
		s.forgetPaused.Store(time.Now().Add(forgetPause).UnixNano())
		return false
	}
	return true
}

const (
	// forgetTimeout bounds a start's purge of a revived revision.
	forgetTimeout = 2 * time.Second
	// forgetPause is how long a start's read purges nothing after a
	// purge failed.
	forgetPause = 30 * time.Second
)
