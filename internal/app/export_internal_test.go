package app

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// LockedBuffer is a log sink tests read while the server writes (the
// package's external tests use it too).
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startInternal starts a server on loopback and a data directory of the
// test's, with mod's changes to the default configuration, and stops it
// when the test ends.
func startInternal(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	if mod != nil {
		mod(&cfg)
	}
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return srv
}
