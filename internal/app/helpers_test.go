package app_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// testKinds are the built-in kinds at a thousandth of their sleep, plus
// kinds whose behaviour a test controls.
func testKinds(extra ...job.Kind) *job.Registry {
	r := kinds.Builtin(0.001)
	r.Register(job.Kind{Name: "fail", Map: func(_ context.Context, t job.Task) (int64, error) {
		if t.Partition == 1 {
			return 0, errorString("the input of partition 1 is corrupt")
		}
		return 1, nil
	}})
	r.Register(job.Kind{Name: "panic", Map: func(context.Context, job.Task) (int64, error) { panic("boom") }})
	for _, k := range extra {
		r.Register(k)
	}
	return r
}

// held is a kind "hold" whose tasks each send on started (when not nil)
// and return 1 once release is closed.
func held(started chan<- struct{}) (hold job.Kind, release chan struct{}) {
	release = make(chan struct{})
	return job.Kind{Name: "hold", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		if started != nil {
			started <- struct{}{}
		}
		select {
		case <-release:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}, release
}

type errorString string

func (e errorString) Error() string { return string(e) }

type bundle struct {
	srv *app.Server
	cfg app.Config
}

// setup starts a server on random ports with its own data directory.
func setup(t *testing.T, mod ...func(*app.Config)) *bundle {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Kinds = testKinds()
	cfg.AckWait = 5 * time.Second
	cfg.RetryBackoff = 10 * time.Millisecond
	cfg.ShutdownTimeout = 10 * time.Second
	if testing.Verbose() && os.Getenv("MRCLUSTER_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		apitest.Within(t, cfg.ShutdownTimeout+30*time.Second, "the server's stop", func() { _ = srv.Stop(ctx) })
	})
	return &bundle{srv: srv, cfg: cfg}
}

// The bundle's client methods, shortened for the tests of this package.
func (b *bundle) client() apitest.Client { return apitest.Client{URL: b.srv.URL()} }

func (b *bundle) do(t *testing.T, method, path, body string, headers ...string) apitest.Response {
	t.Helper()
	return b.client().Do(t, method, path, body, headers...)
}

func (b *bundle) submit(t *testing.T, kind string, n int) client.Job {
	t.Helper()
	return b.client().Submit(t, kind, n)
}

func (b *bundle) job(t *testing.T, id string) client.Job {
	t.Helper()
	return b.client().Job(t, id)
}

func (b *bundle) dial(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	return b.client().Dial(t, path)
}

func (b *bundle) await(t *testing.T, id string, cond func(client.Job) bool) client.Job {
	t.Helper()
	return b.client().Await(t, id, cond)
}

func (b *bundle) awaitState(t *testing.T, id string, s client.State) client.Job {
	t.Helper()
	return b.await(t, id, func(j client.Job) bool { return j.State == s })
}

func terminal(j client.Job) bool { return j.State.Terminal() }

var (
	readJSON = apitest.ReadJSON
	compact  = apitest.Compact
)
