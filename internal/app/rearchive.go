package app

import (
	"context"
	"errors"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
)

const (
	// rearchiveMargin widens a spell of store trouble on both sides: a
	// write in flight when it began (each has 10 s at most), replicas
	// catching up after it ended.
	rearchiveMargin = 30 * time.Second
	// rearchiveEvery is how often the jobs of a spell are looked at, from
	// the spell's end until each is settled.
	rearchiveEvery = 5 * time.Second
	// rearchiveFor bounds the looks after the spell's widened end.
	rearchiveFor = 2 * time.Minute
)

// rearchiveLoop looks, after each spell of store trouble (writes refused:
// an election, a partition, a full disk; or a leader elected by a stream of
// job records, which a probe of another stream does not see), at the jobs
// this server's read model saw finish during it, and archives again the
// record of any that neither the jobs bucket nor the archive holds any
// more (store.Jobs.Rearchive): a job whose archived copy was lost would
// otherwise be lost with its bucket record's expiry, and shown running by
// the servers that had not seen that record. Only the jobs the read model
// holds whole (--recent-jobs) can be mended.
func (s *Server) rearchiveLoop(ctx context.Context) {
	jobs := s.store.Ports.Jobs
	t := time.NewTicker(rearchiveEvery)
	defer t.Stop()
	var (
		from, until time.Time // the widened spell; zero: none pending
		seen        time.Time // the last refusal taken in
		electedSeen int64     // the last election taken in
		settled     = map[string]bool{}
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		widen := func(since, last time.Time) {
			if from.IsZero() || since.Add(-rearchiveMargin).Before(from) {
				from = since.Add(-rearchiveMargin)
			}
			if last.Add(rearchiveMargin).After(until) {
				until = last.Add(rearchiveMargin)
			}
		}
		if since, last := s.health.trouble(); last.After(seen) {
			seen = last
			widen(since, last)
		}
		if e := s.elected.Load(); e > electedSeen {
			electedSeen = e
			widen(time.Unix(0, e), time.Unix(0, e))
		}
		if from.IsZero() || s.health.Err() != nil {
			continue
		}
		now, upto := time.Now(), until
		if now.Before(upto) {
			upto = now
		}
		pending := 0
		for _, j := range s.view.Finished(from, upto) {
			if settled[j.ID] || ctx.Err() != nil {
				continue
			}
			jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			again, err := jobs.Rearchive(jctx, j)
			cancel()
			switch {
			case again:
				s.rearchived.Add(1)
				s.log.Warn("a finished job's archived record was missing from the store after a spell of store trouble (refused writes, or a new leader of a job stream); archived it again from this server's copy"+copyLacksLog,
					"job", j.ID, "state", j.State)
			case errors.Is(err, store.ErrBehind):
				pending++
				continue
			case err != nil:
				s.log.Debug("could not check a finished job's archived record; trying again", "job", j.ID, "err", err)
				pending++
				continue
			}
			settled[j.ID] = true
		}
		if now.After(until.Add(rearchiveFor)) || pending == 0 && now.After(until.Add(jobs.SettleAfter())) {
			if pending > 0 {
				s.log.Warn("gave up checking that the jobs finished during a spell of store trouble are archived", "jobs_unchecked", pending, "from", from, "until", until)
			}
			s.log.Debug("checked that the jobs finished during a spell of store trouble are archived", "jobs", len(settled), "from", from, "until", until)
			from, until, settled = time.Time{}, time.Time{}, map[string]bool{}
		}
	}
}

// copyLacksLog ends the log lines of a job archived again.
const copyLacksLog = " (its per-task history of attempts, if it kept one in its record, is not in that copy)"

// mendJob archives again the record of finished job id that a read did
// not find in the store, when this server's read model holds it (see
// store.Jobs.Rearchive): a loss the look after a spell of trouble did not
// cover (its job finished outside one, or among more than --recent-jobs).
func (s *Server) mendJob(ctx context.Context, id string) bool {
	j := s.view.FinishedRecord(id)
	if j == nil {
		return false
	}
	again, err := s.store.Ports.Jobs.Rearchive(ctx, j)
	if err != nil {
		s.log.Debug("could not check a finished job's archived record after a read did not find it", "job", id, "err", err)
	}
	if again {
		s.rearchived.Add(1)
		s.log.Warn("a read did not find a finished job's record in the store; archived it again from this server's copy"+copyLacksLog, "job", id, "state", j.State)
	}
	return again
}
