package app_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
)

// A keep-alive connection that sends no request for the idle timeout is
// closed by the server: idle connections do not hold its descriptors for
// good.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.IdleTimeout = 300 * time.Millisecond })
	conn, err := net.DialTimeout("tcp", b.srv.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: mrcluster\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET /healthz: %d, close %v; want 200 on a connection kept alive", resp.StatusCode, resp.Close)
	}
	// The server closes it; a read ends with EOF, long before the deadline.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := rd.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("reading an idle connection: %v, want EOF (closed by the server)", err)
	}
}
