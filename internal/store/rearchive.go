package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// Rearchive makes sure the archive holds a copy of finished job j, a
// record this process read from the bucket (its read model's): when the
// bucket holds no record of the job any more and the archive's leader has
// none of the copies this process indexed, j is appended again, and
// Rearchive reports true.
//
// Why: a finished record leaves the bucket by itself 10 s after its
// write, trusting the copy appended before it. In a cluster under
// partitions a copy was once lost after it was acknowledged (two servers
// had indexed it from their replicas, the stream's leader after the heal
// had no message there; TestPartitions in CI, 2026-12-05): the job's
// finished state was then held only by the read models that had seen its
// bucket record, and those of the other servers showed it running for
// good. A copy whose bytes are damaged counts as none.
//
// Nothing is appended while the store cannot say for sure (a leader behind
// the copies indexed, this process's follower behind the leader): the
// answer is then an error, ErrBehind when a later call may do it. The
// record appended is j as given: a read model's record has no task log.
func (s *Jobs) Rearchive(ctx context.Context, j *job.Job) (bool, error) {
	if s.Archive == nil || s.ArchiveAfter < 0 || !j.State.Terminal() {
		return false, nil
	}
	switch e, err := s.KV.Get(ctx, j.ID); {
	case err == nil:
		// The bucket holds the job's state: a later one (a retry), which
		// copies of earlier epochs are not, or its finished record, whose
		// copy is not needed until it expires.
		if b, err := DecodeJob(e.Value); err == nil && b.State.Terminal() {
			return false, fmt.Errorf("job %s: its finished record is still in the jobs bucket: %w", j.ID, ErrBehind)
		}
		return false, nil
	case !errors.Is(err, ErrNotFound):
		return false, fmt.Errorf("read job %s from the jobs bucket: %w", j.ID, err)
	}
	seqs := s.idx.seqs(j.ID)
	var newest uint64
	for _, seq := range seqs {
		newest = max(newest, seq)
		key, _, err := s.Archive.Read(ctx, seq)
		switch {
		case err == nil && key == j.ID:
			s.idx.foundCopy(seq)
			return false, nil
		case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, ErrDamaged):
		default:
			return false, fmt.Errorf("read job %s from the archive: %w", j.ID, err)
		}
	}
	last, err := s.Archive.Last(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("read how far the archive goes: %w", err)
	}
	through := last
	if t, ok := s.Archive.(ArchiveThrough); ok {
		if through, err = t.Through(ctx); err != nil {
			return false, fmt.Errorf("read how far the archive goes: %w", err)
		}
	}
	if newest > through {
		return false, fmt.Errorf("job %s: the archive's leader is behind the copies this server read (record %d of %d): %w", j.ID, newest, through, ErrBehind)
	}
	if len(seqs) == 0 && (!s.watching.Load() || s.followed.Load() < last) {
		return false, fmt.Errorf("job %s: not in the archive as this server has read it so far (to record %d of %d): %w", j.ID, s.followed.Load(), last, ErrBehind)
	}
	data, err := marshalJob(j)
	if err != nil {
		return false, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	seq, err := s.Archive.Append(ctx, j.ID, data)
	if err != nil {
		return false, fmt.Errorf("archive job %s again: %w", j.ID, err)
	}
	if !s.idx.add(j.ID, seq) {
		// Deleted meanwhile: a copy left would bring it back.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.Archive.Remove(rctx, seq); err != nil {
			s.removeLater([]uint64{seq})
		}
		return false, nil
	}
	return true, nil
}
