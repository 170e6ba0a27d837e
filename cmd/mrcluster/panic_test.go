package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/view"
)

// A program of one's own (testdata/panicky, on the public mapreduce API)
// with a kind whose map always panics: run as a server and a separate
// worker process, its job fails after --max-attempts with the panic's
// message, and the worker process lives on and runs the next job.
// Not parallel: it points the package's binary at another program, which
// the parallel tests, run after the others, never see.
func TestPanickingKindFailsItsJobNotTheWorker(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "panicky")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, "./testdata/panicky").CombinedOutput(); err != nil {
		t.Fatalf("build testdata/panicky: %v\n%s", err, out)
	}
	saved := binary
	binary = bin // launch and start run this program for the rest of the test
	defer func() { binary = saved }()
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
