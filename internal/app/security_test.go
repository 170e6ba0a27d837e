package app_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/httpapi"
)

func TestAuthToken(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.AuthToken = "s3cret" })
	for _, tc := range []struct {
		method, path, auth string
		status             int
		msg                string
	}{
		{"POST", "/short/1", "", 401, "needs a token"},
		{"POST", "/api/v1/jobs", "", 401, "Authorization: Bearer"},
		{"POST", "/api/v1/jobs/x/cancel", "", 401, "needs a token"},
		{"PUT", "/api/v1/datasets/d/files/f", "", 401, "needs a token"},
		{"DELETE", "/api/v1/datasets/d", "", 401, "needs a token"},
		{"DELETE", "/api/v1/datasets/d/files/f", "", 401, "needs a token"},
		{"GET", "/api/v1/datasets/d/files/f", "", 404, `dataset \"d\" not found`},
		{"POST", "/short/1", "Bearer wrong", 401, "not this server's"},
		{"POST", "/short/1", "Basic czNjcmV0", 401, "needs a token"},
		{"POST", "/noop/1", "Bearer s3cret", 200, ""},
		{"GET", "/api/v1/jobs", "", 200, ""},
		{"GET", "/status", "", 200, ""},
		{"GET", "/healthz", "", 200, ""},
	} {
		r := b.do(t, tc.method, tc.path, "", "Authorization", tc.auth)
		if r.Status != tc.status || !strings.Contains(string(r.Body), tc.msg) {
			t.Errorf("%s %s with %q: %d %s, want %d %q", tc.method, tc.path, tc.auth, r.Status, r.Body, tc.status, tc.msg)
		}
		if r.Status == 401 && r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
		}
	}
}

func TestAuthRead(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.AuthToken, c.AuthRead = "s3cret", true })
	if r := b.do(t, "GET", "/api/v1/jobs", ""); r.Status != 401 {
		t.Fatalf("read without a token: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "GET", "/api/v1/jobs", "", "Authorization", "Bearer s3cret"); r.Status != 200 {
		t.Fatalf("read with the token: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "GET", "/readyz", ""); r.Status != 200 {
		t.Fatalf("readiness probe without a token: %d %s", r.Status, r.Body)
	}
	ws := "ws" + strings.TrimPrefix(b.srv.URL(), "http")
	ctx := apitest.Context(t)
	if c, resp, err := websocket.Dial(ctx, ws+"/queue", nil); err == nil {
		c.CloseNow()
		t.Fatal("a websocket without a token was accepted")
	} else if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket without a token: %v %v", resp, err)
	}
	// Browsers cannot set headers on websockets: a query parameter or a
	// subprotocol carries the token.
	c, _, err := websocket.Dial(ctx, ws+"/queue?access_token=s3cret", nil)
	if err != nil {
		t.Fatalf("websocket with ?access_token: %v", err)
	}
	var q []string
	readJSON(t, c, &q)
	c.CloseNow()
	c, _, err = websocket.Dial(ctx, ws+"/api/v1/events", &websocket.DialOptions{Subprotocols: []string{"bearer.s3cret"}})
	if err != nil {
		t.Fatalf("websocket with a bearer subprotocol: %v", err)
	}
	if c.Subprotocol() != "bearer.s3cret" {
		t.Errorf("subprotocol = %q, want it echoed", c.Subprotocol())
	}
	c.CloseNow()
}

func TestServingBeyondLoopbackNeedsAToken(t *testing.T) {
	t.Parallel()
	cfg := app.DefaultConfig()
	cfg.Addr = "0.0.0.0:8080"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--auth-token") || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("0.0.0.0 without a token: %v", err)
	}
	cfg.AuthToken = "x"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with a token: %v", err)
	}
	cfg.AuthToken, cfg.Insecure = "", true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with --insecure: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:8080", "localhost:8080", "[::1]:8080"} {
		cfg := app.DefaultConfig()
		cfg.Addr = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s without a token: %v", addr, err)
		}
	}
}

func TestMaxQueuedTasks(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Workers, c.MaxQueuedTasks = 0, 5 })
	first := b.submit(t, "noop", 3)
	r := b.do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":3}`)
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || !strings.Contains(string(r.Body), "--max-queued-tasks") {
		t.Fatalf("submit over the queue bound: %d %v %s", r.Status, r.Header, r.Body)
	}
	if r := b.do(t, "POST", "/noop/2", ""); r.Status != 200 {
		t.Fatalf("a submit that fits: %d %s", r.Status, r.Body)
	}
	if got := b.job(t, first.ID); got.State != client.Queued || got.Tasks.Queued != 3 {
		t.Fatalf("the first job: %s", apitest.Describe(got))
	}
}

func TestMaxUnfinishedJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Workers, c.MaxUnfinishedJobs = 0, 2 })
	b.submit(t, "noop", 1)
	r := b.do(t, "POST", "/api/v1/jobs/batch", `{"jobs":[{"kind":"noop","partitions":1},{"kind":"noop","partitions":1}]}`)
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || !strings.Contains(string(r.Body), "--max-unfinished-jobs") {
		t.Fatalf("a batch over the bound of unfinished jobs: %d %v %s", r.Status, r.Header, r.Body)
	}
	if r := b.do(t, "POST", "/noop/1", ""); r.Status != 200 {
		t.Fatalf("a submit that fits: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "POST", "/noop/1", ""); r.Status != http.StatusTooManyRequests {
		t.Fatalf("a seed submit over the bound: %d %s", r.Status, r.Body)
	}
	// Nothing of the refused batch was stored.
	var list struct{ Jobs []client.Job }
	if r := b.do(t, "GET", "/api/v1/jobs", ""); r.Status != 200 || json.Unmarshal(r.Body, &list) != nil || len(list.Jobs) != 2 {
		t.Fatalf("jobs listed: %d %s; want the 2 admitted", r.Status, r.Body)
	}
}

// Websockets are bounded: each holds about 110 KB of the server's memory
// and gets a snapshot or an event at every change, and one client holding
// 5,000 took 580 MB. One over --max-websockets is refused with 429 before
// its upgrade, naming the flag; one closed makes room again.
func TestMaxWebsockets(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.MaxWebsockets = 2 })
	c := b.client()
	first := c.Dial(t, "/queue") // the seed's live page
	c.Dial(t, "/api/v1/events")
	ws := "ws" + strings.TrimPrefix(c.URL, "http")
	ctx := apitest.Context(t)
	if resp, body := refusedWebsocket(t, ws+"/api/v1/events", "a third websocket with --max-websockets 2"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "--max-websockets") {
		t.Fatalf("a websocket over the bound: %v %s", resp, body)
	}
	first.CloseNow()
	// The server lets the closed one go once its read ends: a new one is
	// taken within moments.
	deadline := time.Now().Add(apitest.Timeout)
	for {
		conn, _, err := websocket.Dial(ctx, ws+"/api/v1/events", nil)
		if err == nil {
			conn.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no websocket taken after one of the two was closed: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond): // the server's count is not observable otherwise
		}
	}
}

// One client holds at most a tenth of --max-websockets (at least 10):
// another client still gets one.
func TestWebsocketsPerClient(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.MaxWebsockets = 40 })
	c := b.client()
	for range 10 {
		c.Dial(t, "/api/v1/events")
	}
	ws := "ws" + strings.TrimPrefix(c.URL, "http") + "/api/v1/events"
	if resp, body := refusedWebsocket(t, ws, "an eleventh websocket of one client with --max-websockets 40"); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "this client (127.0.0.1) has 10 websockets open") {
		t.Fatalf("a client's websocket over its bound: %v %s", resp, body)
	}
	conn, _, err := websocket.Dial(apitest.Context(t), ws, &websocket.DialOptions{HTTPClient: fromOtherClient()})
	if err != nil {
		t.Fatalf("another client's websocket beside one client's 10: %v", err)
	}
	conn.CloseNow()
}

// refusedWebsocket dials url and returns the server's refusal, failing
// the test if the websocket (what) is taken.
func refusedWebsocket(t *testing.T, url, what string) (*http.Response, []byte) {
	t.Helper()
	conn, resp, err := websocket.Dial(apitest.Context(t), url, nil)
	if err == nil {
		conn.CloseNow()
		t.Fatalf("%s was taken", what)
	}
	if resp == nil {
		t.Fatalf("%s: no answer: %v", what, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// fromOtherClient is an HTTP client from 127.0.0.2, another client to a
// server on 127.0.0.1 (the loopback network is 127.0.0.0/8).
func fromOtherClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)},
	}).DialContext}}
}

func TestSubmitRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.SubmitRate, c.SubmitBurst = 0.01, 3 })
	for i := range 3 {
		if r := b.do(t, "POST", "/noop/1", ""); r.Status != 200 {
			t.Fatalf("submit %d within the burst: %d %s", i, r.Status, r.Body)
		}
	}
	r := b.do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":1}`)
	if r.Status != http.StatusTooManyRequests || !strings.Contains(string(r.Body), "too many submissions") {
		t.Fatalf("a submit over the rate: %d %s", r.Status, r.Body)
	}
	// Bad input is still told apart from a busy server.
	if r := b.do(t, "POST", "/noop/0", ""); r.Status != 400 {
		t.Fatalf("bad input when rate-limited: %d %s", r.Status, r.Body)
	}
}

// Behind a reverse proxy named by --trusted-proxy, each client its
// X-Forwarded-For names has its own submit rate; the header of a client
// that is no trusted proxy changes nothing.
func TestSubmitRateLimitPerClientBehindAProxy(t *testing.T) {
	t.Parallel()
	proxy := netip.MustParsePrefix("127.0.0.1/32")
	b := setup(t, func(c *app.Config) {
		c.SubmitRate, c.SubmitBurst, c.TrustedProxies = 0.01, 1, []netip.Prefix{proxy}
	})
	submit := func(via string) int {
		t.Helper()
		return b.do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":1}`, "X-Forwarded-For", via).Status
	}
	if got := submit("198.51.100.1"); got != http.StatusAccepted {
		t.Fatalf("the first client's first submit: %d", got)
	}
	if got := submit("198.51.100.1"); got != http.StatusTooManyRequests {
		t.Fatalf("the first client's second submit: %d, want 429", got)
	}
	if got := submit("198.51.100.2"); got != http.StatusAccepted {
		t.Fatalf("another client behind the proxy: %d, want its own burst", got)
	}
	// From 127.0.0.2, not trusted: its header is not believed, and it is
	// one client, whatever it claims.
	send := func(via string) int {
		req, _ := http.NewRequestWithContext(apitest.Context(t), "POST", b.srv.URL()+"/api/v1/jobs", strings.NewReader(`{"kind":"noop","partitions":1}`))
		req.Header.Set("X-Forwarded-For", via)
		resp, err := fromOtherClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send("198.51.100.3"); got != http.StatusAccepted {
		t.Fatalf("a client that is no proxy: %d", got)
	}
	if got := send("198.51.100.4"); got != http.StatusTooManyRequests {
		t.Fatalf("the same client naming another address: %d, want 429", got)
	}
}

// TestDatasetFileLimit: an upload beyond --max-file-mb is refused with 413,
// whether the client says its length or streams it, and leaves nothing.
func TestDatasetFileLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.MaxFileSize = 1000 })
	big := strings.Repeat("word ", 300)
	r := b.do(t, "PUT", "/api/v1/datasets/d/files/f", big)
	if r.Status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.Body), "1000 bytes") {
		t.Fatalf("sized upload over the limit: %d %s", r.Status, r.Body)
	}
	// Streamed without a length: refused once it passes the limit.
	req, _ := http.NewRequestWithContext(apitest.Context(t), "PUT", b.srv.URL()+"/api/v1/datasets/d/files/f", io.NopCloser(strings.NewReader(big)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "--max-file") {
		t.Fatalf("streamed upload over the limit: %d %s", resp.StatusCode, body)
	}
	if r := b.do(t, "GET", "/api/v1/datasets/d", ""); r.Status != http.StatusNotFound {
		t.Fatalf("a refused upload left a dataset: %d %s", r.Status, r.Body)
	}
	b.client().PutFile(t, "d", "f", []byte("small enough"))
}

// An upload whose client stops sending is refused once it has sent nothing
// for the upload's stall time (a minute by default): it held a 4 MiB
// buffer, and one of the uploads read at once, for good (300 stalled
// uploads held 930 MB of a server). The upload stores nothing, and the
// next upload is taken.
func TestStalledUploadIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.UploadStall = 300 * time.Millisecond })
	c := b.client()
	resp, body, err := partialUpload(t, c.URL, "stalled", 1000000, "the first words and then nothing", false)
	if err != nil {
		t.Fatalf("no answer to a stalled upload: %v", err)
	}
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "the client sent nothing for 300ms") {
		t.Fatalf("a stalled upload: %d %s", resp.StatusCode, body)
	}
	if r := b.do(t, "GET", "/api/v1/datasets/stalled", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the stalled upload's dataset: %d %s", r.Status, r.Body)
	}
	c.PutFile(t, "next", "b.txt", []byte("a whole file\n"))
}

// An upload whose connection ends before its Content-Length stores
// nothing: the body's io.ErrUnexpectedEOF read as the end of a short last
// block, which could store the file cut short.
func TestUploadCutShortStoresNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client()
	resp, body, err := partialUpload(t, c.URL, "cut", 1000000, "the first line\nand half of the second", true)
	if err == nil {
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "ended before") {
			t.Fatalf("an upload cut short: %d %s", resp.StatusCode, body)
		}
	}
	if r := b.do(t, "GET", "/api/v1/datasets/cut", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the dataset of an upload cut short: %d %s", r.Status, r.Body)
	}
}

// partialUpload sends an upload of file a.txt into dataset ds that says it
// is length bytes long and sends only text, then (cut) half-closes the
// connection, and reads the server's answer.
func partialUpload(t *testing.T, url, ds string, length int, text string, cut bool) (*http.Response, []byte, error) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "PUT /api/v1/datasets/%s/files/a.txt HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", ds, length, text)
	if cut {
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(apitest.Timeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body, nil
}

// One client's stalled uploads hold at most httpapi.MaxUploadsPerClient of
// the uploads read at once: another client's upload goes in at once.
// Before, 16 stalled uploads held every one, and the other client's waited
// for their stall's bound (a minute) to end them.
func TestStalledUploadsOfOneClientLeaveRoomForOthers(t *testing.T) {
	t.Parallel()
	b := setup(t) // uploads stall for a minute before they are refused
	c := b.client()
	for i := range dataset.MaxUploads + 4 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "PUT /api/v1/datasets/stalled%d/files/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nthe first words and then nothing", i)
	}
	// The server has taken them in: MaxUploadsPerClient read, the others
	// waiting unread.
	eventually(t, apitest.Timeout, "the stalled uploads taken in", func() bool {
		m := b.scrape(t)
		return m[`mrcluster_uploads{state="reading"}`] == httpapi.MaxUploadsPerClient && m[`mrcluster_uploads{state="waiting"}`] == dataset.MaxUploads
	})
	other := fromOtherClient()
	req, err := http.NewRequest("PUT", c.URL+"/api/v1/datasets/other/files/b.txt", strings.NewReader("a whole file\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := other.Do(req)
	if err != nil {
		t.Fatalf("another client's upload beside one client's %d stalled ones: %v", dataset.MaxUploads+4, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("another client's upload: %d %s", resp.StatusCode, body)
	}
}
