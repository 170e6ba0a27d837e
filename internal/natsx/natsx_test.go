package natsx

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTokenIsMadeOnceAndKeptPrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	tok, created, err := Token(dir)
	if err != nil || !created || len(tok) < 32 {
		t.Fatalf("first Token = %q, %v, %v", tok, created, err)
	}
	again, created, err := Token(dir)
	if err != nil || created || again != tok {
		t.Fatalf("second Token = %q, %v, %v; want the same, not created", again, created, err)
	}
	st, err := os.Stat(filepath.Join(dir, "nats-token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", st.Mode(), err)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:4222": true, "localhost:1": true, "[::1]:80": true, "127.1.2.3:9": true,
		"0.0.0.0:4222": false, ":4222": false, "10.0.0.1:1": false, "example.com:1": false, "nonsense": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
