package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// books returns the test corpus (see kinds.Corpus), copies times over
// (13 MB at 4).
func books(t *testing.T, copies int) []kinds.Doc {
	t.Helper()
	docs, source := kinds.Corpus(copies)
	t.Logf("corpus: %s", source)
	return docs
}

func upload(t *testing.T, c apitest.Client, ds string, docs []kinds.Doc) {
	t.Helper()
	for _, d := range docs {
		c.PutFile(t, ds, d.Name, d.Data)
	}
}

// busyIn reports whether a worker of pool is running a task of job id.
func busyIn(t *testing.T, c apitest.Client, pool, id string) bool {
	var w struct{ Workers []job.WorkerStatus }
	c.Do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
	for _, s := range w.Workers {
		if s.Pool == pool && s.Busy && s.JobID == id {
			return true
		}
	}
	return false
}

var workerReady = regexp.MustCompile(`^mrcluster worker .* running`)

// A wordcount completes with exactly the sequential output while one of
// its two worker processes is killed with SIGKILL three times, each time
// in the middle of a task, and restarted.
func TestWordCountSurvivesKilledWorkers(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0", "--ack-wait", "2s", "--backup-after", "0")
	c := p.client()
	docs := books(t, 4)
	upload(t, c, "books", docs)
	worker := func(name string) *proc {
		w, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", name)
		return w
	}
	worker("steady")
	victim := worker("victim")
	j := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 16, Reducers: 3})
	for kill := range 3 {
		c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() || busyIn(t, c, "victim", j.ID) })
		if now := c.Job(t, j.ID); now.State.Terminal() {
			t.Fatalf("the job ended after %d kills, before the test could kill a busy worker: make it longer", kill)
		}
		victim.kill(t)
		victim = worker("victim")
	}
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Succeeded {
		t.Fatalf("wordcount after killed workers: %s", apitest.Describe(j))
	}
	if got, want := c.Output(t, j.ID), kinds.SeqWordCount(docs); got != want {
		t.Fatalf("the output differs from the sequential count (%d against %d bytes)", len(got), len(want))
	}
	// The killed workers' tasks ran again elsewhere: attempts beyond the first.
	var h struct{ Tasks []job.TaskResult }
	c.Do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "").JSON(t, &h)
	again := 0
	for _, r := range h.Tasks {
		if r.Attempt > 1 {
			again++
		}
	}
	if again == 0 {
		t.Fatalf("no task ran twice, yet busy workers were killed: %+v", h.Tasks)
	}
}

// The only server, with its in-process workers, is killed with SIGKILL in
// the middle of a wordcount's map phase and started again on the same data
// directory: the job completes with the sequential output.
func TestWordCountSurvivesServerKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := start(t, dir, nil, "--ack-wait", "2s")
	c := p.client()
	docs := books(t, 4)
	upload(t, c, "books", docs)
	j := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 16, Reducers: 3})
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() || j.Tasks.Done >= 2 })
	if j.State.Terminal() || j.Phase != string(job.PhaseMap) {
		t.Fatalf("the job got past its map phase before the kill (%s): make it longer", apitest.Describe(j))
	}
	p.kill(t)
	p = start(t, dir, nil, "--ack-wait", "2s")
	c = p.client()
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Succeeded {
		t.Fatalf("wordcount after a server kill: %s", apitest.Describe(j))
	}
	if got, want := c.Output(t, j.ID), kinds.SeqWordCount(docs); got != want {
		t.Fatalf("the output differs from the sequential count (%d against %d bytes)", len(got), len(want))
	}
	if !strings.HasPrefix(c.Output(t, j.ID), strings.Join(j.Preview, "\n")) {
		t.Fatalf("preview %q", j.Preview)
	}
}
