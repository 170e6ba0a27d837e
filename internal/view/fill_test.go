package view_test

import (
	"context"
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
	defer cancel()
	s, err := natsx.Setup(ctx, nc, natsx.StoreConfig{ArchiveAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	writer := s.Ports.Jobs
	ports := *s.Ports
	ports.Jobs = &store.Jobs{KV: missingFinished{writer.KV}, Archive: writer.Archive, ArchiveAfter: time.Second}
	v := view.New(view.Config{Store: &ports, Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(context.Background()) })
	<-v.Ready()

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
	finished := time.Now().UTC()
	j.State, j.FinishedAt, j.Done = job.Succeeded, &finished, 1
	if _, err := writer.Update(ctx, j, rev); err != nil {
		t.Fatal(err)
	}
	for got, _ := v.Get(j.ID); got.State != client.Succeeded; got, _ = v.Get(j.ID) {
		select {
		case <-ctx.Done():
			t.Fatalf("the view still holds the job %s a minute after it finished", got.State)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
