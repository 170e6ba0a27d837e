package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
)

// --debug-addr serves Go's profiles on a loopback listener of its own (a
// goroutine dump names the server's own code), not on the API, and is
// refused beyond loopback; the server's stop closes it.
func TestGoProfilesOnALoopbackListener(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.DebugAddr = "127.0.0.1:0" })
	base := b.srv.DebugURL()
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, "/debug/pprof/") {
		t.Fatalf("DebugURL() = %q", base)
	}
	get := func(url string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(apitest.Context(t), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(base + "goroutine?debug=2"); code != 200 || !strings.Contains(body, "mrcluster/internal/coordinator") {
		t.Fatalf("goroutine dump: %d, %.300s", code, body)
	}
	if code, body := get(base); code != 200 || !strings.Contains(body, "heap") {
		t.Fatalf("the profiles' index: %d, %.300s", code, body)
	}
	if code, _ := get(b.srv.URL() + "/debug/pprof/"); code == 200 {
		t.Fatal("the API serves the profiles too")
	}

	cfg := app.DefaultConfig()
	cfg.DebugAddr = "0.0.0.0:6060"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--debug-addr") || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("--debug-addr beyond loopback: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ShutdownTimeout)
	defer cancel()
	if err := b.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base); err == nil {
		t.Fatal("the profiles are still served after the server stopped")
	}
}
