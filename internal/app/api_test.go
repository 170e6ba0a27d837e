package app_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/httpapi"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/view"
)

// blocker is a kind whose tasks run until the test releases them or the
// task's context ends.
type blocker struct {
	calls    atomic.Int32
	started  chan int
	canceled chan int
	release  chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan int, 1000), canceled: make(chan int, 1000), release: make(chan struct{})}
}

func (b *blocker) kind() job.Kind {
	return job.Kind{Name: "block", Map: func(ctx context.Context, t job.Task) (int64, error) {
		b.calls.Add(1)
		b.started <- t.Partition
		select {
		case <-b.release:
			return 1, nil
		case <-ctx.Done():
			b.canceled <- t.Partition
			return 0, ctx.Err()
		}
	}}
}

func withKinds(extra ...job.Kind) func(*app.Config) {
	return func(c *app.Config) { c.Kinds = testKinds(extra...) }
}

func TestSeedSubmitAndStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.do(t, "GET", "/ping", "")
	if r.Status != 200 || compact(t, r.Body) != `{"message":"pong"}` {
		t.Fatalf("GET /ping = %d %s", r.Status, r.Body)
	}

	for _, tc := range []struct {
		kind  string
		n     int
		value int64
	}{{"short", 3, 1}, {"long", 2, 5}} {
		r := b.do(t, "POST", fmt.Sprintf("/%s/%d", tc.kind, tc.n), "")
		if r.Status != 200 {
			t.Fatalf("POST /%s/%d = %d %s", tc.kind, tc.n, r.Status, r.Body)
		}
		var got map[string]string
		r.JSON(t, &got)
		if len(got) != 2 || got["status"] != "Submitted" || !strings.HasPrefix(got["job"], tc.kind+"_") {
			t.Fatalf("POST /%s/%d answered %s, want {status: Submitted, job: %s_…}", tc.kind, tc.n, r.Body, tc.kind)
		}
		j := b.awaitState(t, got["job"], client.Succeeded)
		want := make([]int64, tc.n)
		for i := range want {
			want[i] = tc.value
		}
		if !reflect.DeepEqual(j.Result.Values, want) || j.Result.Sum != tc.value*int64(tc.n) {
			t.Fatalf("%s result = %+v, want values %v", tc.kind, j.Result, want)
		}
	}

	b.client().AwaitIdleWorkers(t, 4)
	r = b.do(t, "GET", "/status", "")
	var st struct {
		Workers []map[string]any `json:"workers"`
	}
	r.JSON(t, &st)
	if r.Status != 200 || len(st.Workers) != 4 {
		t.Fatalf("GET /status = %d %s, want 4 workers", r.Status, r.Body)
	}
	for i, w := range st.Workers {
		if len(w) != 3 || w["Id"] != float64(i) || w["Busy"] != false || w["JobId"] != "" {
			t.Errorf("worker %d = %v, want exactly {Id:%d Busy:false JobId:\"\"}", i, w, i)
		}
	}
}

func TestSeedWebsockets(t *testing.T) {
	t.Parallel()
	blk := newBlocker()
	b := setup(t, withKinds(blk.kind()))

	queue := b.dial(t, "/queue")
	status := b.dial(t, "/status")
	workers := b.dial(t, "/workerStatus")
	results := b.dial(t, "/results")

	// A snapshot at connect.
	var q []string
	readJSON(t, queue, &q)
	if len(q) != 0 {
		t.Fatalf("/queue first snapshot = %v, want []", q)
	}
	var ws []view.SeedWorker
	readJSON(t, status, &ws)
	if len(ws) != 4 {
		t.Fatalf("/status snapshot = %v, want 4 workers", ws)
	}
	readJSON(t, workers, &ws)
	if len(ws) != 4 {
		t.Fatalf("/workerStatus snapshot = %v, want 4 workers", ws)
	}
	var res map[string][]int64
	readJSON(t, results, &res)

	// 6 tasks on 4 workers: 4 busy, 2 waiting.
	j := b.submit(t, "block", 6)
	for {
		readJSON(t, queue, &q)
		if len(q) == 2 && q[0] == j.ID && q[1] == j.ID {
			break
		}
	}
	for {
		readJSON(t, status, &ws)
		busy := 0
		for _, w := range ws {
			if w.Busy && w.JobId == j.ID {
				busy++
			}
		}
		if busy == 4 {
			break
		}
	}
	close(blk.release)
	for {
		readJSON(t, results, &res)
		if len(res[j.ID]) == 6 {
			break
		}
	}
	for _, v := range res[j.ID] {
		if v != 1 {
			t.Fatalf("/results[%s] = %v, want six 1s", j.ID, res[j.ID])
		}
	}
	for {
		readJSON(t, queue, &q)
		if len(q) == 0 {
			break
		}
	}
}

func TestJobResource(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":4,"params":{"note":"x"}}`)
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit = %d %s", r.Status, r.Body)
	}
	var raw map[string]any
	r.JSON(t, &raw)
	for _, k := range []string{"id", "kind", "state", "partitions", "tasks", "result", "error", "created_at", "started_at", "finished_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("job resource lacks %q: %s", k, r.Body)
		}
	}
	tasks, _ := raw["tasks"].(map[string]any)
	for _, k := range []string{"total", "queued", "running", "done", "failed"} {
		if _, ok := tasks[k]; !ok {
			t.Errorf("tasks lacks %q: %s", k, r.Body)
		}
	}
	id := raw["id"].(string)
	if loc := r.Header.Get("Location"); loc != "/api/v1/jobs/"+id {
		t.Errorf("Location = %q", loc)
	}
	j := b.awaitState(t, id, client.Succeeded)
	if j.Tasks != (view.TaskCounts{Total: 4, Done: 4}) || j.Result.Sum != 4 || j.StartedAt == nil || j.FinishedAt == nil {
		t.Fatalf("finished job = %+v", j)
	}
	if string(j.Params) != `{"note":"x"}` {
		t.Errorf("params = %s", j.Params)
	}
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	blk := newBlocker()
	b := setup(t, withKinds(blk.kind()))
	var ids []string
	for range 5 {
		j := b.submit(t, "noop", 1)
		b.awaitState(t, j.ID, client.Succeeded)
		ids = append(ids, j.ID)
	}
	running := b.submit(t, "block", 1)
	apitest.Recv(t, blk.started, "a block task to start")
	b.await(t, running.ID, func(j client.Job) bool { return j.State == client.Running && j.Tasks.Running == 1 })

	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		var l struct {
			Jobs       []client.Job `json:"jobs"`
			NextCursor string       `json:"next_cursor"`
		}
		r := b.do(t, "GET", "/api/v1/jobs?state=succeeded&limit=2&cursor="+cursor, "")
		if r.Status != 200 {
			t.Fatalf("list = %d %s", r.Status, r.Body)
		}
		r.JSON(t, &l)
		for _, j := range l.Jobs {
			seen = append(seen, j.ID)
		}
		if l.NextCursor == "" {
			break
		}
		if len(l.Jobs) != 2 || page > 3 {
			t.Fatalf("page %d has %d jobs and a next cursor", page, len(l.Jobs))
		}
		cursor = l.NextCursor
	}
	want := append([]string(nil), ids...)
	sort.Sort(sort.Reverse(sort.StringSlice(want)))
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("succeeded jobs in pages = %v, want newest first %v", seen, want)
	}

	var l struct{ Jobs []client.Job }
	b.do(t, "GET", "/api/v1/jobs?state=running", "").JSON(t, &l)
	if len(l.Jobs) != 1 || l.Jobs[0].ID != running.ID || l.Jobs[0].Tasks.Running != 1 {
		t.Fatalf("running jobs = %+v, want only %s with 1 running task", l.Jobs, running.ID)
	}
	b.do(t, "GET", "/api/v1/jobs", "").JSON(t, &l)
	if len(l.Jobs) != 6 || l.Jobs[0].ID != running.ID {
		t.Fatalf("all jobs = %d, first %s; want 6, newest first", len(l.Jobs), l.Jobs[0].ID)
	}
	// By kind: alone, with a state, paged; a kind no job has lists none.
	var byKind struct {
		Jobs       []client.Job
		NextCursor string `json:"next_cursor"`
	}
	b.do(t, "GET", "/api/v1/jobs?kind=noop&limit=4", "").JSON(t, &byKind)
	if len(byKind.Jobs) != 4 || byKind.Jobs[0].ID != want[0] || byKind.NextCursor != want[3] {
		t.Fatalf("noop jobs, 4 a page: %d, first %s, next %q; want 4 from %s, next %s", len(byKind.Jobs), byKind.Jobs[0].ID, byKind.NextCursor, want[0], want[3])
	}
	cursor = byKind.NextCursor
	byKind.NextCursor = "" // absent from a last page
	b.do(t, "GET", "/api/v1/jobs?kind=noop&limit=4&cursor="+cursor, "").JSON(t, &byKind)
	if len(byKind.Jobs) != 1 || byKind.Jobs[0].ID != want[4] || byKind.NextCursor != "" {
		t.Fatalf("noop jobs, second page: %+v, next %q; want %s alone", byKind.Jobs, byKind.NextCursor, want[4])
	}
	b.do(t, "GET", "/api/v1/jobs?kind=block&state=running", "").JSON(t, &byKind)
	if len(byKind.Jobs) != 1 || byKind.Jobs[0].ID != running.ID {
		t.Fatalf("running block jobs: %+v; want %s", byKind.Jobs, running.ID)
	}
	for _, q := range []string{"kind=block&state=succeeded", "kind=short", "kind=noo"} {
		b.do(t, "GET", "/api/v1/jobs?"+q, "").JSON(t, &byKind)
		if len(byKind.Jobs) != 0 {
			t.Fatalf("jobs?%s: %d jobs; want none", q, len(byKind.Jobs))
		}
	}
	if r := b.do(t, "GET", "/api/v1/jobs?kind=no%20op", ""); r.Status != 400 || !strings.Contains(string(r.Body), `kind name \"no op\" has the character ' '`) {
		t.Fatalf("jobs?kind=no op: %d %s; want 400 naming the space", r.Status, r.Body)
	}

	// By id: in the order asked, each once, and those the server does not
	// have (deleted, never submitted) named.
	if r := b.do(t, "DELETE", "/api/v1/jobs/"+ids[0], ""); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	never := "noop_01m8r2ryk6x0mek2na9q3n7xyj"
	var byID client.JobList
	r := b.do(t, "GET", "/api/v1/jobs?id="+ids[1]+"&id="+running.ID+","+ids[0]+"&id="+ids[1]+"&id="+never, "")
	r.JSON(t, &byID)
	if r.Status != 200 || len(byID.Jobs) != 2 || byID.Jobs[0].ID != ids[1] || byID.Jobs[0].State != client.Succeeded ||
		byID.Jobs[1].ID != running.ID || byID.Jobs[1].Tasks.Running != 1 || strings.Join(byID.NotFound, ",") != ids[0]+","+never {
		t.Fatalf("jobs by id: %d %s", r.Status, r.Body)
	}
	var many strings.Builder
	for i := range httpapi.MaxJobsByID {
		fmt.Fprintf(&many, "&id=noop_%d", i)
	}
	for q, want := range map[string]string{
		"id=" + ids[1] + "&state=running": "id cannot be combined with state",
		"id=" + ids[1] + ",":              "id must name a job, got an empty one",
		"id=" + never + many.String():     "501 jobs named by id; at most 500",
	} {
		if r := b.do(t, "GET", "/api/v1/jobs?"+q, ""); r.Status != 400 || !strings.Contains(string(r.Body), want) {
			t.Errorf("jobs?%.60s…: %d %s; want 400 saying %q", q, r.Status, r.Body, want)
		}
	}
	close(blk.release)
}

func TestCancel(t *testing.T) {
	t.Parallel()
	blk := newBlocker()
	b := setup(t, withKinds(blk.kind()))
	j := b.submit(t, "block", 6)
	for range 4 {
		apitest.Recv(t, blk.started, "a block task to start")
	}
	r := b.do(t, "POST", "/api/v1/jobs/"+j.ID+"/cancel", "")
	var got client.Job
	r.JSON(t, &got)
	if r.Status != 200 || got.State != client.Canceled || got.FinishedAt == nil {
		t.Fatalf("cancel = %d %s", r.Status, r.Body)
	}
	// The four running tasks see their context end.
	for range 4 {
		apitest.Recv(t, blk.canceled, "a canceled block task to see its context end")
	}
	// A job submitted after it runs; by the time it is done, the canceled
	// job's two waiting tasks were dropped without running.
	after := b.submit(t, "noop", 8)
	b.awaitState(t, after.ID, client.Succeeded)
	if n := blk.calls.Load(); n != 4 {
		t.Fatalf("the canceled job's map ran %d times, want 4 (its queued tasks must be dropped)", n)
	}
	if j := b.job(t, j.ID); j.State != client.Canceled || j.Tasks.Queued != 0 || j.Tasks.Running != 0 {
		t.Fatalf("canceled job = %+v", j)
	}
	var q struct {
		Depth int `json:"depth"`
	}
	b.do(t, "GET", "/api/v1/queue", "").JSON(t, &q)
	if q.Depth != 0 {
		t.Fatalf("queue depth after cancel = %d", q.Depth)
	}

	r = b.do(t, "POST", "/api/v1/jobs/"+j.ID+"/cancel", "")
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "already canceled") {
		t.Fatalf("second cancel = %d %s, want 409", r.Status, r.Body)
	}
	if r := b.do(t, "POST", "/api/v1/jobs/noop_nope/cancel", ""); r.Status != http.StatusNotFound {
		t.Fatalf("cancel of an unknown job = %d %s, want 404", r.Status, r.Body)
	}
}

// POST /api/v1/jobs/cancel cancels every unfinished job of a kind, a
// state or both, oldest first, a thousand a request (more says others
// matched); bad filters are 400s naming what is wrong.
func TestCancelMany(t *testing.T) {
	t.Parallel()
	blk := newBlocker()
	b := setup(t, withKinds(blk.kind()))
	running := b.submit(t, "block", 4) // every worker
	for range 4 {
		apitest.Recv(t, blk.started, "a block task to start")
	}
	b.awaitState(t, running.ID, client.Running)
	if r := b.do(t, "POST", "/api/v1/kinds/noop/pause", ""); r.Status != 200 {
		t.Fatalf("pause noop = %d %s", r.Status, r.Body)
	}
	specs := strings.Repeat(`{"kind":"noop","partitions":1},`, 1000)
	if r := b.do(t, "POST", "/api/v1/jobs/batch", `{"jobs":[`+strings.TrimSuffix(specs, ",")+`]}`); r.Status != http.StatusAccepted {
		t.Fatalf("batch = %d %.300s", r.Status, r.Body)
	}
	var last []string
	for range 3 {
		last = append(last, b.submit(t, "noop", 1).ID)
	}
	short := []string{b.submit(t, "short", 2).ID, b.submit(t, "short", 2).ID}

	for body, want := range map[string]string{
		`{}`:                    "name the kind or the state",
		`{"state":"succeeded"}`: "have finished",
		`{"state":"bogus"}`:     "not a job state",
		`{"kind":"no such!"}`:   "kind",
		`{"kinds":"noop"}`:      "unknown field",
	} {
		if r := b.do(t, "POST", "/api/v1/jobs/cancel", body); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), want) {
			t.Errorf("cancel %s = %d %s; want 400 saying %q", body, r.Status, r.Body, want)
		}
	}
	cancel := func(body string) client.CanceledJobs {
		t.Helper()
		r := b.do(t, "POST", "/api/v1/jobs/cancel", body)
		var out client.CanceledJobs
		r.JSON(t, &out)
		if r.Status != 200 || len(out.Failed) > 0 {
			t.Fatalf("cancel %s = %d %.500s", body, r.Status, r.Body)
		}
		return out
	}
	first := cancel(`{"kind":"noop"}`)
	if len(first.Canceled) != 1000 || !first.More || slices.ContainsFunc(last, func(id string) bool { return slices.Contains(first.Canceled, id) }) {
		t.Fatalf("the first cancel of 1,003 noop jobs: %d canceled, more %v, the newest among them: want the oldest 1,000, more", len(first.Canceled), first.More)
	}
	if second := cancel(`{"kind":"noop","state":"queued"}`); !slices.Equal(second.Canceled, last) || second.More {
		t.Fatalf("the second cancel: %v, more %v; want %v, in submit order", second.Canceled, second.More, last)
	}
	// The workers all run the block job: the short jobs wait.
	if got := cancel(`{"state":"queued"}`); !slices.Equal(got.Canceled, short) {
		t.Fatalf("cancel of the queued jobs: %v; want %v", got.Canceled, short)
	}
	if j := b.job(t, running.ID); j.State != client.Running {
		t.Fatalf("the running job after the queued ones were canceled: %s", j.State)
	}
	if got := cancel(`{"state":"running"}`); !slices.Equal(got.Canceled, []string{running.ID}) {
		t.Fatalf("cancel of the running jobs: %v; want %s", got.Canceled, running.ID)
	}
	for range 4 {
		apitest.Recv(t, blk.canceled, "a canceled block task to see its context end")
	}
	if got := cancel(`{"kind":"short"}`); len(got.Canceled) != 0 || got.More {
		t.Fatalf("a cancel with nothing left to cancel: %+v", got)
	}
	for _, id := range append(append(short, last...), running.ID) {
		if j := b.job(t, id); j.State != client.Canceled {
			t.Fatalf("job %s is %s after the cancel", id, j.State)
		}
	}
}

func TestFailingAndPanickingTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	j := b.submit(t, "fail", 3)
	j = b.await(t, j.ID, terminal)
	if j.State != client.Failed || j.Tasks.Failed != 1 || !strings.Contains(j.Error, "partition 1") || !strings.Contains(j.Error, "corrupt") {
		t.Fatalf("failing job = %+v", j)
	}
	for range 3 {
		p := b.submit(t, "panic", 1)
		p = b.await(t, p.ID, terminal)
		if p.State != client.Failed || !strings.Contains(p.Error, "panicked: boom") {
			t.Fatalf("panicking job = %+v", p)
		}
	}
	// The workers survived.
	ok := b.submit(t, "noop", 20)
	b.awaitState(t, ok.ID, client.Succeeded)
	var w struct{ Workers []job.WorkerStatus }
	b.do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
	if len(w.Workers) != 4 {
		t.Fatalf("%d workers after panics, want 4", len(w.Workers))
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.MaxPartitions = 100 })
	big := `{"kind":"short","partitions":1,"params":{"x":"` + strings.Repeat("a", 2<<20) + `"}}`
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               job.Code
		msg                string
	}{
		{"POST", "/short/abc", "", 400, job.EInvalid, `integer from 1 to 100, got "abc"`},
		{"POST", "/short/0", "", 400, job.EInvalid, "from 1 to 100"},
		{"POST", "/short/-2", "", 400, job.EInvalid, "from 1 to 100"},
		{"POST", "/short/101", "", 400, job.EInvalid, "from 1 to 100, got 101"},
		{"POST", "/short/1.5", "", 400, job.EInvalid, "integer"},
		{"POST", "/medium/3", "", 400, job.EInvalid, "known kinds: fail, grep, indexer, long, noop, panic, short, wordcount"},
		{"GET", "/short/3", "", 405, job.EMethod, "allowed: POST"},
		{"DELETE", "/ping", "", 405, job.EMethod, "allowed: GET"},
		{"GET", "/nope", "", 404, job.ENotFound, "/nope"},
		{"GET", "/api/v1/jobs/short_nope", "", 404, job.ENotFound, `job "short_nope" not found`},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":"3"}`, 400, job.EInvalid, "partitions must be an integer"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":2.5}`, 400, job.EInvalid, "partitions must be an integer"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":1e2}`, 400, job.EInvalid, "partitions must be an integer"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":99999999999999999999}`, 400, job.EInvalid, "partitions must be an integer"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":0}`, 400, job.EInvalid, "from 1 to 100"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":-1}`, 400, job.EInvalid, "from 1 to 100"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":1000}`, 400, job.EInvalid, "from 1 to 100, got 1000"},
		{"POST", "/api/v1/jobs", `{"kind":"short"}`, 400, job.EInvalid, "partitions is required"},
		{"POST", "/api/v1/jobs", `{"kind":"short","input":["books"]}`, 400, job.EInvalid, "partitions is required"},
		{"POST", "/api/v1/jobs", `{"kind":"nope","partitions":1}`, 400, job.EInvalid, `unknown kind "nope"; known kinds:`},
		{"POST", "/api/v1/jobs", `{"partitions":1}`, 400, job.EInvalid, "kind is required"},
		{"POST", "/api/v1/jobs", `{"kind":"nope"}`, 400, job.EInvalid, `unknown kind "nope"; known kinds:`},
		{"POST", "/api/v1/jobs", `{}`, 400, job.EInvalid, "kind is required"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":1,"color":"red"}`, 400, job.EInvalid, `unknown field "color"`},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":1,"params":[1]}`, 400, job.EInvalid, "params must be a JSON object"},
		{"POST", "/api/v1/jobs", `{"kind":"short",`, 400, job.EInvalid, "malformed JSON"},
		{"POST", "/api/v1/jobs", `{"kind":short}`, 400, job.EInvalid, "malformed JSON"},
		{"POST", "/api/v1/jobs", `[1,2]`, 400, job.EInvalid, "must be a JSON object"},
		{"POST", "/api/v1/jobs", `{"kind":5,"partitions":1}`, 400, job.EInvalid, `field "kind" must be a string`},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":1} {}`, 400, job.EInvalid, "nothing after it"},
		{"POST", "/api/v1/jobs", ``, 400, job.EInvalid, "body is empty"},
		{"POST", "/api/v1/jobs", big, 413, job.ETooLarge, "larger than the limit"},
		{"POST", "/api/v1/jobs/batch", big, 413, job.ETooLarge, "send the jobs in smaller batches"},
		{"PUT", "/api/v1/jobs", `{}`, 405, job.EMethod, "allowed"},
		{"GET", "/api/v1/jobs?state=done", "", 400, job.EInvalid, "queued, running, succeeded, failed, canceled"},
		{"GET", "/api/v1/jobs?limit=0", "", 400, job.EInvalid, "limit must be an integer from 1 to 500"},
		{"GET", "/api/v1/jobs?limit=x", "", 400, job.EInvalid, "limit must be"},
		{"GET", "/api/v1/jobs?cursor=zzz", "", 400, job.EInvalid, "cursor"},
		{"GET", "/api/v1/events", "", 400, job.EInvalid, "websocket"},
		{"POST", "/api/v1/jobs/x/cancel", "", 404, job.ENotFound, "not found"},
		// Data jobs and datasets.
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2}`, 400, job.EInvalid, "input is required"},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":["nope"]}`, 400, job.EInvalid, `dataset "nope" does not exist`},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":["../etc"]}`, 400, job.EInvalid, `dataset name "../etc" starts with '.'`},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":["a/b"]}`, 400, job.EInvalid, `has the character '/'`},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":"books"}`, 400, job.EInvalid, `field "input" must be`},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":["x"],"reducers":0}`, 400, job.EInvalid, "reducers must be an integer from 1 to 1024"},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":["x"],"reducers":5000}`, 400, job.EInvalid, "reducers must be an integer from 1 to 1024, got 5000"},
		{"POST", "/api/v1/jobs", `{"kind":"wordcount","partitions":2,"input":["x"],"reducers":"2"}`, 400, job.EInvalid, "reducers must be an integer"},
		{"POST", "/api/v1/jobs", `{"kind":"short","partitions":2,"input":["x"]}`, 400, job.EInvalid, `kind "short" reads no data`},
		{"POST", "/api/v1/jobs", `{"kind":"grep","partitions":2,"input":["x"]}`, 400, job.EInvalid, "params.pattern is required"},
		{"POST", "/api/v1/jobs", `{"kind":"grep","partitions":2,"input":["x"],"params":{"pattern":"a("}}`, 400, job.EInvalid, "not a Go regular expression"},
		{"POST", "/api/v1/jobs", `{"kind":"grep","partitions":2,"input":["x"],"params":{"pattern":7}}`, 400, job.EInvalid, "pattern must be a non-empty string"},
		{"PUT", "/api/v1/datasets/.hidden", "x", 400, job.EInvalid, "starts with '.'"},
		{"PUT", "/api/v1/datasets/..%2F..%2Fetc", "x", 400, job.EInvalid, "dataset name"},
		// Names are store keys, split at dots: these answered 503 "try again shortly".
		{"PUT", "/api/v1/datasets/a./files/x", "x", 400, job.EInvalid, `dataset name "a." ends with '.'`},
		{"PUT", "/api/v1/datasets/a..b/files/x", "x", 400, job.EInvalid, `dataset name "a..b" has two dots in a row`},
		{"PUT", "/api/v1/kinds/a..b", "x", 400, job.EInvalid, `kind name "a..b" has two dots in a row`},
		{"POST", "/api/v1/schedules", `{"name":"nightly.","cron":"@daily","job":{"kind":"noop","partitions":1}}`, 400, job.EInvalid, `schedule name "nightly." ends with '.'`},
		{"PUT", "/api/v1/datasets/ok/files/a:b", "x", 400, job.EInvalid, `file name "a:b" has the character ':'`},
		{"PUT", "/api/v1/datasets/ok/files/a%2Cb", "x", 400, job.EInvalid, `file name "a,b" has the character ','`},
		{"PUT", "/api/v1/datasets/ok/files/a%09b", "x", 400, job.EInvalid, `file name "a\tb" has the character '\t'`},
		{"PUT", "/api/v1/datasets/ok/files/%20a", "x", 400, job.EInvalid, `file name " a" starts with a space`},
		{"PUT", "/api/v1/datasets/ok/files/a%FF", "x", 400, job.EInvalid, `is not UTF-8`},
		{"PUT", "/api/v1/datasets/ok/files/" + strings.Repeat("x", 256), "x", 400, job.EInvalid, "at most 255"},
		{"PUT", "/api/v1/datasets/ok?file=..", "x", 400, job.EInvalid, "file name"},
		{"PUT", "/api/v1/datasets/" + strings.Repeat("x", 200), "x", 400, job.EInvalid, "at most 128"},
		{"GET", "/api/v1/datasets/nope", "", 404, job.ENotFound, `dataset "nope" not found`},
		{"DELETE", "/api/v1/datasets/nope", "", 404, job.ENotFound, `dataset "nope" not found`},
		{"GET", "/api/v1/jobs/short_nope/output", "", 404, job.ENotFound, "not found"},
	} {
		t.Run(tc.method+" "+tc.path+" "+truncate(tc.body), func(t *testing.T) {
			r := b.do(t, tc.method, tc.path, tc.body)
			var e struct {
				Error struct {
					Code    job.Code `json:"code"`
					Message string   `json:"message"`
				} `json:"error"`
			}
			r.JSON(t, &e)
			if r.Status != tc.status || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
				t.Fatalf("got %d %s, want %d %s containing %q", r.Status, r.Body, tc.status, tc.code, tc.msg)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
	// Nothing of the above was stored.
	var l struct{ Jobs []client.Job }
	b.do(t, "GET", "/api/v1/jobs", "").JSON(t, &l)
	if len(l.Jobs) != 0 {
		t.Fatalf("bad requests created jobs: %+v", l.Jobs)
	}
	if r := b.do(t, "GET", "/api/v1/datasets", ""); string(r.Body) != `{"datasets":[]}`+"\n" {
		t.Fatalf("bad requests created datasets: %s", r.Body)
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func TestKindsWorkersQueueHealth(t *testing.T) {
	t.Parallel()
	blk := newBlocker()
	b := setup(t, withKinds(blk.kind()))

	var k struct {
		Kinds []struct{ Name, Description string }
	}
	b.do(t, "GET", "/api/v1/kinds", "").JSON(t, &k)
	var names []string
	for _, kk := range k.Kinds {
		names = append(names, kk.Name)
	}
	if !reflect.DeepEqual(names, []string{"block", "fail", "grep", "indexer", "long", "noop", "panic", "short", "wordcount"}) {
		t.Fatalf("kinds = %v", names)
	}

	j := b.submit(t, "block", 7)
	for range 4 {
		apitest.Recv(t, blk.started, "a block task to start")
	}
	b.await(t, j.ID, func(j client.Job) bool { return j.Tasks.Running == 4 })
	var q struct {
		Depth int              `json:"depth"`
		Jobs  []view.QueuedJob `json:"jobs"`
	}
	b.do(t, "GET", "/api/v1/queue", "").JSON(t, &q)
	if q.Depth != 3 || len(q.Jobs) != 1 || q.Jobs[0] != (view.QueuedJob{Job: j.ID, Kind: "block", Waiting: 3}) {
		t.Fatalf("queue = %+v, want 3 tasks of %s", q, j.ID)
	}
	var w struct{ Workers []job.WorkerStatus }
	b.do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
	busy := 0
	for _, ws := range w.Workers {
		if ws.Host == "" || ws.Key == "" {
			t.Errorf("worker without host or key: %+v", ws)
		}
		if ws.Busy && ws.JobID == j.ID && ws.TaskStartedAt != nil {
			busy++
		}
	}
	if len(w.Workers) != 4 || busy != 4 {
		t.Fatalf("workers = %+v, want 4 busy on %s", w.Workers, j.ID)
	}
	close(blk.release)
	b.awaitState(t, j.ID, client.Succeeded)

	if r := b.do(t, "GET", "/healthz", ""); r.Status != 200 || !strings.Contains(string(r.Body), `"status":"ok"`) {
		t.Fatalf("healthz = %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "GET", "/readyz", ""); r.Status != 200 {
		t.Fatalf("readyz = %d %s", r.Status, r.Body)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.dial(t, "/api/v1/events")
	var hello struct {
		Type string
		Data map[string]any
	}
	readJSON(t, c, &hello)
	if hello.Type != "hello" || hello.Data["workers_total"] != float64(4) {
		t.Fatalf("first event = %+v", hello)
	}
	j := b.submit(t, "noop", 3)
	var types []string
	done := map[float64]bool{}
	for {
		var ev struct {
			Type string
			Data map[string]any
		}
		readJSON(t, c, &ev)
		if id, _ := ev.Data["id"].(string); id != j.ID {
			if id, _ := ev.Data["job"].(string); id != j.ID {
				continue
			}
		}
		if len(types) == 0 || types[len(types)-1] != ev.Type {
			types = append(types, ev.Type)
		}
		if ev.Type == "task.done" {
			for _, p := range ev.Data["partitions"].([]any) {
				done[p.(float64)] = true
			}
		}
		if ev.Type == "job.succeeded" {
			if ev.Data["result"].(map[string]any)["sum"] != float64(3) {
				t.Fatalf("job.succeeded data = %v", ev.Data)
			}
			break
		}
	}
	if types[0] != "job.submitted" || len(done) != 3 {
		t.Fatalf("event types = %v, partitions done = %v; want job.submitted first and task.done for 0,1,2", types, done)
	}
	// The cluster's counts by state follow, once they changed: the page
	// shows them, not those of the jobs it loaded.
	for {
		var ev struct {
			Type string
			Data struct {
				Jobs struct{ Total, Running, Succeeded int }
			}
		}
		readJSON(t, c, &ev)
		if ev.Type == "cluster.stats" && ev.Data.Jobs.Succeeded == 1 {
			if ev.Data.Jobs.Total != 1 || ev.Data.Jobs.Running != 0 {
				t.Fatalf("cluster.stats after the job ended: %+v; want 1 job, succeeded", ev.Data.Jobs)
			}
			break
		}
	}
}

func TestOrigins(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) {
		c.AllowOrigins = append(c.AllowOrigins, "https://dash.example.com")
	})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"http://localhost:5173", true},
		{"http://127.0.0.1:8081", true},
		{"http://[::1]:3000", true},
		{"http://localhost", true},
		{"https://dash.example.com", true},
		{"http://evil.example.com", false},
		{"http://localhost.evil.com", false},
		{"http://localhost:80x", false},
		{"null", false},
	} {
		r := b.do(t, "POST", "/noop/1", "", "Origin", tc.origin)
		if tc.ok && (r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != tc.origin) {
			t.Errorf("origin %s: %d, ACAO %q; want allowed", tc.origin, r.Status, r.Header.Get("Access-Control-Allow-Origin"))
		}
		if !tc.ok && (r.Status != 403 || !strings.Contains(string(r.Body), "--allow-origin")) {
			t.Errorf("origin %s: %d %s; want 403 naming --allow-origin", tc.origin, r.Status, r.Body)
		}
	}
	r := b.do(t, "OPTIONS", "/api/v1/jobs", "", "Origin", "http://localhost:5173", "Access-Control-Request-Method", "POST")
	if r.Status != 204 || !strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight = %d %v", r.Status, r.Header)
	}
}

func TestJobTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	j := b.submit(t, "short", 5)
	b.awaitState(t, j.ID, client.Succeeded)
	var got struct {
		Tasks []struct {
			Partition  int     `json:"partition"`
			Attempt    int     `json:"attempt"`
			Worker     string  `json:"worker"`
			State      string  `json:"state"`
			DurationMS float64 `json:"duration_ms"`
			Value      int64   `json:"value"`
		} `json:"tasks"`
	}
	r := b.do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "")
	r.JSON(t, &got)
	if r.Status != 200 || len(got.Tasks) != 5 {
		t.Fatalf("tasks = %d %s, want 5", r.Status, r.Body)
	}
	for i, tk := range got.Tasks {
		if tk.Partition != i || tk.Attempt != 1 || tk.Worker == "" || tk.State != "done" || tk.Value != 1 || tk.DurationMS < 0 {
			t.Errorf("task %d = %+v", i, tk)
		}
	}
	if r := b.do(t, "GET", "/api/v1/jobs/short_nope/tasks", ""); r.Status != 404 {
		t.Fatalf("tasks of an unknown job: %d %s", r.Status, r.Body)
	}
}
