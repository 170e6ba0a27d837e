package app_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/natsx"
	mrstore "github.com/mrcluster/mrcluster/internal/store"
)

// committedOutputs names the stored reduce outputs of a data job, from its
// task history.
func committedOutputs(t *testing.T, s *natsx.Store, j client.Job) []string {
	t.Helper()
	tasks, err := s.Ports.Results.Read(apitest.Context(t), j.ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range tasks {
		rs, err := mrstore.DecodeResults(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Phase != "reduce" || r.Commit == "" {
				continue
			}
			name := mr.OutputName(j.ID, r.Partition, r.Commit)
			if _, err := s.Ports.Output.Size(apitest.Context(t), name); err == nil {
				out = append(out, name)
			} else if !errors.Is(err, mrstore.ErrNotFound) {
				t.Fatal(err)
			}
		}
	}
	return out
}

// DELETE /api/v1/jobs/{id} removes a finished job and everything it
// stored; an unfinished job is a conflict, until it is canceled.
func TestDeleteJob(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(bl.kind()) })
	c := b.client().API()
	ctx := apitest.Context(t)
	text := "one two two\nthree three three\n"
	if _, err := c.PutFile(ctx, "d", "a.txt", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	wc := b.await(t, b.client().SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"d"}, Partitions: 2, Reducers: 2}).ID, terminal)
	if wc.State != client.Succeeded {
		t.Fatalf("wordcount: %s", apitest.Describe(wc))
	}
	s := store(t, b)
	committed := committedOutputs(t, s, wc)
	if len(committed) == 0 {
		t.Fatal("the succeeded job has no stored output to delete")
	}
	history, err := s.Ports.Results.Read(ctx, wc.ID, 1000)
	if err != nil || len(history) == 0 {
		t.Fatalf("task history before the delete: %d messages, %v", len(history), err)
	}

	r := b.do(t, http.MethodDelete, "/api/v1/jobs/"+wc.ID, "")
	if r.Status != http.StatusNoContent {
		t.Fatalf("DELETE a succeeded job: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, http.MethodGet, "/api/v1/jobs/"+wc.ID, ""); r.Status != http.StatusNotFound {
		t.Fatalf("GET a deleted job: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, http.MethodGet, "/api/v1/jobs/"+wc.ID+"/tasks", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the task history of a deleted job: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, http.MethodDelete, "/api/v1/jobs/"+wc.ID, ""); r.Status != http.StatusNotFound {
		t.Fatalf("DELETE a deleted job: %d %s", r.Status, r.Body)
	}
	if history, err := s.Ports.Results.Read(ctx, wc.ID, 1000); err != nil || len(history) != 0 {
		t.Fatalf("task history after the delete: %d messages, %v", len(history), err)
	}
	for _, name := range committed {
		if _, err := s.Ports.Output.Size(ctx, name); !errors.Is(err, mrstore.ErrNotFound) {
			t.Fatalf("output %s of a deleted job: %v; want it gone", name, err)
		}
	}
	// Nothing of them: no marker of a deleted object either (the
	// library's delete left one per object, for good).
	outs, err := s.JS.Stream(ctx, "OBJ_"+natsx.OutputBucket)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := outs.Info(ctx, jetstream.WithSubjectFilter("$O."+natsx.OutputBucket+".>")); err != nil || len(info.State.Subjects) != 0 {
		t.Fatalf("the outputs' stream holds %v after the only job with outputs was deleted (%v); want nothing", info.State.Subjects, err)
	}
	running := b.submit(t, "block", 1)
	apitest.Recv(t, bl.started, "a block task to start")
	err = c.Delete(ctx, running.ID)
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, "cancel it first") {
		t.Fatalf("DELETE an unfinished job: %v; want 409 saying to cancel it first", err)
	}
	if _, err := c.Cancel(ctx, running.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, running.ID); err != nil {
		t.Fatalf("DELETE a canceled job: %v", err)
	}
	if _, err := c.Job(ctx, running.ID); !client.IsNotFound(err) {
		t.Fatalf("a deleted job: %v; want not found", err)
	}

	// Listing and deleting page by page: the next page's cursor names a
	// job deleted meanwhile.
	var ids []string
	for range 4 {
		ids = append(ids, b.await(t, b.submit(t, "noop", 1).ID, terminal).ID)
	}
	first, err := c.Jobs(ctx, client.ListOptions{Limit: 2})
	if err != nil || len(first.Jobs) != 2 || first.NextCursor != ids[2] {
		t.Fatalf("the first page: %+v %v; want the 2 newest", first, err)
	}
	for _, j := range first.Jobs {
		if err := c.Delete(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
	}
	next, err := c.Jobs(ctx, client.ListOptions{Limit: 2, Cursor: first.NextCursor})
	if err != nil || len(next.Jobs) != 2 || next.Jobs[0].ID != ids[1] || next.Jobs[1].ID != ids[0] {
		t.Fatalf("the page after a deleted cursor: %+v %v; want the 2 oldest", next, err)
	}
}

// awaitDeleted returns once job id reads as not found, looking again at
// every event.
func awaitDeleted(ctx context.Context, t *testing.T, c *client.Client, events *client.Events, id string) {
	t.Helper()
	for {
		if _, err := c.Job(ctx, id); client.IsNotFound(err) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
		if _, err := events.Next(ctx); err != nil {
			t.Fatalf("job %s still there: %v", id, err)
		}
	}
}

// A finished job is deleted, with its history, once its retention passed;
// its resource says when that will be.
func TestRetentionDeletesFinishedJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Retention = time.Second; c.ForgetDeletedAfter = 200 * time.Millisecond })
	j := b.await(t, b.submit(t, "noop", 2).ID, terminal)
	if j.State != client.Succeeded || j.FinishedAt == nil || j.ExpiresAt == nil || !j.ExpiresAt.Equal(j.FinishedAt.Add(time.Second)) {
		t.Fatalf("finished job: %s, finished %v, expires %v; want expiry a second after the end", j.State, j.FinishedAt, j.ExpiresAt)
	}
	c := b.client().API()
	ctx := apitest.Context(t)
	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	awaitDeleted(ctx, t, c, events, j.ID)
	if time.Now().Before(*j.ExpiresAt) {
		t.Fatalf("job %s deleted before it expired at %v", j.ID, j.ExpiresAt)
	}
	s := store(t, b)
	if history, err := s.Ports.Results.Read(ctx, j.ID, 10); err != nil || len(history) != 0 {
		t.Fatalf("task history of an expired job: %d messages, %v", len(history), err)
	}
	// The marker its deletion left in the jobs bucket is purged once every
	// read model had the time to see it: nothing of the job stays.
	jobs, err := s.JS.Stream(ctx, "KV_"+natsx.JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := jobs.Info(ctx, jetstream.WithSubjectFilter("$KV."+natsx.JobsBucket+"."+j.ID))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.State.Subjects) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the jobs bucket still holds %v for deleted job %s", info.State.Subjects, j.ID)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Its results came in messages of the shared subject (a small job's
	// history is in its record): applied, they leave the stream within
	// the coordinator's purge period (10 s), not after the stream's 7 days.
	for {
		shared, err := s.Ports.Results.Read(ctx, "shared", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(shared) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the results stream still holds %d shared messages after job %s was deleted", len(shared), j.ID)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// A data job that fails leaves no output behind: the reduce outputs that
// were committed before its failure are deleted.
func TestFailedDataJobLeavesNoOutput(t *testing.T) {
	t.Parallel()
	k, _, _ := countKind("failreduce", nil, func(ctx context.Context, key []byte) error {
		if string(key) == "gamma" {
			// The other reduces commit first.
			if err := pause(ctx, 500*time.Millisecond); err != nil {
				return err
			}
			return errors.New("gamma cannot be counted")
		}
		return nil
	})
	b := setup(t, func(c *app.Config) { c.MaxAttempts = 1; c.Kinds = testKinds(k) })
	c := b.client().API()
	ctx := apitest.Context(t)
	var text strings.Builder
	for i := range 40 {
		fmt.Fprintf(&text, "alpha beta gamma delta w%d\n", i)
	}
	if _, err := c.PutFile(ctx, "d", "a.txt", strings.NewReader(text.String()), int64(text.Len())); err != nil {
		t.Fatal(err)
	}
	j := b.await(t, b.client().SubmitSpec(t, client.Spec{Kind: "failreduce", Input: []string{"d"}, Partitions: 2, Reducers: 4}).ID, terminal)
	if j.State != client.Failed || !strings.Contains(j.Error, "gamma") {
		t.Fatalf("job: %s", apitest.Describe(j))
	}
	s := store(t, b)
	tasks, err := s.Ports.Results.Read(ctx, j.ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range tasks {
		rs, _ := mrstore.DecodeResults(m)
		for _, r := range rs {
			if r.Phase == "reduce" && r.Commit != "" && r.Error == "" {
				names = append(names, mr.OutputName(j.ID, r.Partition, r.Commit))
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("no reduce of the job stored an output before it failed; the test proves nothing")
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range names {
		for {
			_, err := s.Ports.Output.Size(ctx, name)
			if errors.Is(err, mrstore.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("output %s of a failed job is still stored 10 s after it failed (%v)", name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// A server keeps only --recent-jobs finished jobs whole in memory: the
// others answer from the store, in GET, in the list and in its pages,
// exactly as the newest do.
func TestFinishedJobsBeyondTheRecentOnesAnswerFromTheStore(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.RecentJobs = 2 })
	ctx := apitest.Context(t)
	c := b.client().API()
	var ids []string
	for i := range 6 {
		j := b.client().SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 1 + i})
		ids = append(ids, b.await(t, j.ID, terminal).ID)
	}
	for i, id := range ids {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Fatalf("GET job %d of 6: %v", i, err)
		}
		if j.State != client.Succeeded || j.Tasks.Done != i+1 || j.Result == nil || j.ExpiresAt == nil {
			t.Fatalf("job %d of 6, read back: %s", i, apitest.Describe(j))
		}
	}
	var listed []client.Job
	cursor := ""
	for {
		page, err := c.Jobs(ctx, client.ListOptions{Limit: 4, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, page.Jobs...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(listed) != len(ids) {
		t.Fatalf("listed %d jobs in pages of 4, want %d", len(listed), len(ids))
	}
	for i, j := range listed {
		if want := ids[len(ids)-1-i]; j.ID != want || j.State != client.Succeeded || j.Tasks.Total != len(ids)-i {
			t.Fatalf("listed[%d] = %s, want %s, succeeded, newest first", i, apitest.Describe(j), want)
		}
	}
	if err := c.Delete(ctx, ids[0]); err != nil {
		t.Fatalf("delete the oldest job, which the server does not hold: %v", err)
	}
	var apiErr *client.Error
	if _, err := c.Job(ctx, ids[0]); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("GET a deleted job: %v, want not found", err)
	}
}

// A server that stops before it purged the marker of a job it deleted
// leaves it stored; the next server to start on that store purges it.
func TestMarkersLeftByAStoppedServerArePurged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := setup(t, func(c *app.Config) { c.DataDir = dir; c.ForgetDeletedAfter = time.Hour })
	j := b.await(t, b.submit(t, "noop", 1).ID, terminal)
	ctx := apitest.Context(t)
	if err := b.client().API().Delete(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	subjects := func(b *bundle) map[string]uint64 {
		t.Helper()
		jobs, err := store(t, b).JS.Stream(ctx, "KV_"+natsx.JobsBucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := jobs.Info(ctx, jetstream.WithSubjectFilter("$KV."+natsx.JobsBucket+"."+j.ID))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	if len(subjects(b)) != 1 {
		t.Fatalf("no marker stored for deleted job %s: %v", j.ID, subjects(b))
	}
	if err := b.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b = setup(t, func(c *app.Config) { c.DataDir = dir; c.ForgetDeletedAfter = 200 * time.Millisecond })
	for len(subjects(b)) > 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("the marker of job %s is still stored after a restart", j.ID)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// A finished job's record leaves the jobs bucket ArchiveAfter after it
// finished, with its subject (JetStream's memory per job), and is served
// from the archive: read, listed, its output, a retry and a delete, and
// after a restart.
func TestFinishedJobsAreArchived(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bl := newBlocker()
	opts := func(c *app.Config) {
		c.DataDir, c.ArchiveAfter, c.RecentJobs, c.Kinds = dir, time.Second, 1, testKinds(bl.kind())
	}
	b := setup(t, opts)
	c := b.client().API()
	ctx := apitest.Context(t)
	b.client().PutFile(t, "d", "a.txt", []byte("one two two\nthree three three\n"))
	wc := b.await(t, b.client().SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"d"}, Partitions: 2, Reducers: 2}).ID, terminal)
	want := b.client().Output(t, wc.ID)
	if wc.State != client.Succeeded || !strings.Contains(want, "three") {
		t.Fatalf("wordcount: %s, output %q", apitest.Describe(wc), want)
	}
	blocked := b.submit(t, "block", 1)
	apitest.Recv(t, bl.started, "a block task to start")
	if _, err := c.Cancel(ctx, blocked.ID); err != nil {
		t.Fatal(err)
	}
	canceled := b.awaitState(t, blocked.ID, client.Canceled)
	var noops []string
	for range 3 {
		noops = append(noops, b.await(t, b.submit(t, "noop", 2).ID, terminal).ID)
	}
	ids := append([]string{wc.ID, canceled.ID}, noops...)

	inBucket := func(b *bundle) []string {
		t.Helper()
		st, err := store(t, b).JS.Stream(ctx, "KV_"+natsx.JobsBucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("$KV."+natsx.JobsBucket+".>"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, id := range ids {
			if _, ok := info.State.Subjects["$KV."+natsx.JobsBucket+"."+id]; ok {
				out = append(out, id)
			}
		}
		return out
	}
	for left := inBucket(b); len(left) > 0; left = inBucket(b) {
		select {
		case <-ctx.Done():
			t.Fatalf("finished jobs still in the jobs bucket: %v", left)
		case <-time.After(100 * time.Millisecond):
		}
	}

	check := func(b *bundle, when string) {
		t.Helper()
		for _, id := range ids {
			j := b.job(t, id)
			if !j.State.Terminal() || j.FinishedAt == nil {
				t.Fatalf("%s: job %s reads %s", when, id, apitest.Describe(j))
			}
		}
		if got := b.client().Output(t, wc.ID); got != want {
			t.Fatalf("%s: the output reads %q, want %q", when, got, want)
		}
		page, err := c.Jobs(ctx, client.ListOptions{State: client.Succeeded})
		if err != nil || len(page.Jobs) != 1+len(noops) {
			t.Fatalf("%s: succeeded jobs listed: %+v, %v", when, page, err)
		}
	}
	check(b, "once archived")

	// A retry brings the canceled job back into the bucket, in its next
	// epoch; canceled again, it is archived again.
	if _, err := c.Retry(ctx, canceled.ID); err != nil {
		t.Fatalf("retry an archived job: %v", err)
	}
	apitest.Recv(t, bl.started, "a block task to start")
	if j := b.awaitState(t, canceled.ID, client.Running); j.Retries != 1 {
		t.Fatalf("the retried job: %s; want 1 retry", apitest.Describe(j))
	}
	if _, err := c.Cancel(ctx, canceled.ID); err != nil {
		t.Fatal(err)
	}
	b.awaitState(t, canceled.ID, client.Canceled)
	if err := c.Delete(ctx, noops[0]); err != nil {
		t.Fatalf("delete an archived job: %v", err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return id == noops[0] })
	if _, err := c.Job(ctx, noops[0]); !client.IsNotFound(err) {
		t.Fatalf("a deleted archived job: %v; want not found", err)
	}
	noops = noops[1:]
	check(b, "after a retry and a delete")

	// After a restart, the same.
	if err := b.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b = setup(t, opts)
	c = b.client().API()
	check(b, "after a restart")
	if j := b.job(t, canceled.ID); j.State != client.Canceled || j.Retries != 1 {
		t.Fatalf("the retried job after a restart: %s", apitest.Describe(j))
	}
	if _, err := c.Job(ctx, wc.ID); err != nil {
		t.Fatal(err)
	}
	page, err := c.Jobs(ctx, client.ListOptions{})
	if err != nil || len(page.Jobs) != len(ids) {
		t.Fatalf("jobs listed after a restart: %d, %v; want %d (the deleted one not back)", len(page.Jobs), err, len(ids))
	}
}

// With --archive-after 0 a finished job's record stays in the jobs bucket
// and nothing is appended to the archive.
func TestArchiveOff(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.ArchiveAfter = 0 })
	ctx := apitest.Context(t)
	j := b.await(t, b.submit(t, "noop", 1).ID, terminal)
	s := store(t, b)
	if e, err := s.Ports.Jobs.KV.Get(ctx, j.ID); err != nil || !strings.Contains(string(e.Value), `"succeeded"`) {
		t.Fatalf("the finished record in the bucket: %v", err)
	}
	st, err := s.JS.Stream(ctx, natsx.ArchiveStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("the archive holds %+v, %v; want nothing", info.State, err)
	}
}
