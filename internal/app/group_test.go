package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// echo is a kind whose task returns its params' "v", fails when they ask
// it to, and notes what its code was given.
type echo struct {
	mu   sync.Mutex
	seen map[string]job.Task // by the job id the code saw
	// release, when made, ends the runs of jobs with "hold" set.
	release chan struct{}
}

func (e *echo) kind() job.Kind {
	return job.Kind{Name: "echo", Map: func(ctx context.Context, t job.Task) (int64, error) {
		e.mu.Lock()
		if e.seen == nil {
			e.seen = map[string]job.Task{}
		}
		e.seen[t.Job] = t
		e.mu.Unlock()
		var p struct {
			V    int64 `json:"v"`
			Fail bool  `json:"fail"`
			Hold bool  `json:"hold"`
		}
		if err := json.Unmarshal(t.Params, &p); err != nil {
			return 0, err
		}
		if p.Hold {
			select {
			case <-e.release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		if p.Fail {
			return 0, errors.New("asked to fail")
		}
		return p.V, nil
	}}
}

func echoSpecs(n int, fail int) []client.Spec {
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Kind: "echo", Partitions: 1, Params: map[string]any{"v": i, "fail": i == fail}, MaxAttempts: 1}
	}
	return specs
}

// With --group-batches a batch's small jobs are stored in groups, and each
// is still a job of its own to its client: its id, its result, its
// failure, its task history, the list, a replay of its batch's key.
func TestBatchedJobsRunInGroups(t *testing.T) {
	t.Parallel()
	var e echo
	b := setup(t, func(c *app.Config) { c.GroupBatches = true; c.Kinds = testKinds(e.kind()) })
	c := b.client().API()
	ctx := apitest.Context(t)
	specs := echoSpecs(job.MaxGroup+44, 7)
	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	jobs, err := c.SubmitBatchWithKey(ctx, specs, "the-batch")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(jobs))
	groups := map[string]bool{}
	for i, j := range jobs {
		ids[i] = j.ID
		g, n, ok := job.GroupOf(j.ID)
		if !ok || j.Kind != "echo" || j.Partitions != 1 || j.State != client.Queued {
			t.Fatalf("job %d of the batch: %s (group %v)", i, apitest.Describe(j), ok)
		}
		if want := i%job.MaxGroup + 1; n != want {
			t.Fatalf("job %d is member %d of its group, want %d", i, n, want)
		}
		groups[g] = true
	}
	if len(groups) != 2 {
		t.Fatalf("%d jobs in %d groups, want 2", len(jobs), len(groups))
	}
	eventsNameJobsOnly(ctx, t, events, len(ids))
	done, err := c.WaitAll(ctx, ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range done {
		switch {
		case i == 7:
			if j.State != client.Failed || !strings.Contains(j.Error, "asked to fail") || !strings.Contains(j.Error, "attempt 1 of 1") {
				t.Fatalf("the job asked to fail: %s", apitest.Describe(j))
			}
		case j.State != client.Succeeded || j.Result == nil || j.Result.Sum != int64(i) || j.Tasks.Done != 1 || j.StartedAt == nil || j.FinishedAt == nil:
			t.Fatalf("job %d: %s", i, apitest.Describe(j))
		}
	}
	e.mu.Lock()
	for i, id := range ids {
		if task, ok := e.seen[id]; !ok || task.Partition != 0 || task.Partitions != 1 || task.Member != "" {
			t.Fatalf("the code of job %d (%s) saw %+v (seen: %v)", i, id, task, ok)
		}
	}
	e.mu.Unlock()

	// Each is listed once, and nothing else is.
	list, err := c.Jobs(ctx, client.ListOptions{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != len(ids) {
		t.Fatalf("%d jobs listed, want %d", len(list.Jobs), len(ids))
	}
	for _, j := range list.Jobs {
		if _, _, ok := job.GroupOf(j.ID); !ok {
			t.Fatalf("listed a job that is not of the batch: %s", apitest.Describe(j))
		}
	}
	tasks, err := c.Tasks(ctx, ids[3])
	if err != nil || len(tasks) != 1 || tasks[0].Job != ids[3] || tasks[0].Partition != 0 || tasks[0].Value != 3 || tasks[0].State != "done" {
		t.Fatalf("tasks of a job of a group: %+v %v", tasks, err)
	}
	again, err := c.SubmitBatchWithKey(ctx, specs, "the-batch")
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range again {
		if j.ID != ids[i] || j.State != done[i].State {
			t.Fatalf("the batch sent again with its key: job %d is %s, want %s", i, apitest.Describe(j), ids[i])
		}
	}

	// A failed job of a group is retried on its own: it gets a record of
	// its own, with its history, and runs again (and fails again).
	retried, err := c.Retry(ctx, ids[7])
	if err != nil || retried.ID != ids[7] || retried.Retries != 1 || retried.State.Terminal() {
		t.Fatalf("retry of a failed job of a group: %s %v", apitest.Describe(retried), err)
	}
	if j := b.await(t, ids[7], func(j client.Job) bool { return j.Retries == 1 && j.State.Terminal() }); j.State != client.Failed {
		t.Fatalf("the retried job: %s", apitest.Describe(j))
	}
	if tasks, err := c.Tasks(ctx, ids[7]); err != nil || len(tasks) != 2 || tasks[0].Job != ids[7] || tasks[1].Job != ids[7] {
		t.Fatalf("the history of the retried job: %+v %v", tasks, err)
	}
	r := b.do(t, http.MethodPost, "/api/v1/jobs/"+ids[8]+"/retry", "")
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "succeeded") {
		t.Fatalf("retry of a succeeded job of a group: %d %s", r.Status, r.Body)
	}
	// A job of a group is deleted on its own; the others stay.
	if err := c.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Job(ctx, ids[1]); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("a deleted job of a group read back: %v", err)
	}
	if j := b.job(t, ids[2]); j.State != client.Succeeded {
		t.Fatalf("the next job of its group after a delete: %s", apitest.Describe(j))
	}
	group, _, _ := job.GroupOf(ids[0])
	r = b.do(t, http.MethodGet, "/api/v1/jobs/"+group, "")
	if r.Status != http.StatusNotFound {
		t.Fatalf("GET of a group's own id: %d %s", r.Status, r.Body)
	}
	rerun, err := c.Rerun(ctx, ids[7])
	if err != nil || rerun.RerunOf != ids[7] || !strings.Contains(string(rerun.Params), `"v":7`) {
		t.Fatalf("rerun of a job of a group: %s %v (rerun_of %q, params %v)", apitest.Describe(rerun), err, rerun.RerunOf, rerun.Params)
	}
}

// eventsNameJobsOnly reads events until n jobs of groups have ended,
// and fails on an event of a job that is not a group's member (a group's
// own id) or on a second end of one.
func eventsNameJobsOnly(ctx context.Context, t *testing.T, events *client.Events, n int) {
	t.Helper()
	ended := map[string]bool{}
	for len(ended) < n {
		ev, err := events.Next(ctx)
		if err != nil {
			t.Fatalf("events, %d of %d jobs ended: %v", len(ended), n, err)
		}
		var j client.Job
		if !strings.HasPrefix(ev.Type, "job.") || json.Unmarshal(ev.Data, &j) != nil {
			continue
		}
		if !job.IsMember(j.ID) {
			t.Fatalf("a %s event of %s, which is no job of a batch: %s", ev.Type, j.ID, apitest.Describe(j))
		}
		if j.State.Terminal() {
			if ended[j.ID] {
				t.Fatalf("a second end of job %s: %s", j.ID, ev.Type)
			}
			ended[j.ID] = true
		}
	}
}

// A job of a group is canceled on its own: its task stops, and the
// others of its group run on.
func TestAJobOfAGroupIsCanceledAlone(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, func(c *app.Config) { c.GroupBatches = true; c.Kinds = testKinds(bl.kind()) })
	c := b.client().API()
	ctx := apitest.Context(t)
	specs := make([]client.Spec, 3)
	for i := range specs {
		specs[i] = client.Spec{Kind: "block", Partitions: 1}
	}
	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	jobs, err := c.SubmitBatch(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	for range specs {
		<-bl.started
	}
	running := b.awaitState(t, jobs[1].ID, client.Running)
	if running.Tasks.Running != 1 {
		t.Fatalf("a running job of a group: %s", apitest.Describe(running))
	}
	canceled, err := c.Cancel(ctx, jobs[1].ID)
	if err != nil || canceled.State != client.Canceled {
		t.Fatalf("cancel: %s %v", apitest.Describe(canceled), err)
	}
	<-bl.canceled // its task was stopped
	close(bl.release)
	for _, i := range []int{0, 2} {
		if j := b.await(t, jobs[i].ID, terminal); j.State != client.Succeeded {
			t.Fatalf("job %d of the group: %s", i, apitest.Describe(j))
		}
	}
	if j := b.job(t, jobs[1].ID); j.State != client.Canceled {
		t.Fatalf("the canceled job once the others ended: %s", apitest.Describe(j))
	}
	eventsNameJobsOnly(ctx, t, events, len(jobs))
	if _, err := c.Cancel(ctx, jobs[0].ID); err == nil || !strings.Contains(err.Error(), "already succeeded") {
		t.Fatalf("cancel of a succeeded job of a group: %v", err)
	}
}

// Single submits that come together are stored together, in groups (the
// submits without an Idempotency-Key): each is answered its own job, run
// with its own params.
func TestSingleSubmitsAreGathered(t *testing.T) {
	t.Parallel()
	var e echo
	b := setup(t, func(c *app.Config) { c.SubmitRate = 0; c.Kinds = testKinds(e.kind()) })
	c := b.client().API()
	ctx := apitest.Context(t)
	specs := echoSpecs(64, 5)
	ids, grouped := idsOf(submitAtOnce(ctx, t, c, specs, func(int) string { return "" }))
	if grouped == 0 {
		t.Fatal("64 submits at once, none stored in a group")
	}
	done, err := c.WaitAll(ctx, ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range done {
		if i == 5 {
			if j.State != client.Failed {
				t.Fatalf("the job asked to fail: %s", apitest.Describe(j))
			}
			continue
		}
		if j.ID != ids[i] || j.State != client.Succeeded || j.Result == nil || j.Result.Sum != int64(i) {
			t.Fatalf("job %d of 64 submitted at once: %s", i, apitest.Describe(j))
		}
	}
	t.Logf("%d of 64 submits stored in groups", grouped)
}

// submitAtOnce submits each of specs in a request of its own, all at
// once, spec i with Idempotency-Key key(i) ("" for none).
func submitAtOnce(ctx context.Context, t *testing.T, c *client.Client, specs []client.Spec, key func(i int) string) []client.Job {
	t.Helper()
	jobs := make([]client.Job, len(specs))
	errs := make(chan error, len(specs))
	for i, s := range specs {
		go func() {
			var err error
			jobs[i], err = c.SubmitWithKey(ctx, s, key(i))
			errs <- err
		}()
	}
	for range specs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return jobs
}

// idsOf returns the ids of jobs, and how many of them are a group's.
func idsOf(jobs []client.Job) (ids []string, grouped int) {
	ids = make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
		if job.IsMember(j.ID) {
			grouped++
		}
	}
	return ids, grouped
}

// Single submits with Idempotency-Keys (the Go client's and the CLI's
// default) are gathered too: each key names its own job of a group, and
// the same requests again, gathered or not, are answered those jobs.
func TestKeyedSingleSubmitsAreGathered(t *testing.T) {
	t.Parallel()
	var e echo
	b := setup(t, func(c *app.Config) { c.SubmitRate = 0; c.Kinds = testKinds(e.kind()) })
	c := b.client().API()
	ctx := apitest.Context(t)
	specs := echoSpecs(64, -1)
	key := func(i int) string { return fmt.Sprintf("gathered-%d", i) }
	ids, grouped := idsOf(submitAtOnce(ctx, t, c, specs, key))
	if grouped == 0 {
		t.Fatal("64 keyed submits at once, none stored in a group")
	}
	for i, j := range submitAtOnce(ctx, t, c, specs, key) {
		if j.ID != ids[i] {
			t.Fatalf("keyed submit %d sent again: job %s, want %s", i, j.ID, ids[i])
		}
	}
	done, err := c.WaitAll(ctx, ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range done {
		if j.State != client.Succeeded || j.Result == nil || j.Result.Sum != int64(i) {
			t.Fatalf("keyed job %d of 64 submitted at once: %s", i, apitest.Describe(j))
		}
	}
	list, err := c.Jobs(ctx, client.ListOptions{Limit: 500})
	if err != nil || len(list.Jobs) != len(ids) {
		t.Fatalf("%d jobs listed, want %d (each request stored once): %v", len(list.Jobs), len(ids), err)
	}
	t.Logf("%d of 64 keyed submits stored in groups", grouped)
}

// A cancel of many jobs of a few groups cancels every one: the commands
// on one group's jobs are written together.
func TestCancelOfManyJobsOfGroups(t *testing.T) {
	t.Parallel()
	var e echo
	b := setup(t, func(c *app.Config) { c.Workers = 0; c.Kinds = testKinds(e.kind()) })
	c := b.client().API()
	ctx := apitest.Context(t)
	jobs, err := c.SubmitBatch(ctx, echoSpecs(600, -1))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.CancelJobs(ctx, "echo", client.Queued)
	if err != nil || len(got.Canceled) != len(jobs) || len(got.Failed) != 0 {
		t.Fatalf("cancel of %d queued jobs of groups: %d canceled, failed %+v, %v", len(jobs), len(got.Canceled), got.Failed, err)
	}
	for i, j := range jobs {
		if got.Canceled[i] != j.ID {
			t.Fatalf("canceled[%d] = %s, want %s (oldest first)", i, got.Canceled[i], j.ID)
		}
		if j := b.job(t, j.ID); j.State != client.Canceled {
			t.Fatalf("job %d after the cancel: %s", i, apitest.Describe(j))
		}
	}
	q, err := c.Queue(ctx)
	if err != nil || q.Depth != 0 {
		t.Fatalf("the queue after every job was canceled: %+v %v", q, err)
	}
	// Their groups ended: the tasks of the canceled jobs left the queue.
	s := store(t, b)
	tasks, err := s.JS.Stream(ctx, natsx.TasksStream)
	if err != nil {
		t.Fatal(err)
	}
	groups := map[string]bool{}
	for _, j := range jobs {
		g, _, _ := job.GroupOf(j.ID)
		groups[g] = true
	}
	for {
		info, err := tasks.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for subject, n := range info.State.Subjects {
			if i := strings.LastIndexByte(subject, '.'); groups[subject[i+1:]] {
				left = append(left, fmt.Sprintf("%s: %d", subject, n))
			}
		}
		if len(left) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tasks of canceled jobs still queued: %v", left)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
