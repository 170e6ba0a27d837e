package main

import (
	"io"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
)

// A worker process joined through the server's NATS runs the cluster's
// tasks, shows in its status, serves its metrics and leaves cleanly.
func TestWorkerProcess(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0", "--sleep-scale", "0.001")
	c := p.client()

	wp, m := launch(t, regexp.MustCompile(`^metrics on (\S+)$`), nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "remote1", "--metrics-addr", "127.0.0.1:0", "--sleep-scale", "0.001")
	murl := m[1]

	j := c.Submit(t, "short", 6)
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Succeeded || !reflect.DeepEqual(j.Result.Values, apitest.Values(6, 1)) {
		t.Fatalf("job run by the worker process: %s", apitest.Describe(j))
	}
	var w struct{ Workers []job.WorkerStatus }
	c.Do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
	if len(w.Workers) != 2 || w.Workers[0].Pool != "remote1" || w.Workers[0].Host == "" {
		t.Fatalf("workers = %+v, want the 2 of pool remote1", w.Workers)
	}

	resp, err := apitest.Get(murl)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `mrcluster_worker_tasks_total{kind="short",outcome="done"} 6`) {
		t.Fatalf("worker metrics lack 6 short tasks done:\n%s", body)
	}

	if err := wp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-wp.exited; err != nil {
		t.Fatalf("worker exit after SIGTERM: %v", err)
	}
	wp.exited <- nil
	// A worker that stops cleanly leaves at once, not at the end of its TTL.
	c.AwaitIdleWorkers(t, 0)
}

// A NATS port with a token refuses a worker without it, with a clear error
// and a non-zero exit, and serves one with it.
func TestWorkerNATSToken(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0", "--nats-token", "n4ts", "--sleep-scale", "0.001")
	out, err := exec.Command(binary, "worker", "--nats", p.nats, "--nats-token", "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refused this worker's credentials") || !strings.Contains(string(out), "--nats-token") {
		t.Fatalf("worker with a wrong token: %v\n%s", err, out)
	}
	launch(t, regexp.MustCompile(`^mrcluster worker .* running`), []string{"MRCLUSTER_NATS_TOKEN=n4ts"}, "worker", "--nats", p.nats, "--concurrency", "1", "--sleep-scale", "0.001")
	c := p.client()
	j := c.Submit(t, "noop", 3)
	if j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
		t.Fatalf("job on the worker with the token: %s", apitest.Describe(j))
	}
}
