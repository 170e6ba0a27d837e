package natsx

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Deleted jobs leave no archived copy behind. A deleted job's copy is
// removed twice, by its deleter and by the watch that sees the deletion,
// and JetStream answers the second "sequence N not found": taken for a
// failure, that removal was tried again for 20 s while the removals queued
// behind it waited, so copies of deleted jobs piled up in the archive
// under retention's deletes (a soak of 2 minutes' retention: 13,775 copies,
// 34 MB, left once every job was deleted, going at a few dozen a minute).
func TestDeletedJobsLeaveNoArchivedCopy(t *testing.T) {
	ctx, jobs := archiveStore(t, "archive-remove")
	watching(t, ctx, jobs) // the server's own watch, which removes copies too

	// A removal of a copy removed already is no error.
	seq, err := jobs.Archive.Append(ctx, "noop_0123456789abcdefghjkmnpq99", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := jobs.Archive.Remove(ctx, seq); err != nil {
			t.Fatalf("removal %d of archived record %d: %v; want none (removed already)", i+1, seq, err)
		}
	}

	const n = 200
	ids := make([]string, n)
	now := time.Now().UTC()
	for i := range ids {
		j := job.New(job.NewID("noop", now.Add(time.Duration(i)*time.Millisecond)), job.Spec{Kind: "noop", Partitions: 1}, now)
		ids[i] = j.ID
		createSucceeded(t, ctx, jobs, j)
	}
	awaitArchived(t, jobs, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := jobs.Delete(ctx, id); err != nil {
				errs <- fmt.Errorf("delete %s: %w", id, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each removal is one request to a server alone; a removal that waits
	// 20 s on one removed already is what this catches.
	var last uint64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last, err = jobs.Archive.Last(ctx); err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			return
		}
	}
	t.Fatalf("archived copies of the %d jobs deleted are still in the archive 15 s after their deletes (the last at %d)", n, last)
}

// Each deleted job's archived copy is removed once, by its deleter, not
// again by every server whose watch sees the deletion: a removal is a
// write every server of the archive's stream takes (a Raft proposal, made
// whether the record is there or not), and three servers removed each
// copy two to four times. A server's watch looks first, a few seconds
// later, and removes only the copies still there: those a deleter that
// died left, which go then.
func TestADeletedJobsCopyIsRemovedOnceAmongServers(t *testing.T) {
	ctx, shared := archiveStore(t, "archive-remove-once")
	var removals, reads atomic.Int64
	servers := make([]*store.Jobs, 3) // three servers' stores of one archive
	for i := range servers {
		servers[i] = &store.Jobs{KV: shared.KV, ArchiveAfter: shared.ArchiveAfter, Shared: true,
			Archive: countingArchive{Archive: shared.Archive, removals: &removals, reads: &reads}}
		watching(t, ctx, servers[i])
	}
	const deleted, orphaned = 60, 20
	ids := make([]string, deleted+orphaned)
	now := time.Now().UTC()
	for i := range ids {
		j := job.New(job.NewID("noop", now.Add(time.Duration(i)*time.Millisecond)), job.Spec{Kind: "noop", Partitions: 1}, now)
		ids[i] = j.ID
		createSucceeded(t, ctx, servers[0], j)
	}
	awaitArchived(t, shared, len(ids))
	// Every server's watch has indexed the copies once each can read the
	// last job's.
	for _, s := range servers {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if j, _, err := s.Get(ctx, ids[len(ids)-1]); err == nil && j.State == job.Succeeded {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a server's watch did not read the archived copies within 30 s")
			}
		}
	}
	reads.Store(0)
	for _, id := range ids[:deleted] {
		if err := servers[0].Delete(ctx, id); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	// The other two servers look for each copy once their watch saw its
	// deletion (the deleter's own watch may, too); before, they removed
	// each.
	for deadline := time.Now().Add(30 * time.Second); reads.Load() < 2*deleted && removals.Load() < 2*deleted; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d looks for the deleted jobs' copies within 30 s; want the other servers' %d", reads.Load(), 2*deleted)
		}
	}
	if n := removals.Load(); n > deleted+deleted/10 {
		t.Fatalf("%d removals of the %d deleted jobs' copies by three servers; want each removed once, by its deleter", n, deleted)
	}
	t.Logf("%d removals, %d looks for %d deleted jobs' copies", removals.Load(), reads.Load(), deleted)
	// A deleter that died between the deletion and the removal of the
	// copies: the servers' watches remove them.
	for _, id := range ids[deleted:] {
		if err := shared.KV.Delete(ctx, id, 0); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		last, err := shared.Archive.Last(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the copies of %d jobs whose deleter removed none are in the archive 30 s after (the last at %d)", orphaned, last)
		}
	}
}

// countingArchive counts the removals and reads asked of an archive.
type countingArchive struct {
	store.Archive
	removals, reads *atomic.Int64
}

func (a countingArchive) Remove(ctx context.Context, seq uint64) error {
	a.removals.Add(1)
	return a.Archive.Remove(ctx, seq)
}

func (a countingArchive) Read(ctx context.Context, seq uint64) (string, []byte, error) {
	a.reads.Add(1)
	return a.Archive.Read(ctx, seq)
}

func (a countingArchive) Through(ctx context.Context) (uint64, error) {
	return a.Archive.(store.ArchiveThrough).Through(ctx)
}

// createSucceeded stores job j, then its record succeeded.
func createSucceeded(t *testing.T, ctx context.Context, jobs *store.Jobs, j *job.Job) {
	t.Helper()
	rev, err := jobs.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	finished := time.Now().UTC()
	j.State, j.FinishedAt = job.Succeeded, &finished
	if _, err := jobs.Update(ctx, j, rev); err != nil {
		t.Fatal(err)
	}
}
