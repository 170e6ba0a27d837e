package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/view"
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
	cfg.ShutdownTimeout = 10 * time.Second
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
		srv.Close(ctx)
	})
	return &bundle{srv: srv, cfg: cfg}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (b *bundle) do(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testContext(t), method, b.srv.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

func (b *bundle) submit(t *testing.T, kind string, n int) view.Job {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"kind": kind, "partitions": n})
	r := b.do(t, "POST", "/api/v1/jobs", string(body))
	if r.status != http.StatusAccepted {
		t.Fatalf("submit %s/%d: %d %s", kind, n, r.status, r.body)
	}
	var j view.Job
	r.json(t, &j)
	return j
}

func (b *bundle) job(t *testing.T, id string) view.Job {
	t.Helper()
	r := b.do(t, "GET", "/api/v1/jobs/"+id, "")
	if r.status != http.StatusOK {
		t.Fatalf("get job %s: %d %s", id, r.status, r.body)
	}
	var j view.Job
	r.json(t, &j)
	return j
}

func (b *bundle) dial(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(testContext(t), "ws"+strings.TrimPrefix(b.srv.URL(), "http")+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.SetReadLimit(16 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// await returns the job once cond holds for it, re-reading it whenever the
// server sends an event: no polling interval, no sleep.
func (b *bundle) await(t *testing.T, id string, cond func(view.Job) bool) view.Job {
	t.Helper()
	ctx := testContext(t)
	c := b.dial(t, "/api/v1/events")
	for {
		j := b.job(t, id)
		if cond(j) {
			return j
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatalf("waiting for job %s (last seen %s, %+v): %v", id, j.State, j.Tasks, err)
		}
	}
}

func (b *bundle) awaitState(t *testing.T, id string, s job.State) view.Job {
	t.Helper()
	return b.await(t, id, func(j view.Job) bool { return j.State == s })
}

func terminal(j view.Job) bool { return j.State.Terminal() }

func readJSON(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	_, data, err := c.Read(testContext(t))
	if err != nil {
		t.Fatalf("read websocket: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode websocket message %s: %v", data, err)
	}
}

func compactJSON(t *testing.T, data []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		t.Fatalf("compact %s: %v", data, err)
	}
	return buf.String()
}
