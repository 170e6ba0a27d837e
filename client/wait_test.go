package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/client"
)

// scripted is a server whose jobs' states and events a test sets: GET
// /api/v1/jobs/{id} answers a job's state (503 while unavailable), and
// /api/v1/events sends hello, then what the test sends.
type scripted struct {
	mu          sync.Mutex
	state       map[string]client.State
	unavailable bool
	noReadsByID bool // answer GET /api/v1/jobs?id=… as an older server
	reads       map[string]int
	listed      int                  // GET /api/v1/jobs answered
	streams     map[chan string]bool // each open event stream's
}

func newScripted(t *testing.T, states map[string]client.State) (*scripted, *client.Client) {
	s := &scripted{state: states, reads: map[string]int{}, streams: map[chan string]bool{}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, &client.Client{URL: srv.URL, Timeout: 5 * time.Second, Retries: -1}
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/v1/events" {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		// A hijacked connection's request context does not end with it:
		// CloseRead's does (the client went).
		ctx := c.CloseRead(r.Context())
		events := make(chan string, 16)
		s.mu.Lock()
		s.streams[events] = true
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.streams, events)
			s.mu.Unlock()
		}()
		if c.Write(ctx, websocket.MessageText, []byte(`{"type":"hello","time":"2026-12-05T00:00:00Z"}`)) != nil {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-events:
				if c.Write(ctx, websocket.MessageText, []byte(e)) != nil {
					return
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/api/v1/jobs" {
		s.list(w, r)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/api/v1/jobs/")
	s.reads[id]++
	state, ok := s.state[id]
	switch {
	case s.unavailable:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"code":"unavailable","message":"the job store is not answering; try again shortly"}}`)
	case !ok:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"code":"not_found","message":"job %s not found"}}`, id)
	default:
		_ = json.NewEncoder(w).Encode(client.Job{ID: id, Kind: "noop", State: state})
	}
}

// list answers GET /api/v1/jobs?id=…, or, as a server that does not know
// reads by id, a page of every job.
func (s *scripted) list(w http.ResponseWriter, r *http.Request) {
	if s.unavailable {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"code":"unavailable","message":"the job store is not answering; try again shortly"}}`)
		return
	}
	s.listed++
	var l client.JobList
	if s.noReadsByID {
		for id, state := range s.state {
			l.Jobs = append(l.Jobs, client.Job{ID: id, Kind: "noop", State: state})
		}
	} else {
		for _, id := range r.URL.Query()["id"] {
			s.reads[id]++
			if state, ok := s.state[id]; ok {
				l.Jobs = append(l.Jobs, client.Job{ID: id, Kind: "noop", State: state})
			} else {
				l.NotFound = append(l.NotFound, id)
			}
		}
	}
	_ = json.NewEncoder(w).Encode(l)
}

// send sends a raw event on every open event stream.
func (s *scripted) send(e string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for events := range s.streams {
		events <- e
	}
}

func (s *scripted) set(id string, state client.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[id] = state
}

func (s *scripted) readsOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[id]
}

// await waits for cond, checked every 10 ms, for up to 5 s.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// WaitAll learns most ends from the events; a job that ended without one
// (the events were dropped: resync) is read again at the resync, long
// before the sweep every 10 s; each id's place in the answer is its own.
func TestWaitAllFollowsEventsAndResyncs(t *testing.T) {
	s, c := newScripted(t, map[string]client.State{"a": client.Queued, "b": client.Running, "c": client.Succeeded})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second) // under the 10 s sweep
	defer cancel()
	type answer struct {
		jobs []client.Job
		err  error
	}
	done := make(chan answer, 1)
	var mu sync.Mutex
	var seen []string
	go func() {
		jobs, err := c.WaitAll(ctx, []string{"a", "b", "c", "a"}, func(j client.Job) {
			mu.Lock()
			seen = append(seen, j.ID)
			mu.Unlock()
		})
		done <- answer{jobs, err}
	}()
	await(t, "the first read of every job", func() bool { return s.readsOf("a") == 1 && s.readsOf("b") == 1 })
	s.set("a", client.Failed) // no event: only a read sees it
	s.send(`{"type":"job.succeeded","time":"2026-12-05T00:00:01Z","data":{"id":"b","kind":"noop","state":"succeeded"}}`)
	await(t, "b's event to be applied", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 2 })
	s.send(`{"type":"resync","time":"2026-12-05T00:00:02Z"}`)
	a := <-done
	if a.err != nil {
		t.Fatalf("WaitAll: %v", a.err)
	}
	var got []string
	for _, j := range a.jobs {
		got = append(got, j.ID+" "+string(j.State))
	}
	if want := "a failed,b succeeded,c succeeded,a failed"; strings.Join(got, ",") != want {
		t.Fatalf("WaitAll answered %q, want %q", strings.Join(got, ","), want)
	}
	if mu.Lock(); len(seen) != 3 {
		t.Errorf("finished saw %v; want each job once", seen)
	}
	mu.Unlock()
	if n := s.readsOf("b"); n != 1 {
		t.Errorf("b was read %d times; want once (its end came as an event)", n)
	}
}

// A wait rides out a server that answers 503 once it has read its jobs
// (a restart), and says at once that a job does not exist.
func TestWaitRidesOutAnUnavailableServer(t *testing.T) {
	s, c := newScripted(t, map[string]client.State{"a": client.Running})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var said sync.Map // what each wait was told it waits out
	c.WaitingOut = func(err error) { said.Store(err.Error(), true) }
	done := make(chan error, 2)
	go func() {
		j, err := c.Wait(ctx, "a", nil)
		if err == nil && j.State != client.Canceled {
			err = fmt.Errorf("Wait answered %s", j.State)
		}
		done <- err
	}()
	go func() {
		jobs, err := c.WaitAll(ctx, []string{"a"}, nil)
		if err == nil && jobs[0].State != client.Canceled {
			err = fmt.Errorf("WaitAll answered %s", jobs[0].State)
		}
		done <- err
	}()
	// WaitAll's first read is a list's, Wait's the job's own: a 503 at
	// either first read is an error (a wrong address), not waited out.
	// (Two reads of the job alone were Wait's two, its tick at 1 s, on a
	// loaded machine before WaitAll's first: it failed in CI.)
	await(t, "both waits' first reads, and their events", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.reads["a"] >= 2 && s.listed >= 1 && len(s.streams) == 2
	})
	s.mu.Lock()
	s.unavailable = true
	s.mu.Unlock()
	before := s.readsOf("a")
	s.send(`{"type":"resync","time":"2026-12-05T00:00:02Z"}`) // WaitAll reads again now, Wait every second
	await(t, "reads answered 503", func() bool { return s.readsOf("a") >= before+2 })
	s.mu.Lock()
	s.unavailable, s.state["a"] = false, client.Canceled
	s.mu.Unlock()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("a wait did not end once the server answered again")
		}
	}
	n := 0
	said.Range(func(k, _ any) bool {
		n++
		if !strings.Contains(k.(string), "503") {
			t.Errorf("WaitingOut was told %q; want the 503", k)
		}
		return true
	})
	if n == 0 {
		t.Error("WaitingOut was never called while the waits met 503s")
	}
	if _, err := c.WaitAll(ctx, []string{"a", "nope"}, nil); !client.IsNotFound(err) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("WaitAll of a job that does not exist: %v", err)
	}
}

// WaitAll reads jobs a hundred to a request; against a server that does
// not know reads by id (an older one, which answers a page of its newest
// jobs) it reads them one by one.
func TestWaitAllReadsJobsByTheHundred(t *testing.T) {
	states := map[string]client.State{}
	var ids []string
	for i := range 250 {
		id := fmt.Sprintf("noop_%03d", i)
		states[id], ids = client.Succeeded, append(ids, id)
	}
	s, c := newScripted(t, states)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lists atomic.Int32
	c.HTTP = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/api/v1/jobs" {
			lists.Add(1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	jobs, err := c.WaitAll(ctx, ids, nil)
	if err != nil || len(jobs) != 250 || jobs[249].ID != "noop_249" || jobs[249].State != client.Succeeded {
		t.Fatalf("WaitAll: %d jobs, %v", len(jobs), err)
	}
	if n := lists.Load(); n != 3 {
		t.Errorf("250 jobs read with %d requests; want 3", n)
	}
	if n := s.readsOf("noop_100"); n != 1 {
		t.Errorf("a job read %d times; want once", n)
	}
	s.mu.Lock()
	s.noReadsByID = true
	s.mu.Unlock()
	jobs, err = c.WaitAll(ctx, ids[:150], nil)
	if err != nil || len(jobs) != 150 || jobs[149].ID != "noop_149" || jobs[149].State != client.Succeeded {
		t.Fatalf("WaitAll against a server that does not read by id: %d jobs, %v", len(jobs), err)
	}
	if n := s.readsOf("noop_100"); n != 2 {
		t.Errorf("against a server that does not read by id, a job was read %d times in all; want its second read one of its own", n)
	}
	if _, err := c.WaitAll(ctx, []string{"noop_001", "nope"}, nil); !client.IsNotFound(err) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("WaitAll of a job that does not exist, one by one: %v", err)
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
