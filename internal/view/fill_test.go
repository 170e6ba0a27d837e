package view_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/view"
)

// missingFinished is a jobs bucket whose watch misses every finished
// record, as a watch that fell more than the bucket's time to live behind
// does (a paused server's).
type missingFinished struct{ store.KV }

func (k missingFinished) Watch(ctx context.Context) (store.Watcher, error) {
	w, err := k.KV.Watch(ctx)
	if err != nil {
		return nil, err
	}
	out := &filtered{Watcher: w, ch: make(chan *store.Entry)}
	go func() {
		defer close(out.ch)
		for e := range w.Updates() {
			if e != nil && strings.Contains(string(e.Value), `"state":"succeeded"`) {
				continue
			}
			select {
			case out.ch <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

type filtered struct {
	store.Watcher
	ch chan *store.Entry
}

func (f *filtered) Updates() <-chan *store.Entry { return f.ch }

// A read model whose watch of the jobs bucket missed a job's finished
// record learns it from the archive, reading the record from the store.
func TestFinishedRecordMissedByTheWatch(t *testing.T) {
	t.Parallel()
	ctx, s := archivingStore(t, time.Second)
	writer := s.Ports.Jobs
	v := startView(t, ctx, s, &store.Jobs{KV: missingFinished{writer.KV}, Archive: writer.Archive, ArchiveAfter: time.Second})
	j, rev := createJob(t, ctx, v, writer)
	finished := time.Now().UTC()
	j.State, j.FinishedAt, j.Done = job.Succeeded, &finished, 1
	if _, err := writer.Update(ctx, j, rev); err != nil {
		t.Fatal(err)
	}
	awaitSucceeded(t, ctx, v, j.ID, finished)
}

// archivingStore sets up the store on an embedded server of the test's
// own, finished records leaving the jobs bucket after archiveAfter.
func archivingStore(t *testing.T, archiveAfter time.Duration) (context.Context, *natsx.Store) {
	t.Helper()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	s, err := natsx.Setup(ctx, nc, natsx.StoreConfig{ArchiveAfter: archiveAfter})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, s
}

// startView starts a read model of s's store whose job records are jobs.
func startView(t *testing.T, ctx context.Context, s *natsx.Store, jobs *store.Jobs) *view.View {
	t.Helper()
	ports := *s.Ports
	ports.Jobs = jobs
	v := view.New(view.Config{Store: &ports, Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(context.Background()) })
	<-v.Ready()
	return v
}

// createJob stores a new job through writer and waits for v to hold it.
func createJob(t *testing.T, ctx context.Context, v *view.View, writer *store.Jobs) (*job.Job, uint64) {
	t.Helper()
	now := time.Now().UTC()
	j := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 1}, now)
	rev, err := writer.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	for got, _ := v.Get(j.ID); got.State != client.Queued; got, _ = v.Get(j.ID) {
		select {
		case <-ctx.Done():
			t.Fatal("the view never held the queued job")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return j, rev
}

// awaitSucceeded waits for v to hold job id succeeded.
func awaitSucceeded(t *testing.T, ctx context.Context, v *view.View, id string, finished time.Time) {
	t.Helper()
	for got, _ := v.Get(id); got.State != client.Succeeded; got, _ = v.Get(id) {
		select {
		case <-ctx.Done():
			t.Fatalf("the view still holds the job %s %v after it finished", got.State, time.Since(finished))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cutShort is a jobs bucket whose finishing writes (with a time to live)
// never reach it, as one cut short by its server's death between the
// archive's copy and the bucket's write.
type cutShort struct {
	store.KV
	exp store.KVExpiring
}

func (k cutShort) WriteTTL(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	if ttl > 0 {
		return 0, context.DeadlineExceeded
	}
	return k.exp.WriteTTL(ctx, key, value, rev, ttl)
}

func (k cutShort) ForgetUpTo(ctx context.Context, key string, rev uint64) error {
	return k.exp.ForgetUpTo(ctx, key, rev)
}

// cutShortFinish starts a read model of a store whose finished records
// leave the bucket after 3 s, creates a job through a writer whose
// finishing writes are cut short (another server, killed between its
// copy and its write), and finishes it there: the copy is archived, the
// bucket holds the queued record at rev.
func cutShortFinish(t *testing.T) (ctx context.Context, jobs *store.Jobs, v *view.View, writer *store.Jobs, j *job.Job, rev uint64, finished time.Time) {
	t.Helper()
	ctx, s := archivingStore(t, 3*time.Second)
	jobs = s.Ports.Jobs
	v = startView(t, ctx, s, &store.Jobs{KV: jobs.KV, Archive: jobs.Archive, ArchiveAfter: 3 * time.Second})
	writer = &store.Jobs{KV: cutShort{jobs.KV, jobs.KV.(store.KVExpiring)}, Archive: jobs.Archive, ArchiveAfter: 3 * time.Second}
	j, rev = createJob(t, ctx, v, writer)
	finished = time.Now().UTC()
	j.State, j.FinishedAt, j.Done = job.Succeeded, &finished, 1
	if _, err := writer.Update(ctx, j, rev); err == nil {
		t.Fatal("the cut-short finishing write succeeded")
	}
	return ctx, jobs, v, writer, j, rev, finished
}

// A job whose finishing write was cut short after its archived copy (its
// server killed) is finished in the copy alone: the bucket holds it
// unfinished, and its results, applied again, change nothing in a server
// that reads the copy. A read model that held it unfinished when the copy
// came shows it finished once the copy has settled, as every Get reads it
// then. (The copy settles three times later than the read model's first
// read of the store: as by default, 20 s and 2 s.)
func TestFinishedCopyWhoseBucketWriteWasCutShort(t *testing.T) {
	t.Parallel()
	ctx, jobs, v, _, j, _, finished := cutShortFinish(t)
	if e, err := jobs.KV.Get(ctx, j.ID); err != nil || strings.Contains(string(e.Value), `"state":"succeeded"`) {
		t.Fatalf("the bucket after the cut-short write: %s, %v; want the queued record", e.Value, err)
	}
	awaitSucceeded(t, ctx, v, j.ID, finished)
}

// A job's copy archived by a finishing write whose bucket write failed
// stays when the job is written unfinished again in the same run (a lost
// attempt logged in its record): a reader that took the copy for the job's
// state let go of the results that would finish it, and the copy is then
// the job's only finished record. Every read model shows the job finished
// once the copy has settled. A retry's write (a later epoch) removes it.
func TestAnEarlyCopyOutlivesAnUnfinishedWriteOfItsRun(t *testing.T) {
	t.Parallel()
	ctx, jobs, v, writer, j, rev, finished := cutShortFinish(t)
	running := j.Clone()
	running.State, running.FinishedAt, running.Done = job.Running, nil, 0
	copySeq, err := jobs.Archive.Last(ctx)
	if err != nil || copySeq == 0 {
		t.Fatalf("no copy archived: %d, %v", copySeq, err)
	}
	// The same run written unfinished, by the process that indexed the
	// copy.
	if _, err := writer.Update(ctx, running, rev); err != nil {
		t.Fatal(err)
	}
	awaitSucceeded(t, ctx, v, j.ID, finished)
	if key, _, err := jobs.Archive.Read(ctx, copySeq); err != nil || key != j.ID {
		t.Fatalf("the early copy after the job was read finished from it: %q, %v", key, err)
	}

	// A retry's write: the copy of the earlier epoch goes.
	retried := running.Clone()
	retried.State, retried.Epoch = job.Queued, 1
	rev = 0 // the revived read purged the bucket's record, unless it left one
	if e, err := jobs.KV.Get(ctx, j.ID); err == nil {
		rev = e.Revision
	}
	if _, err := writer.Update(ctx, retried, rev); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := jobs.Archive.Read(ctx, copySeq)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the copy of the earlier epoch is still archived after the retry's write: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
