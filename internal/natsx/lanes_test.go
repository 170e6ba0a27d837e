package natsx

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// slowListing is a stream whose listing of consumers waits for release,
// as one does while the stream's leader is away (up to its 5 s deadline).
type slowListing struct {
	jetstream.Stream
	listing, release chan struct{}
}

func (s slowListing) ListConsumers(ctx context.Context) jetstream.ConsumerInfoLister {
	s.listing <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return s.Stream.ListConsumers(ctx)
}

// While one goroutine lists the task queue's kind lanes, the others (every
// fetch of a pool asks for them) go on with the last list, and the lanes'
// consumers are opened: none waits behind the listing. The listing then
// finds the lane set before it.
func TestAListingOfKindLanesHoldsNothingUp(t *testing.T) {
	s, ctx := setupStore(t)
	slow := slowListing{Stream: s.Tasks, listing: make(chan struct{}, 1), release: make(chan struct{})}
	st := &stream{js: s.JS, st: slow, lanes: taskLanes(), tokens: s.Tokens}
	if err := st.SetLane(ctx, "slow", 2, ""); err != nil {
		t.Fatal(err)
	}
	listed := make(chan []*lane, 1)
	go func() { listed <- st.kindLanes(ctx) }()
	<-slow.listing
	others := make(chan error, 1)
	go func() {
		if got := st.kindLanes(ctx); len(got) != 0 {
			t.Errorf("a second caller got %d lanes; want the last list, empty", len(got))
		}
		_, err := st.shared(ctx, st.lanes[0])
		others <- err
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a caller waited behind the listing of kind lanes")
	}
	close(slow.release)
	if got := <-listed; len(got) != 1 || got[0].consumer != KindLaneConsumer("slow") {
		t.Fatalf("the listing found %+v; want the lane of kind slow", got)
	}
}
