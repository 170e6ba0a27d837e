package httpapi

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A client takes at most its slots; a request waiting for one gives up
// with its context; a client with nothing held or waiting is forgotten.
func TestClientSlots(t *testing.T) {
	c := clientSlots{per: 2}
	ctx := context.Background()
	a1, err := c.take(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := c.take(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b1, err := c.take(ctx, "b") // another client is not held up
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.take(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third slot of a client of two: %v", err)
	}
	got := make(chan func())
	go func() {
		r, err := c.take(ctx, "a")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	a1()
	a3 := <-got // taken once one is released
	for _, r := range []func(){a2, a3, b1} {
		r()
	}
	if n := len(c.clients); n != 0 {
		t.Fatalf("%d clients remembered with nothing held", n)
	}
}
