package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/view"
)

// endlessOutput is a service whose job outputs never end: the test of a
// client that takes nothing.
type endlessOutput struct {
	recordService
	ended chan error // the write's end, once the server stopped it
}

func (s endlessOutput) Output(context.Context, string) (func(io.Writer) error, error) {
	return func(w io.Writer) error {
		line := bytes.Repeat([]byte("a line of the output that does not end\n"), 1000)
		for {
			if _, err := w.Write(line); err != nil {
				s.ended <- err
				return err
			}
		}
	}, nil
}

// A job output's client that takes nothing for the stall time (a minute by
// default) has its download ended, as a dataset file's: it held the
// output's readers for good. That is the client's doing, logged at info,
// not as an error.
func TestAnOutputNoOneReadsIsEnded(t *testing.T) {
	svc := endlessOutput{ended: make(chan error, 1)}
	logs := &signalLog{wrote: make(chan struct{}, 1)}
	s := New(Config{Service: svc, View: view.New(view.Config{}), Hub: event.NewHub(), Kinds: kinds.Builtin(0),
		Ready: func(context.Context) error { return nil }, UploadStall: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	srv := httptest.NewServer(s)
	defer srv.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/jobs/noop_a/output HTTP/1.1\r\nHost: x\r\n\r\n") // and nothing read
	select {
	case err := <-svc.ended:
		if err == nil || !strings.Contains(err.Error(), "deadline") && !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("the output's write ended with %v, want its deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("an output no one reads was still written after 30 s")
	}
	// The handler is over once its write failed; its log line follows.
	for !strings.Contains(logs.String(), "not all taken by its client") {
		select {
		case <-logs.wrote:
		case <-time.After(10 * time.Second):
			t.Fatalf("no log line of the ended download: %s", logs.String())
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a client that took nothing is logged as an error: %s", logs.String())
	}
}

// signalLog is a log sink that says when it was written to.
type signalLog struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (l *signalLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return l.b.Write(p)
}

func (l *signalLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
