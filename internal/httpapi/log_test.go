package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// levels records the level of each "http request" line, by request.
type levels struct {
	mu     sync.Mutex
	level  map[string]slog.Level
	client map[string]string
	status map[string]int64
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *levels) WithGroup(string) slog.Handler            { return l }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "http request" {
		return nil
	}
	var method, path, client string
	var status int64
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "status":
			status = a.Value.Int64()
		case "method":
			method = a.Value.String()
		case "path":
			path = a.Value.String()
		case "client":
			client = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.level[method+" "+path] = r.Level
	l.client[method+" "+path] = client
	if l.status != nil {
		l.status[method+" "+path] = status
	}
	return nil
}

// TestRequestsAreLoggedByWhatTheyDid: a page or a script polling the API
// must not bury the lines that matter, so answered reads are debug; what
// changed something or was refused is info, a server's failure a warning.
func TestRequestsAreLoggedByWhatTheyDid(t *testing.T) {
	l := &levels{level: map[string]slog.Level{}, client: map[string]string{}}
	s := recordServer(slog.New(l))
	for _, c := range []struct {
		method, path, body string
		status             int
		level              slog.Level
	}{
		{"GET", "/api/v1/jobs", "", http.StatusOK, slog.LevelDebug},
		{"GET", "/api/v1/queue", "", http.StatusOK, slog.LevelDebug},
		{"POST", "/api/v1/jobs", `{"kind":"noop","partitions":1}`, http.StatusAccepted, slog.LevelInfo},
		{"POST", "/api/v1/jobs/x/cancel", "", http.StatusNotFound, slog.LevelInfo},
		{"GET", "/api/v1/nothing", "", http.StatusNotFound, slog.LevelInfo},
		{"PUT", "/api/v1/datasets/d/files/f", "x", http.StatusServiceUnavailable, slog.LevelWarn},
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		if w.Code != c.status {
			t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, w.Code, w.Body, c.status)
		}
		l.mu.Lock()
		got, ok := l.level[c.method+" "+c.path]
		client := l.client[c.method+" "+c.path]
		l.mu.Unlock()
		if !ok || got != c.level {
			t.Errorf("%s %s answered %d: logged at %v (logged: %v), want %v", c.method, c.path, w.Code, got, ok, c.level)
		}
		if client != "192.0.2.1" { // httptest.NewRequest's RemoteAddr
			t.Errorf("%s %s: logged for client %q, want the request's address 192.0.2.1", c.method, c.path, client)
		}
	}
}

// A request whose client went away before its answer (a download or a
// wait it gave up on) is no failure of the server's, whatever the handler
// answered for want of a reader: it is logged with nginx's 499, at debug
// for a read, info for a change, and counted so; not a warning. (Downloads
// cut short by their clients were warnings of a 503.)
func TestARequestWhoseClientLeftIsNoServerError(t *testing.T) {
	l := &levels{level: map[string]slog.Level{}, client: map[string]string{}, status: map[string]int64{}}
	s := recordServer(slog.New(l))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client has gone
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("PUT", "/api/v1/datasets/d/files/f", strings.NewReader("x")).WithContext(ctx))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("the upload with its client gone: %d %s; want the store's 503, which no one reads", w.Code, w.Body)
	}
	l.mu.Lock()
	level, status := l.level["PUT /api/v1/datasets/d/files/f"], l.status["PUT /api/v1/datasets/d/files/f"]
	l.mu.Unlock()
	if level != slog.LevelInfo || status != 499 {
		t.Fatalf("logged at %v with status %d; want info with 499", level, status)
	}
	if got := requestLevel(http.MethodGet, statusClientClosed); got != slog.LevelDebug {
		t.Fatalf("a read whose client left logged at %v; want debug", got)
	}
	// With its client there, the same answer is the server's failure.
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("PUT", "/api/v1/datasets/d/files/f", strings.NewReader("x")))
	l.mu.Lock()
	level, status = l.level["PUT /api/v1/datasets/d/files/f"], l.status["PUT /api/v1/datasets/d/files/f"]
	l.mu.Unlock()
	if level != slog.LevelWarn || status != 503 {
		t.Fatalf("a 503 to a client that waited for it: logged at %v with status %d; want a warning with 503", level, status)
	}
}
