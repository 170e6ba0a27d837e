package natsx

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// wakeFixture is a server's store and a worker's, each on a connection of
// its own to one embedded server, as a remote worker's is.
func wakeFixture(t *testing.T) (server, worker *Store, workerConn *Conn, ctx context.Context) {
	t.Helper()
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	open := func(name string, setup bool) (*Store, *Conn) {
		nc, err := emb.Connect(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		var s *Store
		if setup {
			s, err = Setup(ctx, nc, StoreConfig{})
		} else {
			s, err = Open(ctx, nc)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s, nc
	}
	server, _ = open("server", true)
	worker, workerConn = open("worker", false)
	return server, worker, workerConn, ctx
}

// An idle fetch looks at every lane once, then waits on the default lane:
// it looked at all of them every 250 ms before (36 requests a second, half
// a percent of a server's core for each idle remote pool).
func TestAnIdleFetchAsksLittle(t *testing.T) {
	_, worker, conn, ctx := wakeFixture(t)
	none := func(d store.Delivery) { t.Errorf("an empty queue delivered %s", d.Key()) }
	// The lanes' consumers are opened by the first fetch.
	if err := worker.Ports.Tasks.Fetch(ctx, 4, 10*time.Millisecond, none); err != nil {
		t.Fatal(err)
	}
	before := conn.nc.Stats().OutMsgs
	if err := worker.Ports.Tasks.Fetch(ctx, 4, 3*time.Second, none); err != nil {
		t.Fatal(err)
	}
	// A look at the 8 lanes, 12 waits of 250 ms on the default one, a
	// listing of the kind lanes or two; 108 and more before.
	if sent := conn.nc.Stats().OutMsgs - before; sent > 50 {
		t.Fatalf("an idle fetch of 3 s sent %d requests; want a look at every lane, then waits on the default lane", sent)
	}
}

// A task queued in another lane than the default's while an idle fetch
// waits on the default lane is fetched at once: the publish's notice sends
// the fetch to look at every lane again.
func TestAnIdleFetchIsToldOfTasksInOtherLanes(t *testing.T) {
	server, worker, _, ctx := wakeFixture(t)
	got := make(chan string, 4)
	fetched := make(chan error, 1)
	go func() {
		fetched <- worker.Ports.Tasks.Fetch(ctx, 1, time.Minute, func(d store.Delivery) {
			got <- d.Key()
			_ = d.Ack()
		})
	}()
	// Once the fetch waits on the default lane (a pull request waiting
	// there), a task of priority 4 is queued.
	def, err := server.Tasks.Consumer(ctx, server.Ports.Tasks.(*stream).lane(job.DefaultPriority).consumer)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := def.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumWaiting > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the fetch never waited on the default lane")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if errs := server.Ports.Tasks.Publish(ctx, store.Message{Key: "urgent", Data: []byte("t"), Priority: job.MaxPriority}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	select {
	case key := <-got:
		if key != "urgent" {
			t.Fatalf("fetched %q; want the task of priority 4", key)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a task queued in the priority-4 lane waited for the end of a fetch that waited on the default lane (a minute)")
	}
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
}

// A server queuing many tasks of another priority sends a notice at most
// every notifyEvery, and one after the last publish of a burst.
func TestNoticesAreFewAndTheLastIsSent(t *testing.T) {
	server, _, conn, ctx := wakeFixture(t)
	notices := make(chan struct{}, 1000)
	sub, err := conn.nc.Subscribe(TaskWakeSubject, func(*nats.Msg) { notices <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := conn.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	st := server.Ports.Tasks.(*stream)
	start := time.Now()
	for range 1000 {
		st.notify()
	}
	took := time.Since(start)
	// The first at once, the rest told by one at the end of its window.
	for i := range 2 {
		select {
		case <-notices:
		case <-ctx.Done():
			t.Fatalf("%d notices for a burst of 1,000 publishes; want the first and one after the last", i)
		}
	}
	if most := 2 + int(took/notifyEvery); len(notices) > most {
		t.Fatalf("%d notices for a burst of 1,000 publishes in %v; want at most %d", 2+len(notices), took, most+2)
	}
}
