package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
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

// gatedOutput is a service whose output's first write waits at a gate:
// the test sees every request arrive before any size is known.
type gatedOutput struct {
	recordService
	asked  chan struct{} // a token per Output call
	gate   chan struct{}
	writes *atomic.Int64
	body   []byte
}

func (s gatedOutput) Output(context.Context, string) (func(io.Writer) error, error) {
	s.asked <- struct{}{}
	return func(w io.Writer) error {
		if s.writes.Add(1) == 1 {
			<-s.gate
		}
		_, err := w.Write(s.body)
		return err
	}, nil
}

// Ranges of one output asked together (a download manager's parallel
// segments) find its size with one write of it, not one each; each range
// then gets its bytes.
func TestRangesAskedTogetherSizeTheOutputOnce(t *testing.T) {
	const segments = 8
	body := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	svc := gatedOutput{asked: make(chan struct{}, segments), gate: make(chan struct{}), writes: &atomic.Int64{}, body: body}
	s := New(Config{Service: svc, View: view.New(view.Config{}), Hub: event.NewHub(), Kinds: kinds.Builtin(0),
		Ready: func(context.Context) error { return nil }, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(s)
	defer srv.Close()
	seg := len(body) / segments
	got := make([][]byte, segments)
	errs := make(chan error, segments)
	for i := range segments {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/jobs/noop_a/output", nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", i*seg, (i+1)*seg-1))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got[i], err = io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode != http.StatusPartialContent {
				err = fmt.Errorf("segment %d: %d", i, resp.StatusCode)
			}
			errs <- err
		}()
	}
	for range segments {
		<-svc.asked // every request is in, the first size write held at the gate
	}
	close(svc.gate)
	for range segments {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(bytes.Join(got, nil), body) {
		t.Fatal("the segments do not make the output")
	}
	if n := svc.writes.Load(); n != segments+1 {
		t.Fatalf("%d writes of the output for %d ranges asked together; want one to size it and one per range", n, segments)
	}
}

// leavingFile is a service whose dataset file sends its first bytes, then
// waits for its next read until the request ends (a store read under way
// when the client went away) and says so.
type leavingFile struct {
	recordService
	waiting chan struct{} // closed when the first bytes are sent
	ended   chan error
}

func (s leavingFile) ReadFile(ctx context.Context, _, _ string, _ int64) (dataset.File, io.ReadCloser, error) {
	return dataset.File{Name: "f", Size: 1 << 20, Upload: "u1"}, &waitingBody{ctx: ctx, waiting: s.waiting, ended: s.ended}, nil
}

type waitingBody struct {
	ctx     context.Context
	waiting chan struct{}
	ended   chan error
	sent    bool
}

func (b *waitingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, bytes.Repeat([]byte("x"), 1000)), nil
	}
	close(b.waiting) // the first bytes were written to the answer
	<-b.ctx.Done()
	b.ended <- b.ctx.Err()
	return 0, fmt.Errorf("block 1 of file f of dataset d: %w", b.ctx.Err())
}

func (b *waitingBody) Close() error { return nil }

// A download its client gives up while the file's next block is being
// read is the client's doing: logged at info, not as an error (a soak's
// downloads cut short by their clients were each an error in the log).
func TestADownloadGivenUpIsNoError(t *testing.T) {
	svc := leavingFile{waiting: make(chan struct{}), ended: make(chan error, 1)}
	logs := &signalLog{wrote: make(chan struct{}, 1)}
	s := New(Config{Service: svc, View: view.New(view.Config{}), Hub: event.NewHub(), Kinds: kinds.Builtin(0),
		Ready: func(context.Context) error { return nil }, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	srv := httptest.NewServer(s)
	defer srv.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /api/v1/datasets/d/files/f HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-svc.waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("the download did not begin within 30 s")
	}
	conn.Close() // the client goes away mid-download
	select {
	case <-svc.ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the read under way did not end with its request 30 s after the client left")
	}
	for !strings.Contains(logs.String(), "not all taken by its client") {
		select {
		case <-logs.wrote:
		case <-time.After(10 * time.Second):
			t.Fatalf("no log line of the download given up: %s", logs.String())
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a download its client gave up is logged as the server's failure: %s", logs.String())
	}
}
