// Package client is the Go client of a mrcluster server's HTTP API
// (/api/v1): submit and follow jobs, read their output and task history,
// manage datasets, list kinds, workers and the queue, and follow the
// cluster's events. It imports nothing of the server: a program that only
// talks to a cluster links no NATS.
//
//	c := client.New("http://127.0.0.1:8080", "")
//	j, err := c.Submit(ctx, client.Spec{Kind: "wordcount", Partitions: 8, Input: []string{"books"}})
//	...
//	j, err = c.Wait(ctx, j.ID, nil)
//	err = c.Output(ctx, j.ID, os.Stdout)
//
// Every call takes a context; a call without a deadline of its own is
// bounded by the client's Timeout (30 s), except Output and PutFile, which
// stream and are bounded by their context only.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Client calls one server. Its fields may be set before the first call.
type Client struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// Token is the server's auth token, sent as a bearer token ("" for none).
	Token string
	// Timeout bounds each call that does not stream (30 s when zero).
	Timeout time.Duration
	// SubmitRetries is how often Submit sends a submit again while the
	// server answers 503 or cannot be reached (4 when zero; -1 for never).
	SubmitRetries int
	// Retries is how often a read, or a change that is the same sent twice
	// (a kind's pause, resume or limits, a schedule's pause or resume), is
	// sent again while the server answers 503 (its store electing a
	// leader, catching up after a pause), backing off from half a second
	// (4 when zero; -1 for never). A server that cannot be reached is said
	// at once. Other changes (cancel, delete, retry, rerun) are sent once:
	// sent again after an answer that was lost, they would be refused as
	// done already.
	Retries int
	// HTTP is the client requests go through (when nil, one shared by every
	// Client, which keeps up to 256 idle connections per server).
	HTTP *http.Client
	// WaitingOut, when set, is called by Wait and WaitAll each time they
	// meet a server that cannot be reached or answers 503 and wait it out
	// (a restart), with what they met: a command line says so.
	WaitingOut func(err error)
}

// New returns a client of the server at baseURL.
func New(baseURL, token string) *Client {
	return &Client{URL: strings.TrimRight(baseURL, "/"), Token: token}
}

// Error is an error answer of the server.
type Error struct {
	// Status is the HTTP status; Code the server's error code ("invalid",
	// "not_found", "conflict", "unavailable", …); Message what it said.
	Status  int
	Code    string
	Message string
	Method  string
	Path    string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, http.StatusText(e.Status))
}

// UnreachableError is a request that got no answer: the server is down,
// or the address is wrong.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the server at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// UnansweredError is the error of a submit that got no answer but
// "unavailable" (503, or no connection) after all its tries: the server
// may have stored its jobs before it stopped answering. Sending the same
// request again under Key (SubmitWithKey, SubmitBatchWithKey) within a day
// is answered those jobs if it did, and submits them if it did not.
type UnansweredError struct {
	Key string
	Err error
}

func (e *UnansweredError) Error() string { return e.Err.Error() }

func (e *UnansweredError) Unwrap() error { return e.Err }

// unanswered is err, the last of a submit under key, as an
// UnansweredError when it has a key.
func unanswered(key string, err error) error {
	if key == "" {
		return err
	}
	return &UnansweredError{Key: key, Err: err}
}

// IsUnavailable reports whether err is worth trying again later: the
// server said so (503) or could not be reached.
func IsUnavailable(err error) bool {
	var e *Error
	var u *UnreachableError
	return errors.As(err, &u) || errors.As(err, &e) && e.Status == http.StatusServiceUnavailable
}

// IsBusy reports whether err is a 429 answer: the cluster has no room for
// the submit now (its queue or its unfinished jobs at their bounds), or this
// client is over its rate. Nothing was stored: send the same request again
// a little later (the answer's Retry-After says 5 s; a cluster at its bound
// makes room as fast as it finishes jobs).
func IsBusy(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusTooManyRequests
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// defaultHTTP is the HTTP client of every Client without one of its own:
// Go's default transport keeps 2 idle connections per host, so a program
// submitting from more goroutines than that opened and closed a connection
// for most requests (a connection set up and torn down on both sides, and
// thousands of sockets in TIME_WAIT at a few thousand submits a second).
var defaultHTTP = HTTPWithRoots(nil)

// HTTPWithRoots returns an HTTP client for Client.HTTP that verifies an
// https server's certificate against roots (a private CA's: serve's
// --tls-cert signed by it), or against the system's when roots is nil; it
// keeps idle connections as the default one does.
func HTTPWithRoots(roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 256, 256
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t}
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 30 * time.Second
}

// Submit submits a job and returns it as stored. It sends an idempotency
// key of its own, and sends the submit again under the same key while the
// server is unavailable: a retry of a submit that was stored after all
// returns that job, not a second one. When no try got an answer, the
// error is an *UnansweredError holding that key.
func (c *Client) Submit(ctx context.Context, spec Spec) (Job, error) {
	return c.SubmitWithKey(ctx, spec, newKey())
}

// SubmitWithKey is Submit with the caller's idempotency key: a second
// submit with the same key within a day returns the first one's job.
func (c *Client) SubmitWithKey(ctx context.Context, spec Spec, key string) (Job, error) {
	var j Job
	err := c.post(ctx, "/api/v1/jobs", key, spec, &j)
	return j, err
}

// SubmitBatch submits up to 1,000 jobs at once, all or none: a bad spec is
// refused naming its index, and nothing is stored. Like Submit, it sends an
// idempotency key of its own and sends the batch again under it while the
// server is unavailable. The jobs come back in the order of specs.
func (c *Client) SubmitBatch(ctx context.Context, specs []Spec) ([]Job, error) {
	return c.SubmitBatchWithKey(ctx, specs, newKey())
}

// SubmitBatchWithKey is SubmitBatch with the caller's idempotency key: a
// second batch with the same key and the same specs within a day returns
// the first one's jobs, and submits nothing.
func (c *Client) SubmitBatchWithKey(ctx context.Context, specs []Spec, key string) ([]Job, error) {
	var out struct {
		Jobs []Job `json:"jobs"`
	}
	err := c.post(ctx, "/api/v1/jobs/batch", key, struct {
		Jobs []Spec `json:"jobs"`
	}{specs}, &out)
	return out.Jobs, err
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// post sends a submit under idempotency key (none when empty), and sends
// it again under the same key while the server is unavailable, up to
// SubmitRetries times, backing off.
func (c *Client) post(ctx context.Context, path, key string, body, out any) error {
	h := http.Header{}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	err := again(ctx, c.SubmitRetries, IsUnavailable, func() error { return c.call(ctx, http.MethodPost, path, h, body, out) })
	if err != nil && IsUnavailable(err) {
		return unanswered(key, err)
	}
	return err
}

// callAgain is call, sent again while the server is unavailable, up to
// Retries times: for reads and changes that are the same sent twice.
func (c *Client) callAgain(ctx context.Context, method, path string, body, out any) error {
	return again(ctx, c.Retries, isUnavailableAnswer, func() error { return c.call(ctx, method, path, nil, body, out) })
}

// Again calls send, and calls it again while it answers 503, up to
// retries times (4 when zero; -1 for never), backing off from half a
// second: for a request that is the same sent twice, made by the caller
// (an upload from a file, opened again each time).
func Again(ctx context.Context, retries int, send func() error) error {
	return again(ctx, retries, isUnavailableAnswer, send)
}

// isUnavailableAnswer reports whether err is a 503 answer.
func isUnavailableAnswer(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusServiceUnavailable
}

// again calls send until it succeeds, fails with an error that passing
// does not accept, or has been tried again retries times (4 when 0, none
// when negative), waiting half a second and doubling, up to 8 s, while
// ctx lets it.
func again(ctx context.Context, retries int, passing func(error) bool, send func() error) error {
	if retries == 0 {
		retries = 4
	}
	wait := 500 * time.Millisecond
	for try := 0; ; try++ {
		err := send()
		if err == nil || !passing(err) || try >= retries || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 8*time.Second)
	}
}

// Job returns a job.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

// MaxJobsByID is how many ids one JobsByID may name.
const MaxJobsByID = 500

// JobsByID reads the jobs named by ids (at most MaxJobsByID) with one
// request: their resources in the order of ids, each once, and in
// NotFound the ids of jobs the server does not have (never submitted, or
// deleted).
func (c *Client) JobsByID(ctx context.Context, ids []string) (JobList, error) {
	q := url.Values{"id": ids}
	var l JobList
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/jobs?"+q.Encode(), nil, &l)
	return l, err
}

// ListOptions selects a page of jobs.
type ListOptions struct {
	// State, when set, selects jobs in that state.
	State State
	// Kind, when set, selects jobs of that kind.
	Kind string
	// Limit is the page size (the server's default when zero).
	Limit int
	// Cursor is a previous page's NextCursor.
	Cursor string
}

// Jobs returns a page of jobs, newest first.
func (c *Client) Jobs(ctx context.Context, o ListOptions) (JobList, error) {
	q := url.Values{}
	if o.State != "" {
		q.Set("state", string(o.State))
	}
	if o.Kind != "" {
		q.Set("kind", o.Kind)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	path := "/api/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l JobList
	err := c.callAgain(ctx, http.MethodGet, path, nil, &l)
	return l, err
}

// CancelJobs cancels the unfinished jobs of kind, in state, or both (one
// at least), oldest first, up to 1,000 a call: call it again while More is
// set.
func (c *Client) CancelJobs(ctx context.Context, kind string, state State) (CanceledJobs, error) {
	var out CanceledJobs
	body := map[string]string{}
	if kind != "" {
		body["kind"] = kind
	}
	if state != "" {
		body["state"] = string(state)
	}
	err := c.callAgain(ctx, http.MethodPost, "/api/v1/jobs/cancel", body, &out)
	return out, err
}

// Cancel cancels a job that has not finished.
func (c *Client) Cancel(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.call(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, nil, &j)
	return j, err
}

// Delete deletes a finished job and everything it stored: its record, task
// history and output. An unfinished job is a conflict (409): cancel it
// first.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/jobs/"+url.PathEscape(id), nil, nil, nil)
}

// Tasks returns every finished attempt of a job's tasks, by partition then
// attempt.
func (c *Client) Tasks(ctx context.Context, id string) ([]TaskAttempt, error) {
	var out struct {
		Tasks []TaskAttempt `json:"tasks"`
	}
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id)+"/tasks", nil, &out)
	return out.Tasks, err
}

// Output writes the output of a succeeded job to w.
func (c *Client) Output(ctx context.Context, id string, w io.Writer) error {
	return c.download(ctx, "/api/v1/jobs/"+url.PathEscape(id)+"/output", w, "the output of job "+id,
		"(its log names the object and why); try again, and if it ends the same way the stored output is damaged: run the job again (mrcluster rerun "+id+")")
}

// download writes the body of a GET of path, what it names, to w. A body
// cut short (a connection lost, a server restarted) is resumed where it
// ended, with a range request bound to the version first sent (its ETag),
// as long as each try gets further. The server also cuts a body short
// when it cannot read the rest from its store: the error then says how
// far it got and then advice.
func (c *Client) download(ctx context.Context, path string, w io.Writer, what, advice string) error {
	var sent int64
	var etag string
	for try := 0; ; try++ {
		h := http.Header{}
		if try > 0 {
			h.Set("Range", fmt.Sprintf("bytes=%d-", sent))
			h.Set("If-Range", etag)
		}
		resp, err := c.get(ctx, path, h)
		if err != nil {
			var answer *Error
			switch {
			case try > 0 && errors.As(err, &answer):
				return fmt.Errorf("%s ended after %d bytes; asked for the rest, the server answered: %w", what, sent, err)
			case try > 0:
				return fmt.Errorf("%s ended after %d bytes, and the rest could not be asked for: %w; try again", what, sent, err)
			}
			return err
		}
		if try == 0 {
			etag = resp.Header.Get("ETag")
		} else if start, ok := rangeStart(resp); !ok || start != sent {
			resp.Body.Close()
			return fmt.Errorf("%s ended after %d bytes, and the server sent another version of it since (or the whole of it again): download it again", what, sent)
		}
		body := &readErr{r: resp.Body}
		n, err := io.Copy(w, body)
		resp.Body.Close()
		sent += n
		switch {
		case err == nil:
			return nil
		case body.err == nil:
			return fmt.Errorf("write %s: %w", what, err) // w's error
		case ctx.Err() != nil || etag == "" || n == 0 || try >= maxResumes:
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%s ended after %d bytes: the server could not read the rest from its store %s: %w", what, sent, advice, err)
			}
			return fmt.Errorf("read %s (after %d bytes): %w", what, sent, err)
		}
		// Cut short after some progress: resumed from here.
	}
}

// maxResumes bounds the resumptions of one download.
const maxResumes = 16

// get sends a GET of path with headers h.
func (c *Client) get(ctx context.Context, path string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return c.do(req)
}

// rangeStart is the first byte of a 206 answer's Content-Range.
func rangeStart(resp *http.Response) (int64, bool) {
	if resp.StatusCode != http.StatusPartialContent {
		return 0, false
	}
	spec, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(spec, "-")
	n, err := strconv.ParseInt(first, 10, 64)
	return n, ok && err == nil
}

// readErr remembers its reader's error, to tell it from the writer's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// Wait follows a job until it is finished and returns it; progress, when
// set, sees every state of the job read on the way. It reads the job
// again at each event of the server, and at least every second; once the
// job was read, a server that cannot be reached or answers 503 (a
// restart) is waited out, until ctx ends.
func (c *Client) Wait(ctx context.Context, id string, progress func(Job)) (Job, error) {
	var events *Events
	if ev, err := c.Events(ctx); err == nil {
		events = ev
		defer events.Close()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	next := make(chan struct{}, 1)
	if events != nil {
		go func() {
			for {
				if _, err := events.Next(ctx); err != nil {
					return
				}
				select {
				case next <- struct{}{}:
				default:
				}
			}
		}()
	}
	for read := false; ; read = true {
		j, err := c.Job(ctx, id)
		switch {
		case IsUnavailable(err) && read && ctx.Err() == nil:
			// The server restarts, or its store elects a leader: the
			// job is read again at the next tick. (Not at the first
			// read: a wrong address is said at once.)
			if c.WaitingOut != nil {
				c.WaitingOut(err)
			}
		case err != nil:
			return j, err
		default:
			if progress != nil {
				progress(j)
			}
			if j.State.Terminal() {
				return j, nil
			}
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-next:
		case <-tick.C:
		}
	}
}

// WaitAll follows jobs until every one is finished and returns each one's
// finished resource, in the order of ids. finished, when set, sees each
// job as it is found finished (once per id). It is WaitEach keeping the
// resources: about a kilobyte a job.
func (c *Client) WaitAll(ctx context.Context, ids []string, finished func(Job)) ([]Job, error) {
	out := make([]Job, len(ids))
	places := make(map[string][]int, len(ids))
	for i, id := range ids {
		places[id] = append(places[id], i)
	}
	err := c.WaitEach(ctx, ids, func(j Job) {
		for _, i := range places[j.ID] {
			out[i] = j
		}
		if finished != nil {
			finished(j)
		}
	})
	return out, err
}

// WaitEach follows jobs until every one is finished, and calls finished
// with each one as it is found finished, once per id, one call at a time;
// it keeps nothing of them (a wait for a million jobs holds their ids). A
// job's end is learned from the server's events (job.succeeded,
// job.failed, job.canceled), so that thousands of jobs cost one
// connection, not a read each a second; each job is read once at the
// start (a hundred a request), again after the events were cut or the
// server said it dropped some (resync), and now and then besides (every
// 10 s, plus a millisecond per job still unfinished). After its first
// read of them, it rides out a server that cannot be reached or answers
// 503 for a while (a restart), until ctx ends. A job not found (a wrong
// id, or deleted before its end was seen) is an error naming it.
func (c *Client) WaitEach(ctx context.Context, ids []string, finished func(Job)) error {
	w := &waitAll{c: c, pending: make(map[string]struct{}, len(ids)), finished: finished, done: make(chan struct{})}
	for _, id := range ids {
		w.pending[id] = struct{}{}
	}
	if len(w.pending) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var following sync.WaitGroup
	defer following.Wait() // no call of finished after the return
	defer cancel()
	sweep := make(chan struct{}, 1)
	again := func() {
		select {
		case sweep <- struct{}{}:
		default:
		}
	}
	following.Go(func() { w.follow(ctx, again) })
	// The first read of the jobs once the events flow (or could not, for
	// a while): a job that ends between the two is seen either way.
	select {
	case <-sweep:
	case <-ctx.Done():
	case <-time.After(min(c.timeout(), 5*time.Second)):
	}
	for first := true; ; first = false {
		every := 10 * time.Second
		if err := w.sweep(ctx); IsUnavailable(err) && !first && ctx.Err() == nil {
			// The server restarts, or its store elects a leader: its
			// events come back with it, and the next sweep is soon.
			// (Not at the first sweep: a wrong address is said at once.)
			every = 2 * time.Second
			if c.WaitingOut != nil {
				c.WaitingOut(err)
			}
		} else if err != nil {
			return err
		}
		w.mu.Lock()
		left := len(w.pending)
		w.mu.Unlock()
		tick := time.NewTimer(every + time.Duration(left)*time.Millisecond)
		select {
		case <-w.done:
			tick.Stop()
			return nil
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-sweep:
		case <-tick.C:
		}
		tick.Stop()
	}
}

// waitAll is the state of a WaitEach: the jobs not yet seen finished,
// shared by the event follower and the sweeps.
type waitAll struct {
	c        *Client
	finished func(Job)
	done     chan struct{} // closed once nothing is pending

	mu      sync.Mutex
	pending map[string]struct{}
}

// end records j when it is finished and still pending.
func (w *waitAll) end(j Job) {
	if !j.State.Terminal() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[j.ID]; !ok {
		return
	}
	delete(w.pending, j.ID)
	if w.finished != nil {
		w.finished(j)
	}
	if len(w.pending) == 0 {
		close(w.done)
	}
}

// follow reads the server's events until ctx ends, connecting again (from
// 1 s, doubling up to 10 s) when they are cut; again asks for a sweep
// once each connection's first event (hello) came, and at each resync,
// since events may have been missed before.
func (w *waitAll) follow(ctx context.Context, again func()) {
	backoff := time.Second
	for first := true; ctx.Err() == nil; first = false {
		ev, err := w.c.Events(ctx)
		if err == nil {
			_, err = ev.Next(ctx)
			if err != nil {
				_ = ev.Close()
			}
		}
		if err != nil {
			if first {
				again() // the first sweep need not wait for the events
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = time.Second
		again()
		for {
			// The server sends its counts at least every 5 s: a
			// connection silent for 30 s is taken for dead (a server
			// gone without closing it) and made again.
			nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			e, err := ev.Next(nctx)
			cancel()
			if err != nil {
				break
			}
			switch e.Type {
			case "job.succeeded", "job.failed", "job.canceled":
				var j Job
				if json.Unmarshal(e.Data, &j) == nil {
					w.end(j)
				}
			case "resync":
				again()
			}
		}
		_ = ev.Close()
	}
}

// sweepChunk is how many jobs a sweep reads with one request.
const sweepChunk = 100

// sweep reads every pending job, a hundred a request and four requests at
// once, and records those finished.
func (w *waitAll) sweep(ctx context.Context) error {
	w.mu.Lock()
	ids := make([]string, 0, len(w.pending))
	for id := range w.pending {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	next := make(chan []string)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range min(4, (len(ids)+sweepChunk-1)/sweepChunk) {
		wg.Go(func() {
			for chunk := range next {
				if err := w.read(ctx, chunk); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for chunk := range slices.Chunk(ids, sweepChunk) {
		select {
		case next <- chunk:
		case err = <-errs:
			break feed
		case <-w.done:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// read reads the jobs ids with one request, and records those finished;
// a job not found that is still pending is an error naming it. A server
// that does not know reads by id (one older than the client: it answers
// a page of the newest jobs) has them read one by one.
func (w *waitAll) read(ctx context.Context, ids []string) error {
	l, err := w.c.JobsByID(ctx, ids)
	if err != nil {
		return err
	}
	asked := make(map[string]bool, len(ids))
	for _, id := range ids {
		asked[id] = true
	}
	answered := len(l.Jobs)+len(l.NotFound) == len(ids)
	for _, j := range l.Jobs {
		answered = answered && asked[j.ID]
	}
	if !answered {
		return w.readEach(ctx, ids)
	}
	for _, j := range l.Jobs {
		w.end(j)
	}
	for _, id := range l.NotFound {
		w.mu.Lock()
		_, still := w.pending[id]
		w.mu.Unlock()
		if still { // else it finished (an event said so) and was deleted since
			return fmt.Errorf("job %s: %w", id, &Error{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("job %q not found", id), Method: http.MethodGet, Path: "/api/v1/jobs"})
		}
	}
	return nil
}

// readEach reads the jobs ids one by one.
func (w *waitAll) readEach(ctx context.Context, ids []string) error {
	for _, id := range ids {
		j, err := w.c.Job(ctx, id)
		if err != nil {
			w.mu.Lock()
			_, still := w.pending[id]
			w.mu.Unlock()
			if still || !IsNotFound(err) {
				return fmt.Errorf("job %s: %w", id, err)
			}
			continue
		}
		w.end(j)
	}
	return nil
}

// Workers returns the status of every worker of the cluster.
func (c *Client) Workers(ctx context.Context) ([]Worker, error) {
	var out struct {
		Workers []Worker `json:"workers"`
	}
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/workers", nil, &out)
	return out.Workers, err
}

// Queue returns the number of tasks waiting for a worker and the 1,000
// oldest jobs they belong to.
func (c *Client) Queue(ctx context.Context) (Queue, error) {
	var q Queue
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/queue", nil, &q)
	return q, err
}

// Rerun submits a copy of finished job id's spec as a new job, whose
// RerunOf names id.
func (c *Client) Rerun(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.call(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/rerun", nil, nil, &j)
	return j, err
}

// Retry runs the unfinished tasks of a failed or canceled job again, in
// the same job (all of a data job's); the job's "retries" counts them.
func (c *Client) Retry(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.call(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/retry", nil, nil, &j)
	return j, err
}

// History returns what the cluster did per minute over the last hour.
func (c *Client) History(ctx context.Context) (History, error) {
	var h History
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/history", nil, &h)
	return h, err
}

// Kinds returns the kinds of job the cluster runs.
func (c *Client) Kinds(ctx context.Context) ([]Kind, error) {
	var out struct {
		Kinds []Kind `json:"kinds"`
	}
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/kinds", nil, &out)
	return out.Kinds, err
}

// PutKind uploads a WebAssembly module (size bytes read from r; -1 when
// unknown) as the next version of kind name; description, when set,
// replaces the module's own.
func (c *Client) PutKind(ctx context.Context, name, description string, r io.Reader, size int64) (Kind, error) {
	var k Kind
	path := "/api/v1/kinds/" + url.PathEscape(name)
	if description != "" {
		path += "?description=" + url.QueryEscape(description)
	}
	resp, err := c.stream(ctx, http.MethodPut, path, r, size)
	if err != nil {
		return k, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil {
		return k, fmt.Errorf("read the answer to the upload of kind %s: %w", name, err)
	}
	return k, nil
}

// DeleteKind deletes an uploaded kind that no unfinished job uses.
func (c *Client) DeleteKind(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/kinds/"+url.PathEscape(name), nil, nil, nil)
}

// AddSchedule stores a cron schedule.
func (c *Client) AddSchedule(ctx context.Context, s NewSchedule) (Schedule, error) {
	var out Schedule
	err := c.call(ctx, http.MethodPost, "/api/v1/schedules", nil, s, &out)
	return out, err
}

// Schedules returns every schedule, by name.
func (c *Client) Schedules(ctx context.Context) ([]Schedule, error) {
	var out struct {
		Schedules []Schedule `json:"schedules"`
	}
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/schedules", nil, &out)
	return out.Schedules, err
}

// Schedule returns schedule name.
func (c *Client) Schedule(ctx context.Context, name string) (Schedule, error) {
	var out Schedule
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/schedules/"+url.PathEscape(name), nil, &out)
	return out, err
}

// PauseSchedule stops schedule name from firing; ResumeSchedule starts it
// again from its next tick (the ticks in between are not fired).
func (c *Client) PauseSchedule(ctx context.Context, name string) (Schedule, error) {
	var out Schedule
	err := c.callAgain(ctx, http.MethodPost, "/api/v1/schedules/"+url.PathEscape(name)+"/pause", nil, &out)
	return out, err
}

// ResumeSchedule: see PauseSchedule.
func (c *Client) ResumeSchedule(ctx context.Context, name string) (Schedule, error) {
	var out Schedule
	err := c.callAgain(ctx, http.MethodPost, "/api/v1/schedules/"+url.PathEscape(name)+"/resume", nil, &out)
	return out, err
}

// DeleteSchedule deletes schedule name; the jobs it created stay.
func (c *Client) DeleteSchedule(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/schedules/"+url.PathEscape(name), nil, nil, nil)
}

// PauseKind pauses kind name in the whole cluster: its jobs' waiting
// tasks leave the queue and none starts (running ones finish) until
// ResumeKind.
func (c *Client) PauseKind(ctx context.Context, name string) (Kind, error) {
	var k Kind
	err := c.callAgain(ctx, http.MethodPost, "/api/v1/kinds/"+url.PathEscape(name)+"/pause", nil, &k)
	return k, err
}

// SetKindLimits bounds kind name's tasks running at once in the cluster.
func (c *Client) SetKindLimits(ctx context.Context, name string, l KindLimits) (Kind, error) {
	var k Kind
	err := c.callAgain(ctx, http.MethodPut, "/api/v1/kinds/"+url.PathEscape(name)+"/limits", l, &k)
	return k, err
}

// ResumeKind resumes kind name: its jobs' waiting tasks are queued again.
func (c *Client) ResumeKind(ctx context.Context, name string) (Kind, error) {
	var k Kind
	err := c.callAgain(ctx, http.MethodPost, "/api/v1/kinds/"+url.PathEscape(name)+"/resume", nil, &k)
	return k, err
}

// Datasets returns every dataset.
func (c *Client) Datasets(ctx context.Context) ([]Dataset, error) {
	var out struct {
		Datasets []Dataset `json:"datasets"`
	}
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/datasets", nil, &out)
	return out.Datasets, err
}

// Dataset returns one dataset.
func (c *Client) Dataset(ctx context.Context, name string) (Dataset, error) {
	var d Dataset
	err := c.callAgain(ctx, http.MethodGet, "/api/v1/datasets/"+url.PathEscape(name), nil, &d)
	return d, err
}

// PutFile stores size bytes read from r as file of dataset ds, replacing a
// file of that name; size -1 means unknown. The dataset is made on its
// first file. When r is an io.Seeker that is not an io.Closer (a
// bytes.Reader, a strings.Reader: the transport closes a body that is
// one, a file), the upload is sent again from where r was while the
// server answers 503 (its store electing a leader, or refusing writes for
// a moment), up to Retries times: the same file stored twice is stored
// once.
func (c *Client) PutFile(ctx context.Context, ds, file string, r io.Reader, size int64) (Dataset, error) {
	var d Dataset
	path := "/api/v1/datasets/" + url.PathEscape(ds) + "/files/" + url.PathEscape(file)
	var resp *http.Response
	send := func() (err error) {
		resp, err = c.stream(ctx, http.MethodPut, path, r, size)
		return err
	}
	var err error
	_, closer := r.(io.Closer)
	if sk, ok := r.(io.Seeker); ok && !closer {
		start, serr := sk.Seek(0, io.SeekCurrent)
		if serr != nil {
			return d, fmt.Errorf("upload %s/%s: %w", ds, file, serr)
		}
		tries := 0
		err = again(ctx, c.Retries, isUnavailableAnswer, func() error {
			if tries++; tries > 1 {
				if _, err := sk.Seek(start, io.SeekStart); err != nil {
					return fmt.Errorf("upload %s/%s again: %w", ds, file, err)
				}
			}
			return send()
		})
	} else {
		err = send()
	}
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("read the answer to the upload of %s/%s: %w", ds, file, err)
	}
	return d, nil
}

// PutFileFromJob stores the output of succeeded job id as file of dataset
// ds (made if new; a file of that name is replaced), on the server, and
// returns the dataset: the next job's input. Sent once: a server that goes
// away meanwhile may have stored it (send it again: the same file is
// replaced).
func (c *Client) PutFileFromJob(ctx context.Context, ds, file, id string) (Dataset, error) {
	var d Dataset
	resp, err := c.stream(ctx, http.MethodPut, "/api/v1/datasets/"+url.PathEscape(ds)+"/files/"+url.PathEscape(file)+"?from_job="+url.QueryEscape(id), nil, 0)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("read the answer to the store of job %s's output as %s/%s: %w", id, ds, file, err)
	}
	return d, nil
}

// DeleteDataset deletes a dataset that no unfinished job reads.
func (c *Client) DeleteDataset(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/datasets/"+url.PathEscape(name), nil, nil, nil)
}

// GetFile writes file of dataset ds, as it was uploaded, to w.
func (c *Client) GetFile(ctx context.Context, ds, file string, w io.Writer) error {
	return c.download(ctx, "/api/v1/datasets/"+url.PathEscape(ds)+"/files/"+url.PathEscape(file), w, "file "+file+" of dataset "+ds,
		"(its log names the block and why); try again, and if it ends the same way the stored file is damaged: upload it again")
}

// DeleteFile deletes file of dataset ds; the dataset keeps its other
// files.
func (c *Client) DeleteFile(ctx context.Context, ds, file string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/datasets/"+url.PathEscape(ds)+"/files/"+url.PathEscape(file), nil, nil, nil)
}

// Events follows the cluster's events (GET /api/v1/events) until ctx ends
// or Close.
type Events struct {
	conn *websocket.Conn
}

// Events opens the event stream. Its first event is "hello", with the
// cluster's counts.
func (c *Client) Events(ctx context.Context) (*Events, error) {
	u := "ws" + strings.TrimPrefix(c.URL, "http") + "/api/v1/events"
	opts := &websocket.DialOptions{HTTPClient: c.httpClient(), HTTPHeader: http.Header{}}
	if c.Token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+c.Token)
	}
	dctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, u, opts)
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 {
			return nil, &Error{Status: resp.StatusCode, Method: http.MethodGet, Path: "/api/v1/events"}
		}
		if certificateError(err) {
			return nil, &CertificateError{URL: c.URL, Err: err}
		}
		return nil, &UnreachableError{URL: c.URL, Err: err}
	}
	conn.SetReadLimit(16 << 20)
	return &Events{conn: conn}, nil
}

// Next returns the next event.
func (e *Events) Next(ctx context.Context) (Event, error) {
	var ev Event
	_, data, err := e.conn.Read(ctx)
	if err != nil {
		return ev, err
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("decode event %.100s: %w", data, err)
	}
	return ev, nil
}

// Close ends the stream.
func (e *Events) Close() error { return e.conn.CloseNow() }

// call sends a JSON request within the client's timeout and decodes a JSON
// answer into out (when set).
func (c *Client) call(ctx context.Context, method, path string, header http.Header, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode the request of %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// stream sends a request bounded by ctx only, for bodies of any size.
func (c *Client) stream(ctx context.Context, method, path string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	return c.do(req)
}

// do sends req with the token; an error answer becomes an *Error.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
		}
		if certificateError(err) {
			return nil, &CertificateError{URL: c.URL, Err: err}
		}
		return nil, &UnreachableError{URL: c.URL, Err: err}
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	if resp.StatusCode == http.StatusBadRequest && e.Error.Message == "" && bytes.HasPrefix(data, []byte("Client sent an HTTP request to an HTTPS server")) {
		// Go's HTTPS server's answer to plain HTTP, before any handler.
		e.Error.Message = "the server speaks HTTPS: use https:// in its URL, " + strings.Replace(c.URL, "http://", "https://", 1)
	}
	return nil, &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, Method: req.Method, Path: req.URL.Path}
}

// CertificateError is a request that was not sent because the server's
// TLS certificate could not be verified (signed by a CA this client does
// not trust, for another name, expired): nothing reached the server, and
// sending it again fails the same way. Trust the CA (HTTPWithRoots), or
// use the name the certificate is for.
type CertificateError struct {
	URL string
	Err error
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("the TLS certificate of the server at %s does not verify: %v", e.URL, e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// certificateError reports whether err is a failed check of a server's
// certificate.
func certificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}
