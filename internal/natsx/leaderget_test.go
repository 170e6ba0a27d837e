package natsx

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A read from a stream's leader that the leader of the moment does not
// answer (a server paused while it led, stepping down once continued) is
// asked again, and the next leader's answer taken, well within the
// caller's deadline: one request under that deadline left a dataset's
// listing unanswered for its client's 20 s (TestServerPausedAgain, a CI
// run). The leader here is a subscriber that ignores the first request.
func TestALeaderReadUnansweredIsAskedAgain(t *testing.T) {
	defer func(d time.Duration) { leaderGetAttempt = d }(leaderGetAttempt)
	leaderGetAttempt = 100 * time.Millisecond
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("the NATS server did not start")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	sub, err := nc.Subscribe("$JS.API.STREAM.MSG.GET.S", func(m *nats.Msg) {
		if asked.Add(1) == 1 {
			return // the leader of the moment, paused
		}
		_ = m.Respond([]byte(`{"message":{"subject":"a","seq":7,"data":"eA=="}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	m, found, err := leaderGet(ctx, js, "S", map[string]any{"last_by_subj": "a"})
	if err != nil || !found || m.Seq != 7 || string(m.Data) != "x" {
		t.Fatalf("the read: %+v found %v, %v; want message 7 from the second leader", m, found, err)
	}
	if n := asked.Load(); n != 2 {
		t.Fatalf("asked %d times; want twice", n)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("answered after %v: the read waited on the leader that did not answer", took)
	}
}
