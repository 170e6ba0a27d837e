package event

import "testing"

// A hub says whether anyone listens, so that a publisher with no one to
// tell (no dashboard open) need not make its events; each subscriber
// still gets what is published while it listens.
func TestHubSaysWhetherAnyoneListens(t *testing.T) {
	var none *Hub
	if none.Listening() {
		t.Fatal("a nil hub listens")
	}
	h := NewHub()
	if h.Listening() {
		t.Fatal("a hub without subscribers listens")
	}
	a, b := h.Subscribe(1), h.Subscribe(1)
	h.Unsubscribe(a)
	h.Unsubscribe(a) // twice: no count below what is there
	if !h.Listening() {
		t.Fatal("a hub with a subscriber left does not listen")
	}
	h.Publish(Event{Type: "x"})
	if e := <-b.C; e.Type != "x" {
		t.Fatalf("event %+v", e)
	}
	h.Unsubscribe(b)
	if h.Listening() {
		t.Fatal("a hub whose subscribers all left listens")
	}
}
