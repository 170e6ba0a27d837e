package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
)

// certs writes a CA and a certificate it signed for 127.0.0.1 into dir and
// returns their paths.
func certs(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	c := apitest.NewCA(t, dir)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c.Issue(t, cert, key, 2)
	return c.File, cert, key
}

// With a certificate, the NATS client port speaks TLS only: a worker that
// trusts the CA runs the cluster's tasks, one that does not exits non-zero
// saying what to give it, and the server's own workers (in-process) are
// unaffected.
func TestNATSTLS(t *testing.T) {
	t.Parallel()
	ca, cert, key := certs(t, t.TempDir())
	// Tasks of 0–80 ms: a pool fetches tasks that long only for its idle
	// workers, so the server's one worker cannot take all twelve at once
	// (with tasks of a few ms it once did, and the TLS worker ran none).
	p := start(t, t.TempDir(), nil, "--workers", "1", "--sleep-scale", "0.02", "--nats-tls-cert", cert, "--nats-tls-key", key)
	out, err := exec.Command(binary, "worker", "--nats", p.nats).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--nats-tls-ca") {
		t.Fatalf("worker without the CA: %v\n%s", err, out)
	}
	launch(t, workerReady, nil, "worker", "--nats", p.nats, "--nats-tls-ca", ca, "--concurrency", "2", "--name", "tls", "--sleep-scale", "0.02")
	c := p.client()
	c.AwaitIdleWorkers(t, 3)
	// Which worker takes a task is the queue's choice: a job whose twelve
	// tasks all went to the server's worker (once, in CI, a TLS worker
	// freshly started took none) is followed by another, until both kinds
	// of worker have run one.
	pool := p.pool(t) + "."
	var seen []job.TaskResult
	for range 6 {
		j := c.Submit(t, "short", 12)
		if j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
			t.Fatalf("job with a TLS worker: %s", apitest.Describe(j))
		}
		var h struct{ Tasks []job.TaskResult }
		c.Do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "").JSON(t, &h)
		seen = append(seen, h.Tasks...)
		tls, own := false, false
		for _, r := range seen {
			tls = tls || strings.HasPrefix(r.Worker, "tls.")
			own = own || strings.HasPrefix(r.Worker, pool)
		}
		if tls && own {
			return
		}
	}
	t.Fatalf("six jobs did not run a task on both the TLS worker and the server's own (%s): %+v", pool, seen)
}
