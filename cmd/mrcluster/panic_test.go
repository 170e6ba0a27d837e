package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/view"
)

// ownKinds points the package's binary at testdata/ownkinds, a program of
// one's own on the public mapreduce API, for the rest of the test. Tests
// that use it are not parallel: the parallel ones, which run after all
// others, never see the switch.
func ownKinds(t *testing.T) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ownkinds")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, "./testdata/ownkinds").CombinedOutput(); err != nil {
		t.Fatalf("build testdata/ownkinds: %v\n%s", err, out)
	}
	saved := binary
	binary = bin
	t.Cleanup(func() { binary = saved })
}

// A kind whose map always panics, run as a server and a separate worker
// process: its job fails after --max-attempts with the panic's message,
// and the worker process lives on and runs the next job.
func TestPanickingKindFailsItsJobNotTheWorker(t *testing.T) {
	ownKinds(t)
	p := start(t, t.TempDir(), nil, "--workers", "0", "--max-attempts", "2", "--retry-backoff", "10ms")
	w, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "w", "--retry-backoff", "10ms")
	c := p.client()
	c.PutFile(t, "in", "a.txt", []byte("one line\nanother\n"))
	j := c.SubmitSpec(t, map[string]any{"kind": "panics", "input": []string{"in"}, "partitions": 2, "reducers": 1})
	j = c.Await(t, j.ID, func(j view.Job) bool { return j.State.Terminal() })
	if j.State != job.Failed || !strings.Contains(j.Error, "map function panicked") || !strings.Contains(j.Error, "nil map") || !strings.Contains(j.Error, "attempt 2 of 2") {
		t.Fatalf("job of a panicking kind: %s", apitest.Describe(j))
	}
	select {
	case err := <-w.exited:
		t.Fatalf("the worker process exited after the panics: %v\n%s", err, w.out)
	default:
	}
	ok := c.SubmitSpec(t, map[string]any{"kind": "wordcount", "input": []string{"in"}, "partitions": 2, "reducers": 1})
	if ok = c.Await(t, ok.ID, func(j view.Job) bool { return j.State.Terminal() }); ok.State != job.Succeeded {
		t.Fatalf("the next job on the same worker: %s", apitest.Describe(ok))
	}
	if out := c.Output(t, ok.ID); out != "another 1\nline 1\none 1\n" {
		t.Fatalf("output %q", out)
	}
}

// A worker process on a sick machine (every map task 5 s slower) and a
// healthy one: at the end of the map phase the coordinator starts a backup
// copy of the slow task, which the healthy worker finishes first; the
// output is exactly the sequential count.
func TestBackupTaskOverASlowWorkerProcess(t *testing.T) {
	ownKinds(t)
	p := start(t, t.TempDir(), nil, "--workers", "0", "--backup-after", "500ms")
	c := p.client()
	docs := books(t, 1)
	upload(t, c, "books", docs)
	// The sick worker alone first, so that it surely holds a task.
	launch(t, workerReady, []string{"SLOW_WORKER=1"}, "worker", "--nats", p.nats, "--concurrency", "1", "--name", "sick")
	j := c.SubmitSpec(t, map[string]any{"kind": "slowcount", "input": []string{"books"}, "partitions": 6, "reducers": 2})
	c.Await(t, j.ID, func(j view.Job) bool { return busyIn(t, c, "sick", j.ID) })
	launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "healthy")
	j = c.Await(t, j.ID, func(j view.Job) bool { return j.State.Terminal() })
	if j.State != job.Succeeded || len(j.Backups) == 0 {
		t.Fatalf("job with a slow worker: %s, backups %v", apitest.Describe(j), j.Backups)
	}
	if got, want := c.Output(t, j.ID), kinds.SeqWordCount(docs); got != want {
		t.Fatal("the output differs from the sequential count")
	}
	var h struct{ Tasks []job.TaskResult }
	c.Do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "").JSON(t, &h)
	for _, r := range h.Tasks {
		if r.Backup && strings.HasPrefix(r.Worker, "healthy.") {
			return
		}
	}
	t.Fatalf("no backup copy finished on the healthy worker: %+v", h.Tasks)
}
