package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
)

// The public client's types are the API's: every answer decodes into them
// with no field left over, and a Go program driving a job through the
// client sees what the HTTP API says.
func TestPublicClientCoversTheAPI(t *testing.T) {
	b := setup(t)
	c := b.client().API()
	ctx := apitest.Context(t)
	text := "the cat\nthe dog\n"
	if _, err := c.PutFile(ctx, "pets", "a.txt", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	wc, err := c.Submit(ctx, client.Spec{Kind: "wordcount", Input: []string{"pets"}, Partitions: 2, Reducers: 2})
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	wc, err = c.Wait(ctx, wc.ID, func(client.Job) { seen++ })
	if err != nil || wc.State != client.Succeeded || seen == 0 {
		t.Fatalf("wait: %v, %s after %d reads", err, apitest.Describe(wc), seen)
	}
	var out bytes.Buffer
	if err := c.Output(ctx, wc.ID, &out); err != nil || out.String() != "cat 1\ndog 1\nthe 2\n" {
		t.Fatalf("output: %v %q", err, out.String())
	}
	noop := b.submit(t, "noop", 3)
	b.await(t, noop.ID, terminal)

	strict := func(path string, v any) {
		t.Helper()
		r := b.do(t, http.MethodGet, path, "")
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		d := json.NewDecoder(bytes.NewReader(r.Body))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			t.Fatalf("GET %s does not decode into the client's %T: %v\n%s", path, v, err, r.Body)
		}
	}
	strict("/api/v1/jobs/"+wc.ID, new(client.Job))
	strict("/api/v1/jobs/"+noop.ID, new(client.Job))
	strict("/api/v1/jobs?limit=10", new(client.JobList))
	strict("/api/v1/jobs/"+wc.ID+"/tasks", new(struct {
		Tasks []client.TaskAttempt `json:"tasks"`
	}))
	strict("/api/v1/workers", new(struct {
		Workers []client.Worker `json:"workers"`
	}))
	strict("/api/v1/queue", new(client.Queue))
	strict("/api/v1/kinds", new(struct {
		Kinds []client.Kind `json:"kinds"`
	}))
	strict("/api/v1/datasets", new(struct {
		Datasets []client.Dataset `json:"datasets"`
	}))
	strict("/api/v1/datasets/pets", new(client.Dataset))
	strict("/api/v1/history", new(client.History))

	// The last hour, per minute: the word count's 4 tasks and the noop's 3
	// are in the minutes they finished in (two at most, around a minute's
	// turn), by kind.
	h, err := c.History(ctx)
	if err != nil || len(h.Minutes) != 60 {
		t.Fatalf("history: %v, %d minutes", err, len(h.Minutes))
	}
	byKind, succeeded := map[string]int{}, 0
	for _, m := range h.Minutes {
		for k, n := range m.TasksByKind {
			byKind[k] += n
		}
		succeeded += m.JobsSucceeded
	}
	if byKind["wordcount"] != 4 || byKind["noop"] != 3 || succeeded != 2 {
		t.Fatalf("history: tasks by kind %v, %d jobs succeeded; want wordcount 4, noop 3, 2 jobs", byKind, succeeded)
	}

	tasks, err := c.Tasks(ctx, wc.ID)
	if err != nil || len(tasks) != 4 {
		t.Fatalf("tasks: %v, %d attempts; want 2 maps and 2 reduces", err, len(tasks))
	}
	if _, err := c.Job(ctx, "noop_nope"); !client.IsNotFound(err) {
		t.Fatalf("a job that does not exist: %v; want a not-found error", err)
	}
	_, err = c.Submit(ctx, client.Spec{Kind: "nope", Partitions: 1})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, `unknown kind "nope"`) {
		t.Fatalf("submit of an unknown kind: %v", err)
	}
	if err := c.DeleteDataset(ctx, "pets"); err != nil {
		t.Fatal(err)
	}
	if ds, err := c.Datasets(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("datasets after delete: %v %+v", err, ds)
	}
}

// POST /api/v1/jobs/batch: all valid and stored, in order, or nothing.
func TestBatchSubmit(t *testing.T) {
	b := setup(t)
	c := b.client().API()
	ctx := apitest.Context(t)
	r := b.do(t, http.MethodPost, "/api/v1/jobs/batch", `{"jobs":[{"kind":"noop","partitions":1},{"kind":"noop","partitions":"x"}]}`)
	if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "jobs[1]") {
		t.Fatalf("a batch with a bad spec: %d %s", r.Status, r.Body)
	}
	if l, err := c.Jobs(ctx, client.ListOptions{}); err != nil || len(l.Jobs) != 0 {
		t.Fatalf("jobs after a refused batch: %+v %v", l, err)
	}
	specs := make([]client.Spec, 100)
	for i := range specs {
		specs[i] = client.Spec{Kind: "noop", Partitions: 1 + i%4}
	}
	jobs, err := c.SubmitBatch(ctx, specs)
	if err != nil || len(jobs) != 100 {
		t.Fatalf("batch of 100: %d jobs, %v", len(jobs), err)
	}
	sum := 0
	for i, j := range jobs {
		if j.Partitions != specs[i].Partitions {
			t.Fatalf("job %d: %d partitions, want %d", i, j.Partitions, specs[i].Partitions)
		}
		done := b.await(t, j.ID, terminal)
		if done.State != client.Succeeded {
			t.Fatalf("job %d: %s", i, apitest.Describe(done))
		}
		sum += done.Tasks.Done
	}
	if sum != 250 {
		t.Fatalf("%d tasks done; want 250", sum)
	}
	key := "batch-retry-1"
	first := b.do(t, http.MethodPost, "/api/v1/jobs/batch", `{"jobs":[{"kind":"noop","partitions":2}]}`, "Idempotency-Key", key)
	again := b.do(t, http.MethodPost, "/api/v1/jobs/batch", `{"jobs":[{"kind":"noop","partitions":2}]}`, "Idempotency-Key", key)
	if first.Status != http.StatusAccepted || again.Status != http.StatusOK {
		t.Fatalf("a batch and its retry under one key: %d, %d", first.Status, again.Status)
	}
	if h, h2 := first.Header.Get("Idempotent-Replayed"), again.Header.Get("Idempotent-Replayed"); h != "" || h2 != "true" {
		t.Fatalf("Idempotent-Replayed of a batch and its retry: %q, %q; want none, then true", h, h2)
	}
	var a1, a2 struct{ Jobs []client.Job }
	first.JSON(t, &a1)
	again.JSON(t, &a2)
	if len(a1.Jobs) != 1 || len(a2.Jobs) != 1 || a1.Jobs[0].ID != a2.Jobs[0].ID {
		t.Fatalf("the retry answered %+v; want the first batch's job %+v", a2.Jobs, a1.Jobs)
	}
	// The same key with another batch is refused, and stores nothing.
	other := b.do(t, http.MethodPost, "/api/v1/jobs/batch", `{"jobs":[{"kind":"noop","partitions":3}]}`, "Idempotency-Key", key)
	if other.Status != http.StatusUnprocessableEntity || !strings.Contains(string(other.Body), a1.Jobs[0].ID) {
		t.Fatalf("the batch's key with another batch: %d %s; want 422 naming job %s", other.Status, other.Body, a1.Jobs[0].ID)
	}
	if l, err := c.Jobs(ctx, client.ListOptions{Limit: 500}); err != nil || len(l.Jobs) != 101 {
		t.Fatalf("jobs after a refused batch: %d %v; want the 101 stored before", len(l.Jobs), err)
	}
}

// An Idempotency-Key sent again with a different request answers 422 and
// stores nothing; the same request, spelt with other spaces, is a retry.
func TestIdempotencyKeyReusedForAnotherRequest(t *testing.T) {
	b := setup(t)
	key := []string{"Idempotency-Key", "order-7"}
	first := b.do(t, http.MethodPost, "/api/v1/jobs", `{"kind":"noop","partitions":2,"params":{"a":1}}`, key...)
	again := b.do(t, http.MethodPost, "/api/v1/jobs", `{ "kind": "noop", "partitions": 2, "params": { "a": 1 } }`, key...)
	var j1, j2 client.Job
	first.JSON(t, &j1)
	again.JSON(t, &j2)
	if first.Status != http.StatusAccepted || again.Status != http.StatusOK || j1.ID != j2.ID {
		t.Fatalf("a submit and its retry: %d %s, %d %s", first.Status, j1.ID, again.Status, j2.ID)
	}
	for _, body := range []string{
		`{"kind":"noop","partitions":3,"params":{"a":1}}`,
		`{"kind":"noop","partitions":2,"params":{"a":2}}`,
		`{"kind":"short","partitions":2,"params":{"a":1}}`,
	} {
		r := b.do(t, http.MethodPost, "/api/v1/jobs", body, key...)
		var e struct {
			Error struct{ Code, Message string }
		}
		r.JSON(t, &e)
		if r.Status != http.StatusUnprocessableEntity || e.Error.Code != "idempotency_key_reused" || !strings.Contains(e.Error.Message, j1.ID) {
			t.Fatalf("the key with %s: %d %s; want 422 idempotency_key_reused naming %s", body, r.Status, r.Body, j1.ID)
		}
	}
	// A rerun under the key is another request too.
	b.await(t, j1.ID, terminal)
	if r := b.do(t, http.MethodPost, "/api/v1/jobs/"+j1.ID+"/rerun", "", key...); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("a rerun under the submit's key: %d %s; want 422", r.Status, r.Body)
	}
	l, err := b.client().API().Jobs(apitest.Context(t), client.ListOptions{})
	if err != nil || len(l.Jobs) != 1 {
		t.Fatalf("jobs: %d %v; want the first submit's only", len(l.Jobs), err)
	}
}

// POST /api/v1/jobs/{id}/rerun: a finished job's spec again, as a new job
// that names the first; refused for a job not finished, or unknown.
func TestRerun(t *testing.T) {
	block := job.Kind{Name: "block", Description: "runs until canceled", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}}
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(block) })
	c := b.client().API()
	ctx := apitest.Context(t)
	text := "the cat\nthe dog\n"
	if _, err := c.PutFile(ctx, "pets", "a.txt", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	wc, err := c.Submit(ctx, client.Spec{Kind: "wordcount", Input: []string{"pets"}, Partitions: 2, Reducers: 3})
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *client.Error
	if _, err := c.Rerun(ctx, "wordcount_nope"); !client.IsNotFound(err) {
		t.Fatalf("rerun of an unknown job: %v", err)
	}
	if wc = b.await(t, wc.ID, terminal); wc.State != client.Succeeded {
		t.Fatal(apitest.Describe(wc))
	}
	again, err := c.Rerun(ctx, wc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID == wc.ID || again.RerunOf != wc.ID || again.Kind != "wordcount" || again.Partitions != 2 || again.Reducers != 3 || strings.Join(again.Input, ",") != "pets" {
		t.Fatalf("rerun: %+v", again)
	}
	if again = b.await(t, again.ID, terminal); again.State != client.Succeeded || b.client().Output(t, again.ID) != b.client().Output(t, wc.ID) {
		t.Fatalf("rerun: %s", apitest.Describe(again))
	}
	// A job still running is a conflict.
	long := b.submit(t, "block", 50)
	if _, err := c.Rerun(ctx, long.ID); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, "cancel it first") {
		t.Fatalf("rerun of a running job: %v", err)
	}
	if _, err := c.Cancel(ctx, long.ID); err != nil {
		t.Fatal(err)
	}
	b.await(t, long.ID, terminal)
	if j, err := c.Rerun(ctx, long.ID); err != nil || j.RerunOf != long.ID || j.Partitions != 50 {
		t.Fatalf("rerun of a canceled job: %+v %v", j, err)
	}
}

// A job's timeout bounds each attempt of its tasks: an attempt past it is
// a failed attempt that says so, retried, then fails the job; a bad
// timeout is refused naming the field.
func TestJobTimeout(t *testing.T) {
	block := job.Kind{Name: "block", Description: "runs until canceled", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}}
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(block)
		c.MaxAttempts = 2
		c.RetryBackoff = 10 * time.Millisecond
	})
	c := b.client().API()
	ctx := apitest.Context(t)
	var apiErr *client.Error
	if _, err := c.Submit(ctx, client.Spec{Kind: "block", Partitions: 1, Timeout: "soon"}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, `timeout must be a duration`) {
		t.Fatalf("a bad timeout: %v", err)
	}
	j, err := c.Submit(ctx, client.Spec{Kind: "block", Partitions: 2, Timeout: "300ms"})
	if err != nil || j.Timeout != "300ms" {
		t.Fatalf("submit: %+v %v", j, err)
	}
	j = b.await(t, j.ID, terminal)
	if j.State != client.Failed || !strings.Contains(j.Error, "timed out after 300ms (the job's timeout)") {
		t.Fatalf("job: %s", apitest.Describe(j))
	}
	tasks, err := c.Tasks(ctx, j.ID)
	failed := 0
	for _, a := range tasks {
		if a.State == "failed" && strings.Contains(a.Error, "timed out after 300ms") {
			failed++
		}
	}
	if err != nil || failed < 2 {
		t.Fatalf("%d attempts failed for the timeout (of %d): %v", failed, len(tasks), err)
	}
}

// A submit no try of which got an answer but "unavailable" ends with an
// UnansweredError holding the key it was sent under (the server may have
// stored the job): sent again under that key, it is answered that job.
func TestAnUnansweredSubmitHoldsItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := apitest.Context(t)
	var mu sync.Mutex
	var keys []string
	// A server that stored the job and died before its answer, then
	// answers 503 while it is back.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"try again shortly"}}`))
	}))
	defer srv.Close()
	c := client.New(srv.URL, "")
	c.SubmitRetries = 1
	_, err := c.Submit(ctx, client.Spec{Kind: "noop", Partitions: 1})
	var un *client.UnansweredError
	mu.Lock()
	defer mu.Unlock()
	if !errors.As(err, &un) || !client.IsUnavailable(err) || un.Key == "" || len(keys) != 2 || keys[0] != un.Key || keys[1] != un.Key {
		t.Fatalf("submit without an answer: %v (keys sent %q)", err, keys)
	}
	// The same key on a real server: one job, answered again.
	real := b.client().API()
	first, err := real.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, un.Key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := real.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, un.Key)
	if err != nil || again.ID != first.ID {
		t.Fatalf("the same submit under the key again: %s, %v; want %s", again.ID, err, first.ID)
	}
	// A bad request is no unanswered one.
	_, err = real.Submit(ctx, client.Spec{Kind: "noop", Partitions: 0})
	if errors.As(err, &un) {
		t.Fatalf("a 400 taken for unanswered: %v", err)
	}
}

// A read, and a change that is the same sent twice (a kind's pause), is
// sent again while the server answers 503 (its store electing a leader):
// the CLI's `jobs` and a program's pause failed on the first one. A
// cancel is sent once: sent again after an answer that was lost, it would
// be refused as done already.
func TestClientSendsReadsAndPausesAgainOn503(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := apitest.Context(t)
	j := b.client().SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 1})
	target, err := url.Parse(b.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	// In front of the real server, two 503s for each new request line
	// before it goes through.
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		line := r.Method + " " + r.URL.Path
		seen[line]++
		n := seen[line]
		mu.Unlock()
		if n <= 2 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"the store does not take writes: try again shortly"}}`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := client.New(srv.URL, "")
	sent := func(line string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[line]
	}
	if got, err := c.Job(ctx, j.ID); err != nil || got.ID != j.ID {
		t.Fatalf("a read behind two 503s: %+v, %v", got, err)
	}
	if n := sent("GET /api/v1/jobs/" + j.ID); n != 3 {
		t.Fatalf("the read was sent %d times, want 3", n)
	}
	if k, err := c.PauseKind(ctx, "noop"); err != nil || !k.Paused {
		t.Fatalf("a pause behind two 503s: %+v, %v", k, err)
	}
	if _, err := c.ResumeKind(ctx, "noop"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(ctx, j.ID); !client.IsUnavailable(err) {
		t.Fatalf("a cancel answered 503: %v, want the 503", err)
	}
	if n := sent("POST /api/v1/jobs/" + j.ID + "/cancel"); n != 1 {
		t.Fatalf("the cancel was sent %d times, want once", n)
	}
	once := client.New(srv.URL, "")
	once.Retries = -1
	if _, err := once.Queue(ctx); !client.IsUnavailable(err) {
		t.Fatalf("a read with Retries -1 behind 503s: %v, want the 503", err)
	}
}
