package natsx

import (
	"context"
	"fmt"
	"sync"
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
