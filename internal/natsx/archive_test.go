package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A finished job's record leaves the bucket ArchiveAfter after it was
// written, by itself, and is read from the archive from then on: by Get,
// by a later watch (another server, a restart), by a retry that writes it
// back, and not after its deletion.
func TestJobsArchive(t *testing.T) {
	nc := embedded(t, t.TempDir(), "archive")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{ArchiveAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	jobs := s.Ports.Jobs
	watching(t, ctx, jobs) // this process's watch, running throughout, as a server's read model

	j := job.New("noop_0123456789abcdefghjkmnpqr1", job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
	rev, err := jobs.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	finished := time.Now().UTC()
	j.State, j.FinishedAt, j.Error = job.Failed, &finished, "a test failure"
	if _, err := jobs.Update(ctx, j, rev); err != nil {
		t.Fatal(err)
	}
	if got, grev, err := jobs.Get(ctx, j.ID); err != nil || got.State != job.Failed || grev == 0 {
		t.Fatalf("get right after the finish: %+v at %d, %v; want failed, from the bucket", got, grev, err)
	}
	awaitGone(t, jobs.KV, j.ID)
	got, grev, err := jobs.Get(ctx, j.ID)
	if err != nil || got.State != job.Failed || got.Error != "a test failure" || grev != 0 {
		t.Fatalf("get once expired from the bucket: %+v at %d, %v; want failed, from the archive", got, grev, err)
	}

	// Another server (or this one restarted) reads it from the archive.
	other := &store.Jobs{KV: jobs.KV, Archive: jobs.Archive}
	if entries := initial(t, other); len(entries) != 1 || !entries[0].Archived || entries[0].Key != j.ID {
		t.Fatalf("a new watch's stored entries: %+v; want the archived record alone", entries)
	}
	if got, _, err := other.Get(ctx, j.ID); err != nil || got.State != job.Failed {
		t.Fatalf("another process's get: %+v, %v", got, err)
	}

	// A retry writes it back into the bucket; its archived copy goes.
	if err := got.Retry(time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	rrev, err := other.Update(ctx, got, 0)
	if err != nil {
		t.Fatalf("write back a retried job: %v", err)
	}
	if back, brev, err := jobs.Get(ctx, j.ID); err != nil || back.State != job.Queued || back.Epoch != 1 || brev != rrev {
		t.Fatalf("get after the retry: %+v at %d, %v; want queued in epoch 1 at %d", back, brev, err, rrev)
	}
	awaitArchived(t, jobs, 0)

	// A finishing write that loses its race leaves no copy behind.
	done := got.Clone()
	done.State, done.FinishedAt = job.Canceled, &finished
	if _, err := jobs.Update(ctx, done, rrev-1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a finishing write at an old revision: %v; want ErrConflict", err)
	}
	awaitArchived(t, jobs, 0)

	// Finished again, then deleted: gone from both, and from a new watch.
	if _, err := jobs.Update(ctx, done, rrev); err != nil {
		t.Fatal(err)
	}
	awaitArchived(t, jobs, 1)
	if err := jobs.Delete(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := jobs.Get(ctx, j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v; want ErrNotFound", err)
	}
	awaitArchived(t, jobs, 0)

	// Retried while its finished record is still in the bucket: its copy
	// goes all the same.
	j2 := job.New("noop_0123456789abcdefghjkmnpqr2", job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
	rev2, err := jobs.Create(ctx, j2)
	if err != nil {
		t.Fatal(err)
	}
	j2.State, j2.FinishedAt = job.Canceled, &finished
	if rev2, err = jobs.Update(ctx, j2, rev2); err != nil {
		t.Fatal(err)
	}
	awaitArchived(t, jobs, 1)
	if err := j2.Retry(time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Update(ctx, j2, rev2); err != nil {
		t.Fatalf("retry within the bucket's time to live: %v", err)
	}
	// Counted in the stream: a new watch would remove the copy itself (a
	// start's read drops copies of an epoch before the bucket's record).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		info, err := s.Archive.Info(ctx)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archive still holds %+v (%v) after the retry", info.State, err)
		}
	}
}

// awaitGone waits for key to leave kv by its time to live.
func awaitGone(t *testing.T, kv store.KV, key string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := kv.Get(context.Background(), key)
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still in the bucket after 30s (%v)", key, err)
		}
	}
}

// awaitArchived waits for a new watch to read n archived records (copies
// are removed in the background).
func awaitArchived(t *testing.T, jobs *store.Jobs, n int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got = 0
		for _, e := range initial(t, &store.Jobs{KV: jobs.KV, Archive: jobs.Archive}) {
			if e.Archived {
				got++
			}
		}
		if got == n {
			return
		}
	}
	t.Fatalf("the archive holds %d records; want %d", got, n)
}

// initial returns the entries a new watch of jobs sends before its nil.
func initial(t *testing.T, jobs *store.Jobs) []store.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var out []store.Entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				t.Fatal("the watch ended before its stored entries were sent")
			}
			if e == nil {
				return out
			}
			out = append(out, *e)
		case <-ctx.Done():
			t.Fatal("no end of the stored entries in 30s")
		}
	}
}

// The archive is indexed as fast as it is read, whatever the pace of the
// watch's reader: a Get that misses waits for the index to reach the
// archive's last record, and must not wait for a reader busy elsewhere
// (a server at a restart under load answered a retried batch 503 for
// seconds). The entries the reader did not take yet are all delivered
// after.
func TestArchiveIndexedWhileTheReaderLags(t *testing.T) {
	ctx, jobs := archiveStore(t, "archive-lag")
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for e := range w.Updates() { // the stored entries: none
		if e == nil {
			break
		}
	}
	// Another server finishes jobs while this watch's reader takes
	// nothing: more than the watch's buffer holds.
	other := &store.Jobs{KV: jobs.KV, Archive: jobs.Archive}
	const n = 600
	ids := map[string]bool{}
	for i := range n {
		j := job.New(fmt.Sprintf("noop_0123456789abcdefghjk%06d", i), job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
		createSucceeded(t, ctx, other, j)
		ids[j.ID] = true
	}
	gctx, gcancel := context.WithTimeout(ctx, 30*time.Second)
	defer gcancel()
	if _, _, err := jobs.Get(gctx, "noop_0123456789abcdefghjkmissing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get of a job that does not exist, the watch's reader idle: %v; want not found", err)
	}
	if got, _, err := jobs.Get(gctx, "noop_0123456789abcdefghjk000599"); err != nil || got.State != job.Succeeded {
		t.Fatalf("get of the last job finished: %+v, %v", got, err)
	}
	// The reader now takes what waited: every job, from the archive too.
	archived := 0
	for archived < n {
		select {
		case e := <-w.Updates():
			if e != nil && e.Archived && ids[e.Key] {
				delete(ids, e.Key)
				archived++
			}
		case <-ctx.Done():
			t.Fatalf("the watch delivered %d of %d archived records", archived, n)
		}
	}
}

// watching runs a watch of jobs until the test ends, its entries read and
// dropped: the archive's index of this process, as a server's.
func watching(t *testing.T, ctx context.Context, jobs *store.Jobs) {
	t.Helper()
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	go func() {
		for range w.Updates() {
		}
	}()
}

// archiveStore sets up a store on an embedded server of its own whose
// finished records leave the bucket a second after they are written.
func archiveStore(t *testing.T, name string) (context.Context, *store.Jobs) {
	nc := embedded(t, t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s, err := Setup(ctx, nc, StoreConfig{ArchiveAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, s.Ports.Jobs
}

// A revision JetStream brings back (a replica restarted, its finished
// revision expired meanwhile) is not the job's state: a Get reads the
// finished copy once no finishing write can still be on its way, and the
// revision goes. A younger copy is not judged (its write may be on its
// way): the bucket's record is read.
func TestRevivedRevisionIsNotTheJobsState(t *testing.T) {
	ctx, jobs := archiveStore(t, "archive-revived")
	watching(t, ctx, jobs) // the index of this process, as a server's
	j, finished := revive(t, ctx, jobs, "noop_0123456789abcdefghjkmnpq03", job.Failed)
	if time.Since(finished) < 2*time.Second {
		// Too young to judge: read as the bucket holds it.
		if got, grev, err := jobs.Get(ctx, j.ID); err != nil || got.State != job.Queued || grev == 0 {
			t.Fatalf("get beside a copy %v old: %+v at %d, %v; want the bucket's queued record", time.Since(finished), got, grev, err)
		}
	}
	for time.Since(finished) < 2*time.Second {
		time.Sleep(50 * time.Millisecond) // the copy's age is what is judged
	}
	got, grev, err := jobs.Get(ctx, j.ID)
	if err != nil || got.State != job.Failed || grev != 0 {
		t.Fatalf("get of the job whose queued revision came back: %+v at %d, %v; want failed, from the archive", got, grev, err)
	}
	if _, err := jobs.KV.Get(ctx, j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the revived revision: %v; want purged", err)
	}
	// A retry writes the job back in its next epoch.
	if err := got.Retry(time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Update(ctx, got, grev); err != nil {
		t.Fatalf("retry of the job: %v", err)
	}
	if back, _, err := jobs.Get(ctx, j.ID); err != nil || back.State != job.Queued || back.Epoch != 1 {
		t.Fatalf("after the retry: %+v, %v; want queued in epoch 1", back, err)
	}
}

// lateAnswer is a bucket whose Update answers only after then has run
// (the write done): an answer that came late, past an election.
type lateAnswer struct {
	store.KV
	store.KVExpiring
	then func()
}

func (l *lateAnswer) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	nrev, err := l.KV.Update(ctx, key, value, rev)
	if then := l.then; err == nil && then != nil {
		l.then = nil
		then()
	}
	return nrev, err
}

// A write of an unfinished record whose answer comes late, after another
// writer read it, finished the job and archived its copy, does not remove
// that copy: it removes only the copies known before it wrote (a retry's
// earlier epochs). Removing the copy it found after its write lost the job
// once its finished record left the bucket (`make chaos`: 404 on every
// server).
func TestLateAnswerKeepsTheCopyArchivedAfter(t *testing.T) {
	ctx, jobs := archiveStore(t, "archive-late")
	j := job.New("noop_0123456789abcdefghjkmnpq04", job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
	rev, err := jobs.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	// The other writer is this process, whose index holds its copy when
	// the answer comes, as a server's follower would have indexed another
	// server's.
	late := &lateAnswer{KV: jobs.KV, KVExpiring: jobs.KV.(store.KVExpiring)}
	late.then = func() {
		got, grev, err := jobs.Get(ctx, j.ID)
		if err != nil {
			t.Error(err)
			return
		}
		finished := time.Now().UTC()
		got.State, got.FinishedAt = job.Succeeded, &finished
		if _, err := jobs.Update(ctx, got, grev); err != nil {
			t.Error(err)
		}
	}
	jobs.KV = late
	running := j.Clone()
	running.State = job.Running
	if _, err := jobs.Update(ctx, running, rev); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, jobs.KV, j.ID)
	got, _, err := jobs.Get(ctx, j.ID)
	if err != nil || got.State != job.Succeeded {
		t.Fatalf("the job finished after the late answer: %+v, %v; want succeeded, from the archive", got, err)
	}
	awaitArchived(t, jobs, 1)
}

// A server starting while another finishes a job may read the job's
// finished copy in the archive and its unfinished record in the bucket,
// the other's bucket write still on its way: the start must not purge that
// record (the write would then fail its compare-and-set, remove its copy,
// and the job be lost). A record left unfinished beside its copy (a write
// a crash cut short, or a revision the file store brought back) is named
// by the watch once no finishing write can still be on its way, and a Get
// then judges it.
func TestStartLeavesAFinishingWriteInFlight(t *testing.T) {
	ctx, jobs := archiveStore(t, "archive-start")
	exp := jobs.KV.(store.KVExpiring)
	// Two jobs whose finishing writes appended their copies and have not
	// written the bucket yet.
	finishing := func(id string) (*job.Job, uint64, []byte) {
		j := job.New(id, job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
		rev, err := jobs.Create(ctx, j)
		if err != nil {
			t.Fatal(err)
		}
		done := j.Clone()
		finished := time.Now().UTC()
		done.State, done.FinishedAt = job.Succeeded, &finished
		data, err := json.Marshal(done)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jobs.Archive.Append(ctx, id, data); err != nil {
			t.Fatal(err)
		}
		return done, rev, data
	}
	inFlight, inFlightRev, inFlightData := finishing("noop_0123456789abcdefghjkmnpq01")
	stalled, _, _ := finishing("noop_0123456789abcdefghjkmnpq02")

	// The starting server's watch reads both.
	other := &store.Jobs{KV: jobs.KV, Archive: jobs.Archive, ArchiveAfter: time.Second, Shared: true}
	w, err := other.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			break
		}
	}
	if _, err := exp.WriteTTL(ctx, inFlight.ID, inFlightData, inFlightRev, time.Second); err != nil {
		t.Fatalf("the finishing write after the other server's start: %v", err)
	}
	if got, _, err := other.Get(ctx, inFlight.ID); err != nil || got.State != job.Succeeded {
		t.Fatalf("the job whose write was in flight: %+v, %v; want succeeded", got, err)
	}
	// The stalled one is named again once its copy is old enough; read
	// then, it is the copy, and its record is purged.
	for named := false; !named; {
		select {
		case e := <-w.Updates():
			named = e != nil && e.Archived && e.Key == stalled.ID
		case <-ctx.Done():
			t.Fatal("the watch never named the job whose record was left unfinished beside its finished copy")
		}
	}
	if age := time.Since(*stalled.FinishedAt); age < 2*time.Second {
		t.Fatalf("the job was named again %v after its copy; want 2s", age)
	}
	if got, _, err := other.Get(ctx, stalled.ID); err != nil || got.State != job.Succeeded {
		t.Fatalf("the job whose finishing write stopped after its copy: %+v, %v; want succeeded, from the archive", got, err)
	}
	if _, err := jobs.KV.Get(ctx, stalled.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the unfinished record beside the finished copy: %v; want purged", err)
	}
}

// A follower whose consumer delivers nothing while records are pending
// makes it again: a server's restart once waited 16 minutes in CI for the
// first read of the archive, its consumer pulling and getting nothing.
// Here the consumer is paused, which delivers nothing and says the records
// pending.
func TestAFollowerWhoseConsumerDeliversNothingMakesItAgain(t *testing.T) {
	defer func(d time.Duration) { followStuck = d }(followStuck)
	followStuck = time.Second
	nc := embedded(t, t.TempDir(), "stuck")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := range n {
		if _, err := s.Ports.Jobs.Archive.Append(ctx, fmt.Sprintf("noop_%026d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := s.Ports.Jobs.Archive.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	f := w.(*follower)
	f.mu.Lock()
	name := f.cons.CachedInfo().Name
	f.mu.Unlock()
	if _, err := s.JS.PauseConsumer(ctx, ArchiveStream, name, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				t.Fatalf("the follower ended after %d records", got)
			}
			if e == nil {
				if got != n {
					t.Fatalf("the first read ended after %d records; want %d", got, n)
				}
				return
			}
			if e.Damaged {
				t.Fatalf("record %d damaged", got)
			}
			got++
		case <-ctx.Done():
			t.Fatalf("the first read of the archive never ended: %d of %d records read, its consumer paused", got, n)
		}
	}
}

// unpurgeable is a bucket whose purges of a key's revisions fail, as they
// do while its stream has no leader, each once its deadline ends.
type unpurgeable struct {
	store.KV
	store.KVExpiring
	tries atomic.Int32
}

func (u *unpurgeable) ForgetUpTo(ctx context.Context, key string, rev uint64) error {
	u.tries.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// A start's read that meets revived revisions (superseded) while the
// bucket cannot purge them does not spend a purge's deadline on each: a
// server of a cluster that met thousands of them was not ready after
// three minutes. After one failed purge it reads on, and the jobs are
// delivered as the bucket holds them.
func TestAStartReadDoesNotWaitOnEveryFailedPurge(t *testing.T) {
	ctx, jobs := archiveStore(t, "archive-unpurgeable")
	watching(t, ctx, jobs)
	const n = 4
	for i := range n {
		revive(t, ctx, jobs, fmt.Sprintf("noop_0123456789abcdefghjkmnp%03d", i), job.Succeeded)
	}
	bucket := &unpurgeable{KV: jobs.KV, KVExpiring: jobs.KV.(store.KVExpiring)}
	start := &store.Jobs{KV: bucket, Archive: jobs.Archive} // a server starting
	w, err := start.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	queued := 0
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if !e.Archived {
			queued++
		}
	}
	if tries := bucket.tries.Load(); tries != 1 || queued != n {
		t.Fatalf("the start's read tried %d purges and read %d of the %d revived records from the bucket; want one purge tried, then every record read", tries, queued, n)
	}
}

// revive stores job id queued, ends it in state (its copy archived, its
// record gone from the bucket), then writes its queued revision back, as
// a restarted replica may serve it. It returns the job and its end.
func revive(t *testing.T, ctx context.Context, jobs *store.Jobs, id string, state job.State) (*job.Job, time.Time) {
	t.Helper()
	j := job.New(id, job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())
	rev, err := jobs.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	queued, err := jobs.KV.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	done := j.Clone()
	finished := time.Now().UTC()
	done.State, done.FinishedAt = state, &finished
	if state == job.Failed {
		done.Error = "a test failure"
	}
	if _, err := jobs.Update(ctx, done, rev); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, jobs.KV, j.ID)
	if _, err := jobs.KV.(store.KVExpiring).WriteTTL(ctx, j.ID, queued.Value, 0, 0); err != nil {
		t.Fatal(err)
	}
	return j, finished
}
