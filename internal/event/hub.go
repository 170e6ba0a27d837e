// Package event fans typed events out to subscribers (websocket clients)
// without ever letting a slow subscriber hold up the others.
package event

import (
	"sync"
	"sync/atomic"
	"time"
)

// Event is one typed change a dashboard applies as a delta.
type Event struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data any       `json:"data,omitempty"`
}

// Hub delivers each published event to every subscriber.
type Hub struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	n    atomic.Int32 // len(subs)
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[*Subscription]struct{}{}} }

// Subscription receives events on C. When C is full, events are dropped and
// Lagged reports it once: the subscriber should reload its state.
type Subscription struct {
	C      chan Event
	lagged atomic.Bool
}

// Lagged reports, and clears, whether events were dropped since the last call.
func (s *Subscription) Lagged() bool { return s.lagged.Swap(false) }

// Subscribe returns a subscription buffering up to n events.
func (h *Hub) Subscribe(n int) *Subscription {
	s := &Subscription{C: make(chan Event, n)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.n.Store(int32(len(h.subs)))
	h.mu.Unlock()
	return s
}

// Unsubscribe stops deliveries to s.
func (h *Hub) Unsubscribe(s *Subscription) {
	h.mu.Lock()
	delete(h.subs, s)
	h.n.Store(int32(len(h.subs)))
	h.mu.Unlock()
}

// Listening reports whether anyone subscribes: with no one, a publisher
// may skip making its events (a nil hub has no one).
func (h *Hub) Listening() bool { return h != nil && h.n.Load() > 0 }

// Publish delivers e to every subscriber that has room for it.
func (h *Hub) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.C <- e:
		default:
			s.lagged.Store(true)
		}
	}
}
