package natsx

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A finished job whose archived copy the store lost (a stream's leader
// without a message its replicas had delivered, after a partition) is
// archived again from the record a read model holds: Rearchive appends it
// only when neither the bucket nor the archive has the job's state, and
// not for a job deleted.
func TestALostCopyIsArchivedAgain(t *testing.T) {
	nc := embedded(t, t.TempDir(), "rearchive")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{ArchiveAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	jobs := s.Ports.Jobs
	watching(t, ctx, jobs)

	j := job.New("noop_0123456789abcdefghjkmnpqr3", job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
	createSucceeded(t, ctx, jobs, j)
	if again, err := jobs.Rearchive(ctx, j); again || !errors.Is(err, store.ErrBehind) {
		t.Fatalf("rearchive while the bucket holds the record: %v, %v; want nothing done yet (ErrBehind)", again, err)
	}
	awaitGone(t, jobs.KV, j.ID)
	if again, err := jobs.Rearchive(ctx, j); again || err != nil {
		t.Fatalf("rearchive with its copy there: %v, %v; want nothing done", again, err)
	}
	awaitArchived(t, jobs, 1)

	// The copy lost behind this process's back: its index still holds it.
	info, err := s.Archive.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := jobs.Archive.Remove(ctx, info.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	if got, _, err := jobs.Get(ctx, j.ID); err == nil {
		t.Fatalf("get with its copy lost: %+v; want an error", got)
	}
	again, err := jobs.Rearchive(ctx, j)
	if !again || err != nil {
		t.Fatalf("rearchive with its copy lost: %v, %v; want it archived again", again, err)
	}
	if got, _, err := jobs.Get(ctx, j.ID); err != nil || got.State != job.Succeeded {
		t.Fatalf("get once archived again: %+v, %v; want succeeded", got, err)
	}
	other := &store.Jobs{KV: jobs.KV, Archive: jobs.Archive}
	if entries := initial(t, other); len(entries) != 1 || !entries[0].Archived || entries[0].Key != j.ID {
		t.Fatalf("another process's watch: %+v; want the job archived", entries)
	}
	if again, err := jobs.Rearchive(ctx, j); again || err != nil {
		t.Fatalf("rearchive a second time: %v, %v; want nothing done", again, err)
	}

	// Deleted: never archived again.
	if err := jobs.Delete(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	awaitArchived(t, jobs, 0)
	if again, err := jobs.Rearchive(ctx, j); again || err != nil && !errors.Is(err, store.ErrBehind) {
		t.Fatalf("rearchive a deleted job: %v, %v; want nothing done", again, err)
	}
	awaitArchived(t, jobs, 0)
}
