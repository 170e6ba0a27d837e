package natsx

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// slowStream answers the publishes on subject "slow" as a stream would,
// each late (a store under load), and returns a JetStream context that
// holds at most one publish without its answer.
func slowStream(t *testing.T, late time.Duration) jetstream.JetStream {
	t.Helper()
	c := embedded(t, t.TempDir(), "publish")
	var seq atomic.Uint64
	sub, err := c.nc.Subscribe("slow", func(m *nats.Msg) {
		ack := fmt.Sprintf(`{"stream":"SLOW","seq":%d}`, seq.Add(1))
		time.AfterFunc(late, func() { _ = m.Respond([]byte(ack)) })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	js, err := jetstream.New(c.nc, jetstream.WithPublishAsyncMaxPending(1), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// slowMsg is a message to slowStream's subject.
func slowMsg(int) *nats.Msg { return &nats.Msg{Subject: "slow", Data: []byte("x")} }

// A publish that finds the connection's window of unanswered publishes
// full waits for room until the caller's deadline, not nats.go's 200 ms:
// a burst of batch submits was refused ("stalled with too many outstanding
// async published messages") while the store was only slow.
func TestPublishAllWaitsForRoomUntilItsDeadline(t *testing.T) {
	js := slowStream(t, 400*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seqs, errs := publishAll(ctx, js, 3, slowMsg, storeErr)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d of 3 through a window of 1, each answered 400 ms late: %v", i, err)
		}
		if seqs[i] != uint64(i+1) {
			t.Errorf("publish %d stored as %d, want %d", i, seqs[i], i+1)
		}
	}
}

// Once the deadline passes, what is not sent yet is not sent, and each
// unanswered publish says so: the caller withdraws what it cannot know.
func TestPublishAllStopsAtItsDeadline(t *testing.T) {
	js := slowStream(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, errs := publishAll(ctx, js, 4, slowMsg, storeErr)
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "no acknowledgement") {
		t.Errorf("the publish the store did not answer in time: %v, want no acknowledgement", errs[0])
	}
	for i, err := range errs[1:] {
		if err == nil {
			t.Errorf("publish %d, after the deadline, succeeded", i+1)
		}
	}
	if !strings.Contains(errs[3].Error(), "not sent") {
		t.Errorf("the last publish, past the deadline: %v, want not sent", errs[3])
	}
}

// Messages of a read that the store no longer holds because they were
// deleted since the read counted them are not damaged: the read ends with
// what it got. (The coordinator's purge of applied shared results, racing
// a history read, made it report "2 messages are damaged in the store".)
func TestAReadRacingADeletionIsNotDamage(t *testing.T) {
	s, ctx := setupStore(t)
	results := s.Ports.Results.(*stream)
	for i := range 3 {
		if err := results.Publish(ctx, store.Message{Key: "j1", Data: []byte{byte('a' + i)}})[0]; err != nil {
			t.Fatal(err)
		}
	}
	filter := ResultSubject + "j1"
	var got []string
	// The read counted 3 and got the first; the other two go meanwhile.
	first, err := results.st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(filter))
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, string(first.Data))
	for _, seq := range []uint64{2, 3} {
		if err := results.st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := results.rest(ctx, filter, first.Sequence+1, 2, 3, func(b []byte) { got = append(got, string(b)) }); err != nil {
		t.Fatalf("a read whose last messages were deleted meanwhile: %v", err)
	}
	if len(got) != 1 || got[0] != "a" {
		t.Fatalf("read %q, want [a]", got)
	}
}
