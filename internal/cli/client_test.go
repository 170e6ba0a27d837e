package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// submit sends an Idempotency-Key and, told to try again (503), sends the
// same request with the same key, so that a submit stored after all is not
// made twice.
func TestSubmitRetriesWithOneIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"the job store is not answering; try again shortly"}}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"id":"noop_0000000000000000000000000a","kind":"noop","state":"queued","partitions":1}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := submit(ctx, []string{"noop", "1", "--server", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("submit: %v (%s)", err, errOut.String())
	}
	if got := strings.TrimSpace(out.String()); got != "noop_0000000000000000000000000a" {
		t.Fatalf("printed %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 3 || keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Fatalf("keys sent: %q; want three equal, non-empty keys", keys)
	}
}

func TestSubmitDoesNotRetryABadRequest(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"code":"invalid","message":"unknown kind \"nope\""}}`))
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	err := submit(context.Background(), []string{"nope", "1", "--server", srv.URL}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "unknown kind") {
		t.Fatalf("submit of an unknown kind: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("a 400 was sent %d times; want once", calls)
	}
}
