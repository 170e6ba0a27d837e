package main

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
)

// What the server answered before it was killed with SIGKILL holds after
// it starts again: a deleted job stays deleted, a canceled one canceled
// (its tasks that were running do not bring it back), a paused kind stays
// paused with its new job waiting until it is resumed, and a job retried
// after its cancel runs to its end.
func TestCommandsAnsweredBeforeASIGKILLHold(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--sleep-scale", "0.4", "--ack-wait", "2s", "--workers", "2"}
	p := start(t, dir, nil, args...)
	c := p.client()
	api := c.API()
	ctx := apitest.Context(t)
	terminal := func(j client.Job) bool { return j.State.Terminal() }

	gone := c.Submit(t, "noop", 3)
	c.Await(t, gone.ID, terminal)
	// The job to retry is canceled while its kind is paused, so that it
	// cannot end by itself first (its tasks may sleep no time at all).
	if _, err := api.PauseKind(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	retried := c.Submit(t, "long", 2)
	if _, err := api.Cancel(ctx, retried.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := api.ResumeKind(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	canceled := c.Submit(t, "long", 6)
	c.Await(t, canceled.ID, func(j client.Job) bool { return j.Tasks.Running > 0 })
	if _, err := api.Cancel(ctx, canceled.ID); err != nil {
		t.Fatal(err)
	}
	if err := api.Delete(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := api.PauseKind(ctx, "short"); err != nil {
		t.Fatal(err)
	}
	held := c.Submit(t, "short", 2)
	if _, err := api.Retry(ctx, retried.ID); err != nil {
		t.Fatal(err)
	}
	p.kill(t)

	p2 := start(t, dir, nil, args...)
	c2 := p2.client()
	api = c2.API()
	if r := c2.Do(t, "GET", "/api/v1/jobs/"+gone.ID, ""); r.Status != http.StatusNotFound {
		t.Fatalf("the job deleted before the crash: %d %s", r.Status, r.Body)
	}
	if j := c2.Await(t, retried.ID, terminal); j.State != client.Succeeded || !reflect.DeepEqual(j.Result.Values, apitest.Values(2, 5)) {
		t.Fatalf("the job retried before the crash: %s", apitest.Describe(j))
	}
	if j := c2.Job(t, canceled.ID); j.State != client.Canceled {
		t.Fatalf("the job canceled before the crash: %s", apitest.Describe(j))
	}
	if j := c2.Job(t, held.ID); j.State != client.Queued || !j.Paused {
		t.Fatalf("the job of the kind paused before the crash: %s (paused %v)", apitest.Describe(j), j.Paused)
	}
	kinds, err := api.Kinds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if k.Name == "short" && !k.Paused {
			t.Fatalf("kind short after the crash: %+v, want it paused", k)
		}
	}
	if _, err := api.ResumeKind(ctx, "short"); err != nil {
		t.Fatal(err)
	}
	if j := c2.Await(t, held.ID, terminal); j.State != client.Succeeded {
		t.Fatalf("the paused kind's job once resumed: %s", apitest.Describe(j))
	}
	// The canceled job's tasks that ran at the crash have had their
	// leases run out and been dropped, not run into a result.
	if j := c2.Job(t, canceled.ID); j.State != client.Canceled {
		t.Fatalf("the job canceled before the crash, once the others ended: %s", apitest.Describe(j))
	}
	var l struct{ Jobs []client.Job }
	c2.Do(t, "GET", "/api/v1/jobs?limit=500", "").JSON(t, &l)
	for _, j := range l.Jobs {
		if j.ID == gone.ID {
			t.Fatalf("the deleted job is listed again: %s", apitest.Describe(j))
		}
	}
}
