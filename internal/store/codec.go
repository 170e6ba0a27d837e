package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// Jobs is the bucket of job records, encoded as JSON.
type Jobs struct {
	KV KV
	// Archive, when set (and KV is a KVExpiring), takes finished jobs'
	// records (archive.go); ArchiveAfter is how long the bucket keeps
	// them besides (0: DefaultArchiveAfter; below 0: finished records
	// stay in the bucket, and the archive is only read).
	Archive      Archive
	ArchiveAfter time.Duration
	// Shared says other processes write job records too (the servers of
	// a cluster): a start then leaves a record beside a young finished
	// copy for later (superseded).
	Shared bool
	idx    archiveIndex
	// watching is set once a watch follows the archive (Watch), and
	// followed is the last sequence of the archive it indexed: a job not
	// found may be one whose copy the follower has not read yet.
	watching atomic.Bool
	followed atomic.Uint64
	watches  atomic.Int32 // watches running

	rm removals
	// forgetPaused is until when (Unix nanoseconds) a start's read purges
	// no revived revision, after a purge failed (superseded).
	forgetPaused atomic.Int64

	// mine holds the records this process wrote last, until its own
	// watch of the bucket reads them back (Watched).
	mine written
}

// written remembers the records a process wrote, by key with their
// encoding: a server's read model, which watches the bucket, then takes
// the record its coordinator wrote instead of decoding the bytes it just
// encoded. Decoding every record a second time was a tenth of a busy
// server's CPU under many small jobs. A record is remembered before its
// write (the watch often delivers it before the write's answer arrives)
// and taken when the watch delivers the same bytes; records written by
// other processes (the other servers of a cluster) are decoded as before.
type written struct {
	mu   sync.Mutex
	jobs map[string]writtenJob
}

type writtenJob struct {
	data []byte
	j    *job.Job
}

// maxWritten bounds the records remembered: past it (a watch that lags,
// a process that does not watch, writes that failed) they are forgotten
// at once and decoded when read.
const maxWritten = 4096

func (w *written) put(j *job.Job, data []byte) {
	// A copy: the writer may change its record afterwards (though the
	// coordinator changes copies), and the reader drops parts of it.
	c := j.Clone()
	c.Replayed = false
	normalize(c)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.jobs == nil || len(w.jobs) >= maxWritten {
		w.jobs = make(map[string]writtenJob)
	}
	w.jobs[j.ID] = writtenJob{data, c}
}

// take returns the record this process wrote as data under key, if it
// is the last it wrote there.
func (w *written) take(key string, data []byte) *job.Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	old, ok := w.jobs[key]
	if !ok || !bytes.Equal(old.data, data) {
		return nil // an earlier revision, or another process's write
	}
	delete(w.jobs, key)
	return old.j
}

// peek is take without forgetting.
func (w *written) peek(key string, data []byte) *job.Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	old, ok := w.jobs[key]
	if !ok || !bytes.Equal(old.data, data) {
		return nil
	}
	return old.j
}

func (w *written) forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.jobs, key)
}

// Watched returns the record of an entry of the bucket read by a watch:
// the record itself when this process wrote those bytes last under its
// key, else decoded.
// A deletion returns nil. The record is the caller's own. A nil Jobs
// decodes every entry.
func (s *Jobs) Watched(e *Entry) (*job.Job, error) {
	switch {
	case s == nil && e.Deleted:
		return nil, nil
	case s == nil:
		return DecodeJob(e.Value)
	case e.Deleted:
		s.mine.forget(e.Key)
		return nil, nil
	}
	if e.Archived {
		// The bucket's watch usually delivers the same record next,
		// taken then (the same record twice: the reader keeps the first
		// and finds the second stale).
		if j := s.mine.peek(e.Key, e.Value); j != nil {
			return j, nil
		}
	} else if j := s.mine.take(e.Key, e.Value); j != nil {
		return j, nil
	}
	return DecodeJob(e.Value)
}

// Get returns job id and the revision of its record; a job that does not
// exist is ErrNotFound. A finished job read from the archive has revision
// 0: Update writes it back into the bucket.
func (s *Jobs) Get(ctx context.Context, id string) (*job.Job, uint64, error) {
	e, err := s.KV.Get(ctx, id)
	if errors.Is(err, ErrNotFound) && s.Archive != nil {
		return s.getArchived(ctx, id)
	}
	if err != nil {
		return nil, 0, err
	}
	j, err := DecodeJob(e.Value)
	if err != nil {
		return nil, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	if s.Archive != nil && !j.State.Terminal() {
		if a := s.revived(ctx, &e, j); a != nil {
			return a, 0, nil
		}
	}
	return j, e.Revision, nil
}

// revived returns job j's finished archived copy when j, read from the
// bucket unfinished at e, is a revision JetStream brought back: a copy of
// the same or a later epoch that finished long enough ago that no
// finishing write of it can still be on its way (twice the bucket's time
// to live). In a cluster a replica that restarted can bring back a key's
// earlier revision after the finished one expired, and serve it once it
// leads the bucket: a job read "running" minutes after it succeeded (its
// output refused, 409, in a chaos run), which the start's read of another
// server (superseded) never met. The revision is purged (best effort), so
// that a write of the job (a retry) finds no record in its way.
func (s *Jobs) revived(ctx context.Context, e *Entry, j *job.Job) *job.Job {
	seqs := s.idx.seqs(e.Key)
	if len(seqs) == 0 {
		return nil
	}
	for _, seq := range seqs {
		key, data, err := s.Archive.Read(ctx, seq)
		if err != nil || key != e.Key {
			continue
		}
		a, err := DecodeJob(data)
		if err != nil || !a.State.Terminal() || a.Epoch < j.Epoch || a.FinishedAt == nil || time.Since(*a.FinishedAt) < s.settleAfter() {
			return nil
		}
		if exp, ok := s.KV.(KVExpiring); ok {
			_ = exp.ForgetUpTo(ctx, e.Key, e.Revision)
		}
		return a
	}
	return nil
}

// getArchived reads the newest archived copy of job id's record. A job
// the index does not hold may be one whose copy this process's follower
// has not read yet (it fell behind: a partition, a pause): it waits, for
// up to catchUpWait, until the follower has read what the archive held.
func (s *Jobs) getArchived(ctx context.Context, id string) (*job.Job, uint64, error) {
	j, err := s.readArchived(ctx, id)
	if !errors.Is(err, ErrNotFound) || !s.watching.Load() {
		return j, 0, err
	}
	last, lerr := s.Archive.Last(ctx)
	switch {
	case lerr != nil && !errors.Is(lerr, ErrNotFound):
		// Not knowing whether the archive holds more than this server has
		// read is not "no such job" (a server just continued after a
		// pause answered 404 for a job that had finished meanwhile).
		return nil, 0, fmt.Errorf("job %s: not in the jobs bucket, and the archive did not say how far it goes: %w", id, lerr)
	case lerr != nil || s.followed.Load() >= last:
		return nil, 0, err
	}
	for deadline := time.Now().Add(catchUpWait); s.followed.Load() < last; {
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("job %s: not in the archive as this server has read it so far (to record %d of %d); %w", id, s.followed.Load(), last, ErrBehind)
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	j, err = s.readArchived(ctx, id)
	return j, 0, err
}

// catchUpWait bounds getArchived's wait for the follower.
const catchUpWait = 5 * time.Second

// readArchived reads the newest copy of job id's record that the index
// holds and the archive has. A copy the archive answers "not found" for
// stays in the index until it has answered so for forgetMissedAfter: a
// copy whose finishing write lost its race is removed (its writer drops
// it), but so answers a stream leader that is behind, or leads no more on
// the far side of a partition, for a copy that is there; dropped at that
// answer, the copy was forgotten by this server for good, and the job
// answered 404 here (a partition test: a job its read model showed
// succeeded, whose history was 404 for 30 s). When the index holds copies
// and none is found, the answer is ErrBehind, not ErrNotFound.
func (s *Jobs) readArchived(ctx context.Context, id string) (*job.Job, error) {
	var missed []uint64
	for _, seq := range s.idx.seqs(id) {
		key, data, err := s.Archive.Read(ctx, seq)
		if err == nil {
			s.idx.foundCopy(seq)
		}
		switch {
		case errors.Is(err, ErrNotFound):
			if !s.idx.missedCopy(id, seq, time.Now()) {
				missed = append(missed, seq)
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("read job %s from the archive: %w", id, err)
		case key != id:
			continue // another id of the same hash
		}
		j, err := DecodeJob(data)
		if err != nil {
			return nil, fmt.Errorf("decode job %s from the archive: %w", id, err)
		}
		return j, nil
	}
	if len(missed) > 0 {
		return nil, fmt.Errorf("job %s: the archive did not find its copies (records %v) where this server read them: %w", id, missed, ErrBehind)
	}
	return nil, fmt.Errorf("job %s: %w", id, ErrNotFound)
}

// Create stores a new job; ErrConflict when its id exists.
func (s *Jobs) Create(ctx context.Context, j *job.Job) (uint64, error) {
	data, err := marshalJob(j)
	if err != nil {
		return 0, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	s.mine.put(j, data)
	return s.KV.Create(ctx, j.ID, data)
}

// CreateAll stores new jobs at once, when the bucket can (KVCreateAll;
// ok is false when it cannot: create them one by one): the revision or
// the error (as Create's) of each, in order.
func (s *Jobs) CreateAll(ctx context.Context, js []*job.Job) (revs []uint64, errs []error, ok bool) {
	b, ok := s.KV.(KVCreateAll)
	if !ok {
		return nil, nil, false
	}
	revs, errs = make([]uint64, len(js)), make([]error, len(js))
	keys, values, at := make([]string, 0, len(js)), make([][]byte, 0, len(js)), make([]int, 0, len(js))
	for i, j := range js {
		data, err := marshalJob(j)
		if err != nil {
			errs[i] = fmt.Errorf("encode job %s: %w", j.ID, err)
			continue
		}
		s.mine.put(j, data)
		keys, values, at = append(keys, j.ID), append(values, data), append(at, i)
	}
	r, e := b.CreateAll(ctx, keys, values)
	for k, i := range at {
		revs[i], errs[i] = r[k], e[k]
	}
	return revs, errs, true
}

// Update writes j over the record at revision rev (0: a finished job read
// from the archive, written back into the bucket); ErrConflict when
// another writer moved it. A finished job's record is archived first, then
// written to expire from the bucket (archive.go).
func (s *Jobs) Update(ctx context.Context, j *job.Job, rev uint64) (uint64, error) {
	data, err := marshalJob(j)
	if err != nil {
		return 0, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	s.mine.put(j, data)
	exp, ok := s.KV.(KVExpiring)
	if s.Archive == nil || !ok || s.ArchiveAfter < 0 && rev > 0 {
		return s.KV.Update(ctx, j.ID, data, rev)
	}
	// The copies of earlier epochs known before an unfinished record is
	// written over the job's are its state no more once the write
	// succeeds: a retry's (one left would bring the job back after its
	// delete). Only those known before: the write's answer can come late
	// (an election), after another server read the record written,
	// finished the job and appended its copy, which this process may have
	// indexed by then; taking the index as it is after the write removed
	// that copy, the job's only one once its bucket record expired (a
	// finished job answered 404 by every server of a cluster, `make
	// chaos`). And only those of earlier epochs (earlierCopies).
	before := s.idx.seqs(j.ID)
	if s.ArchiveAfter < 0 {
		// Back from the archive, and to stay in the bucket.
		nrev, err := exp.WriteTTL(ctx, j.ID, data, 0, 0)
		if err == nil {
			s.removeLater(s.idx.dropAll(j.ID, before))
		}
		return nrev, err
	}
	if !j.State.Terminal() {
		var nrev uint64
		if rev > 0 {
			nrev, err = s.KV.Update(ctx, j.ID, data, rev)
			if err == nil && len(before) > 0 {
				before = s.earlierCopies(ctx, j, before)
			}
		} else {
			// Back from the archive (a retry): written where no value
			// is, over copies of earlier epochs only.
			nrev, err = exp.WriteTTL(ctx, j.ID, data, 0, 0)
		}
		if err == nil {
			s.removeLater(s.idx.dropAll(j.ID, before))
		}
		return nrev, err
	}
	seq, err := s.Archive.Append(ctx, j.ID, data)
	if err != nil {
		return 0, fmt.Errorf("archive job %s: %w", j.ID, err)
	}
	nrev, err := exp.WriteTTL(ctx, j.ID, data, rev, s.archiveAfter())
	if errors.Is(err, ErrConflict) {
		// The copy is not the job's state: remove it before answering,
		// so that no read takes it for the job's (getArchived reads the
		// newest copy that is there).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := s.Archive.Remove(rctx, seq); rerr != nil {
			s.removeLater([]uint64{seq})
		}
		s.idx.drop(j.ID, seq)
		return 0, err
	}
	// Any other failure may have written the record all the same (an
	// answer lost with its server, a deadline passed): the copy stays,
	// for it may be all that is left of the job once the record expires.
	// If the write did not happen, the bucket's unfinished record is the
	// job's, and the copy an early one that the next finishing write
	// supersedes.
	s.idx.add(j.ID, seq)
	return nrev, err
}

// earlierCopies returns those of job j's archived copies at seqs whose
// epoch is earlier than j's: copies a retry left behind. A copy of j's own
// epoch is an early one, appended by a finishing write whose bucket write
// failed, and it stays: a reader whose read of the bucket was answered
// "not found" (by a stream leader a partition deposed) takes it for the
// job's state, a read model showing the job finished, a coordinator
// dropping the job's later results as late; and the job's results applied
// again finish it as the copy says. Removed by a later write of the job
// unfinished (a lost attempt logged in its record), the copy took the
// job's only finished record with it: the job stayed unfinished for good
// (TestPartitions, traced under load, 2026-12-05). Kept, it is the job's
// state once it has settled (revived). A copy this call cannot read stays
// too.
func (s *Jobs) earlierCopies(ctx context.Context, j *job.Job, seqs []uint64) []uint64 {
	var out []uint64
	for _, seq := range seqs {
		key, data, err := s.Archive.Read(ctx, seq)
		if err != nil || key != j.ID {
			continue
		}
		if a, err := DecodeJob(data); err == nil && a.Epoch < j.Epoch {
			out = append(out, seq)
		}
	}
	return out
}

// settleAfter is how long after a job finished no finishing write of it
// can still be on its way: twice the bucket's time to live (a write has
// at most 10 s). An unfinished record beside a copy that old is not the
// job's state (revived, superseded).
func (s *Jobs) settleAfter() time.Duration { return 2 * s.archiveAfter() }

// SettleAfter is how long after a job finished no finishing write of it
// can still be on its way: from then on an unfinished record in the bucket
// beside a finished copy of the same epoch is not the job's state, and Get
// reads the copy (revived).
func (s *Jobs) SettleAfter() time.Duration { return s.settleAfter() }

func (s *Jobs) archiveAfter() time.Duration {
	if s.ArchiveAfter > 0 {
		return s.ArchiveAfter
	}
	return DefaultArchiveAfter
}

// Delete removes job id's record, then its archived copies (a copy left
// would bring the job back at a start once the deletion's marker is
// purged). The marker is the deletion: a copy this call fails to remove
// is removed in the background, and by every server whose watch sees the
// marker (bucketEntry).
func (s *Jobs) Delete(ctx context.Context, id string) error {
	err := s.KV.Delete(ctx, id, 0)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if s.Archive != nil {
		for _, seq := range s.idx.seqs(id) {
			if err := s.Archive.Remove(ctx, seq); err != nil {
				s.removeLater([]uint64{seq})
				continue
			}
			s.idx.drop(id, seq)
		}
	}
	return nil
}

// DecodeJob reads a stored job record.
func DecodeJob(data []byte) (*job.Job, error) {
	j := new(job.Job)
	if err := json.Unmarshal(data, j); err != nil {
		return nil, err
	}
	normalize(j)
	return j, nil
}

// normalize fills in what a record of an earlier version lacks.
func normalize(j *job.Job) {
	if j.Phase == "" {
		j.Phase = job.PhaseMap // a map-only job stored by a version before phases for all
	}
}

// TaskMessages encodes tasks for the task queue; without dedupe, the
// first runs of a group's jobs go in bundles (job.Bundle). With dedupe,
// each gets an id of its own (job, phase, partition, runs): publishing it
// again within the stream's window stores nothing.
func TaskMessages(tasks []job.Task, dedupe bool) ([]Message, error) {
	if !dedupe {
		tasks = job.Bundle(tasks)
	}
	out := make([]Message, len(tasks))
	for i, t := range tasks {
		data, err := marshalTask(&t)
		if err != nil {
			return nil, fmt.Errorf("encode task %d of job %s: %w", t.Partition, t.Job, err)
		}
		out[i] = Message{Key: t.Job, Data: data, Priority: t.Priority, Lane: t.Lane, Later: t.UnderWay()}
		if dedupe {
			out[i].ID = fmt.Sprintf("%s.%s.%d.%d.%d", t.Job, t.Phase, t.Partition, t.Runs, t.Epoch)
			if t.Round > 0 {
				out[i].ID += fmt.Sprintf(".r%d", t.Round)
			}
		}
	}
	return out, nil
}

// DecodeTasks reads a task message, a bundle's as its tasks
// (job.Task.Bundled).
func DecodeTasks(data []byte) ([]job.Task, error) {
	t, err := DecodeTask(data)
	if err != nil {
		return nil, err
	}
	return t.Bundled(), nil
}

// DecodeTask reads a task message.
func DecodeTask(data []byte) (job.Task, error) {
	var t job.Task
	err := json.Unmarshal(data, &t)
	if t.Phase == "" {
		t.Phase = job.PhaseMap // queued by a version before phases for all
	}
	return t, err
}

// SharedResults is the key of the results of jobs that keep their task
// history in their record (job.LogInRecord): one subject for all of them,
// where each message may carry several jobs' results. A job's own key
// (its id) holds the history of a larger job.
const SharedResults = "shared"

// ResultMessage encodes task results as one message: one job's, filed
// under its id, or with shared several small jobs', under SharedResults.
func ResultMessage(results []job.TaskResult, shared bool) (Message, error) {
	data, err := marshalResults(results)
	if err != nil || len(results) == 0 {
		return Message{}, fmt.Errorf("encode task results: %v", err)
	}
	if shared {
		return Message{Key: SharedResults, Data: data}, nil
	}
	return Message{Key: results[0].Job, Data: data}, nil
}

// DecodeResults reads a result message.
func DecodeResults(data []byte) ([]job.TaskResult, error) {
	var rs []job.TaskResult
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, errors.New("no results in the message")
	}
	for i := range rs {
		if rs[i].Phase == "" {
			rs[i].Phase = job.PhaseMap // stored by a version before phases for all
		}
	}
	return rs, nil
}

// Notes are the notices mrcluster sends, built and read in this one place.
type Notes struct {
	N Notices
}

// Subjects of the notices.
const (
	cancelSubject  = "mr.cancel."  // + job id
	stopSubject    = "mr.stop."    // + job id.phase.partition
	startedSubject = "mr.started." // + job id; a JSON list of starts
)

// CancelJob tells workers to stop the tasks of job id queued in epoch
// (its retries) or before.
func (n *Notes) CancelJob(id string, epoch int) error {
	return n.N.Publish(cancelSubject+id, []byte(strconv.Itoa(epoch)))
}

// OnCancelJob calls fn with the id and epoch of each job whose tasks are
// to stop (epoch 0 from a server that sends none).
func (n *Notes) OnCancelJob(fn func(id string, epoch int)) (func(), error) {
	return n.N.Subscribe(cancelSubject, "", func(subject string, data []byte) {
		epoch, _ := strconv.Atoi(string(data))
		fn(strings.TrimPrefix(subject, cancelSubject), epoch)
	})
}

// StopTask tells workers to stop their copies of a task another copy
// finished.
func (n *Notes) StopTask(id string, phase job.Phase, partition int) error {
	return n.N.Publish(stopSubject+id+"."+string(phase)+"."+strconv.Itoa(partition), nil)
}

// noPhase is the phase token of a map-only job's stop notice sent by a
// version before phases for all.
const noPhase = "-"

// OnStopTask calls fn for each task to stop.
func (n *Notes) OnStopTask(fn func(id string, phase job.Phase, partition int)) (func(), error) {
	return n.N.Subscribe(stopSubject, "", func(subject string, _ []byte) {
		// Job ids hold no '.', so the last two fields are phase and partition.
		parts := strings.Split(strings.TrimPrefix(subject, stopSubject), ".")
		if len(parts) != 3 {
			return
		}
		p, err := strconv.Atoi(parts[2])
		if err != nil {
			return
		}
		phase := job.Phase(parts[1])
		if phase == noPhase {
			phase = job.PhaseMap
		}
		fn(parts[0], phase, p)
	})
}

// TasksStarted tells who follows a job that its tasks started.
func (n *Notes) TasksStarted(started []job.TaskStarted) error {
	if len(started) == 0 {
		return nil
	}
	data, err := json.Marshal(started)
	if err != nil {
		return err
	}
	return n.N.Publish(startedSubject+started[0].Job, data)
}

// OnTasksStarted calls fn with each notice of started tasks (all of one
// job); with a group, one subscriber of the group gets each.
func (n *Notes) OnTasksStarted(group string, fn func([]job.TaskStarted)) (func(), error) {
	return n.N.Subscribe(startedSubject, group, func(_ string, data []byte) {
		var s []job.TaskStarted
		if json.Unmarshal(data, &s) == nil && len(s) > 0 {
			fn(s)
		}
	})
}
