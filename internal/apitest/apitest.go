// Package apitest is a test client of a running mrcluster server's HTTP
// API, shared by the in-process and the built-binary tests.
package apitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/view"
)

// Timeout bounds every wait of a test on the server.
const Timeout = 90 * time.Second

// Client calls one server.
type Client struct {
	URL string
}

// Context returns a context that ends with the test or after Timeout.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Response is an answer read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request; headers are name, value pairs.
func (c Client) Do(t testing.TB, method, path, body string, headers ...string) Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(Context(t), method, c.URL+path, rd)
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
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// API returns the public Go client of the server, as a program would use it.
func (c Client) API() *client.Client {
	return &client.Client{URL: c.URL, Timeout: Timeout, SubmitRetries: -1}
}

// Submit submits a job through /api/v1/jobs and fails the test unless it
// is accepted.
func (c Client) Submit(t testing.TB, kind string, n int) client.Job {
	t.Helper()
	j, err := c.API().Submit(Context(t), client.Spec{Kind: kind, Partitions: n})
	if err != nil {
		t.Fatalf("submit %s/%d: %v", kind, n, err)
	}
	return j
}

// Job reads a job.
func (c Client) Job(t testing.TB, id string) client.Job {
	t.Helper()
	j, err := c.API().Job(Context(t), id)
	if err != nil {
		t.Fatalf("get job %s: %v", id, err)
	}
	return j
}

// Dial opens a websocket, closed when the test ends.
func (c Client) Dial(t testing.TB, path string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.Dial(Context(t), "ws"+strings.TrimPrefix(c.URL, "http")+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	conn.SetReadLimit(16 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// Await returns the job once cond holds for it. It re-reads the job each
// time the server sends an event (at least every few seconds): no polling
// interval, no sleep.
func (c Client) Await(t testing.TB, id string, cond func(client.Job) bool) client.Job {
	t.Helper()
	return c.AwaitWithin(t, Timeout, id, cond)
}

// AwaitWithin is Await with a deadline of its own, for a job that takes
// long by design.
func (c Client) AwaitWithin(t testing.TB, d time.Duration, id string, cond func(client.Job) bool) client.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn := c.Dial(t, "/api/v1/events")
	defer conn.CloseNow()
	wait := 50 * time.Millisecond
	for {
		j, err := c.API().Job(ctx, id)
		if tryAgain(ctx, err, &wait) {
			continue
		}
		switch {
		case err != nil:
			t.Fatalf("get job %s: %v", id, err)
		case cond(j):
			return j
		}
		if _, _, err := conn.Read(ctx); err != nil {
			t.Fatalf("waiting for job %s (last seen %s, %+v): %v", id, j.State, j.Tasks, err)
		}
	}
}

// tryAgain reports whether err is a 503, a server saying to try again
// shortly (catching up after a pause, in an election, longer than the
// client's own tries), after waiting *wait (doubled, up to a second): a
// test's client does as told, within the test's time. It reports false
// for any other answer, and once ctx has ended.
func tryAgain(ctx context.Context, err error, wait *time.Duration) bool {
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*wait):
	}
	*wait = min(2**wait, time.Second)
	return true
}

// ReadJSON reads one websocket message into v.
func ReadJSON(t testing.TB, conn *websocket.Conn, v any) {
	t.Helper()
	_, data, err := conn.Read(Context(t))
	if err != nil {
		t.Fatalf("read websocket: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode websocket message %s: %v", data, err)
	}
}

// Compact returns data as compact JSON.
func Compact(t testing.TB, data []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		t.Fatalf("compact %s: %v", data, err)
	}
	return buf.String()
}

// Values returns n copies of v.
func Values(n int, v int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// Describe is a short line about a job for failure messages.
func Describe(j client.Job) string {
	return fmt.Sprintf("%s %s tasks=%+v err=%q", j.ID, j.State, j.Tasks, j.Error)
}

// AwaitIdleWorkers waits on the /status websocket until n workers are
// known and none is busy: worker statuses trail job results a little.
func (c Client) AwaitIdleWorkers(t testing.TB, n int) {
	t.Helper()
	conn := c.Dial(t, "/status")
	defer conn.CloseNow()
	for {
		var ws []view.SeedWorker
		ReadJSON(t, conn, &ws)
		idle := 0
		for _, w := range ws {
			if !w.Busy && w.JobId == "" {
				idle++
			}
		}
		if len(ws) == n && idle == n {
			return
		}
	}
}

// Get fetches a URL with the test timeout.
func Get(url string) (*http.Response, error) {
	c := &http.Client{Timeout: Timeout}
	return c.Get(url)
}

// PutFile uploads data as file of dataset ds and fails the test unless it
// is stored.
func (c Client) PutFile(t testing.TB, ds, file string, data []byte) {
	t.Helper()
	if err := c.Upload(Context(t), ds, file, data); err != nil {
		t.Fatalf("put %s/%s: %v", ds, file, err)
	}
}

// Upload uploads data as file of dataset ds, sending it again while the
// server answers 503 (its write probe timed out on a loaded machine, a
// store electing a leader), as a client should: the same file sent again
// replaces it. For goroutines, which may not fail a test.
func (c Client) Upload(ctx context.Context, ds, file string, data []byte) error {
	wait := 50 * time.Millisecond
	for {
		_, err := c.API().PutFile(ctx, ds, file, bytes.NewReader(data), int64(len(data)))
		if !tryAgain(ctx, err, &wait) {
			return err
		}
	}
}

// SubmitSpec submits a job spec and fails the test unless it is accepted.
func (c Client) SubmitSpec(t testing.TB, spec client.Spec) client.Job {
	t.Helper()
	ctx := Context(t)
	// One key for every try: a submit answered 503 after its job was
	// stored is answered that job, not a second one.
	key := "apitest-" + rand.Text()
	wait := 50 * time.Millisecond
	for {
		j, err := c.API().SubmitWithKey(ctx, spec, key)
		if tryAgain(ctx, err, &wait) {
			continue
		}
		if err != nil {
			t.Fatalf("submit %+v: %v", spec, err)
		}
		return j
	}
}

// Output reads the output of a succeeded job.
func (c Client) Output(t testing.TB, id string) string {
	t.Helper()
	var out strings.Builder
	if err := c.API().Output(Context(t), id, &out); err != nil {
		t.Fatalf("output of %s: %v", id, err)
	}
	return out.String()
}

// AwaitSchedule returns schedule name once cond holds for it, re-reading
// it at each event the server sends (each job it creates sends some).
func (c Client) AwaitSchedule(t testing.TB, name string, cond func(client.Schedule) bool) client.Schedule {
	t.Helper()
	ctx := Context(t)
	conn := c.Dial(t, "/api/v1/events")
	defer conn.CloseNow()
	for {
		s, err := c.API().Schedule(ctx, name)
		if err != nil {
			t.Fatalf("read schedule %s: %v", name, err)
		}
		if cond(s) {
			return s
		}
		if _, _, err := conn.Read(ctx); err != nil {
			t.Fatalf("waiting for schedule %s (last seen %+v): %v", name, s, err)
		}
	}
}

// Recv waits up to Timeout for a value from ch, and fails the test naming
// what it waited for when none comes: a wait without a bound would end only
// at the package's timeout, whose goroutine dump names no test.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("waited %v for %s", Timeout, what)
		var zero T
		return zero
	}
}

// Within runs fn and waits up to d for it to return. When it does not, the
// test fails with the stack of fn's goroutine (where it is stuck), and fn
// is left running: a stop that hangs is a defect to see, not to wait out
// until the package's timeout.
func Within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Errorf("%s did not end within %v; where it is:\n%s", what, d, stackOf("apitest.Within"))
	}
}

// stackOf returns the stacks of the goroutines whose stack names fn.
func stackOf(fn string) string {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) && !strings.Contains(g, "apitest.stackOf") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
