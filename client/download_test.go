package client_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
)

// cutting serves one body whose connections are cut after cut bytes of
// each answer: a network that drops long transfers. A range request
// bound by If-Range to the current version's ETag gets the rest from its
// start, as the server does. The version of the n-th request is
// etags[n], or the last of them (none: no ETag).
type cutting struct {
	body  []byte
	cut   int
	etags []string

	mu       sync.Mutex
	ranges   []string // the Range of each request ("" for none)
	ifRanges []string
}

func (s *cutting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	etag := ""
	if len(s.etags) > 0 {
		etag = s.etags[min(len(s.ranges), len(s.etags)-1)]
	}
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.ifRanges = append(s.ifRanges, r.Header.Get("If-Range"))
	s.mu.Unlock()
	start := 0
	status := http.StatusOK
	if rng := r.Header.Get("Range"); rng != "" && r.Header.Get("If-Range") == etag {
		fmt.Sscanf(rng, "bytes=%d-", &start)
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(s.body)-1, len(s.body)))
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(s.body)-start))
	w.WriteHeader(status)
	rest := s.body[start:]
	if len(rest) > s.cut {
		_, _ = w.Write(rest[:s.cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection is cut
	}
	_, _ = w.Write(rest)
}

func (s *cutting) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ranges)
}

func body(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d of the output\n", i)
	}
	return b.Bytes()[:n]
}

// A download cut short is resumed where it ended, bound to the version
// first sent, as long as each try gets further: the bytes written are the
// whole body, once.
func TestDownloadIsResumedWhereItWasCut(t *testing.T) {
	s := &cutting{body: body(100_000), cut: 30_000, etags: []string{`"v1"`}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := client.New(srv.URL, "").Output(ctx, "noop_1", &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), s.body) {
		t.Fatalf("downloaded %d bytes, not the body of %d", out.Len(), len(s.body))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	want := []string{"", "bytes=30000-", "bytes=60000-", "bytes=90000-"}
	if strings.Join(s.ranges, "|") != strings.Join(want, "|") || s.ifRanges[1] != `"v1"` {
		t.Fatalf("ranges asked: %q (If-Range %q), want %q bound to \"v1\"", s.ranges, s.ifRanges, want)
	}
}

// A download whose resumption finds another version (the file replaced
// meanwhile) stops, saying so; so does one that gets no further, and one
// of a server that names no version is not resumed.
func TestDownloadIsNotResumedOverAnotherVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	replaced := &cutting{body: body(50_000), cut: 20_000, etags: []string{`"v1"`, `"v2"`}}
	srv := httptest.NewServer(replaced)
	defer srv.Close()
	var out bytes.Buffer
	err := client.New(srv.URL, "").GetFile(ctx, "d", "f.txt", &out)
	if err == nil || !strings.Contains(err.Error(), "another version") || out.Len() != 20_000 {
		t.Fatalf("a resumption over another version: %d bytes, %v", out.Len(), err)
	}

	unnamed := &cutting{body: body(50_000), cut: 20_000} // no ETag
	srv2 := httptest.NewServer(unnamed)
	defer srv2.Close()
	out.Reset()
	err = client.New(srv2.URL, "").Output(ctx, "noop_1", &out)
	if err == nil || !strings.Contains(err.Error(), "ended after 20000 bytes") || unnamed.requests() != 1 {
		t.Fatalf("a cut download of no version: %d bytes, %v, %d requests; want it not resumed", out.Len(), err, unnamed.requests())
	}

	stuck := &cutting{body: body(50_000), cut: 0, etags: []string{`"v1"`}} // every answer cut before its first byte
	srv3 := httptest.NewServer(stuck)
	defer srv3.Close()
	out.Reset()
	err = client.New(srv3.URL, "").Output(ctx, "noop_1", &out)
	if err == nil || !strings.Contains(err.Error(), "ended after 0 bytes") || stuck.requests() != 1 {
		t.Fatalf("a download cut before its first byte: %v, %d requests; want one", err, stuck.requests())
	}
}
