package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
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

// A kind uploaded with the CLI runs on a worker process that has never
// seen it (no --workers on the server: only the remote process runs
// tasks), and writes what the built-in word count writes.
func TestUploadedKindOnAWorkerProcess(t *testing.T) {
	t.Parallel()
	wasm := apitest.BuildWasm(t, "examples/wasm-wordcount")
	dir := t.TempDir()
	module := filepath.Join(dir, "wc.wasm")
	var files []string
	docs, _ := kinds.Corpus(1)
	for _, d := range docs[:min(2, len(docs))] {
		files = append(files, filepath.Join(dir, d.Name))
		if err := os.WriteFile(files[len(files)-1], d.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(module, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, t.TempDir(), nil, "--workers", "0")
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append(args, "--server", p.url)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("mrcluster %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	cli(append([]string{"dataset", "put", "books"}, files...)...)
	if out := cli("kind", "put", "mywc", module, "--description", "my word count"); !strings.Contains(out, "kind mywc version 1") {
		t.Fatalf("kind put said %q", out)
	}
	if out := cli("kind", "ls"); !regexp.MustCompile(`(?m)^mywc\s+1\s+[0-9a-f]{12}\s+\d+\s.*my word count$`).MatchString(out) {
		t.Fatalf("kind ls:\n%s", out)
	}
	launch(t, regexp.MustCompile(`^metrics on (\S+)$`), nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "remote1", "--metrics-addr", "127.0.0.1:0")

	c := p.client()
	mine := c.SubmitSpec(t, client.Spec{Kind: "mywc", Input: []string{"books"}, Partitions: 3, Reducers: 2})
	builtin := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 2, Reducers: 3})
	for _, id := range []string{mine.ID, builtin.ID} {
		if j := c.Await(t, id, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
			t.Fatalf("job: %s", apitest.Describe(j))
		}
	}
	got, want := c.Output(t, mine.ID), c.Output(t, builtin.ID)
	if got != want || strings.Count(want, "\n") < 50 {
		t.Fatalf("the uploaded kind wrote %d bytes, the built-in %d", len(got), len(want))
	}
}

// A worker killed in the middle of a map leaves its spill directory in its
// --temp-dir; the next worker process there removes it as it starts (it
// was nobody's: the task's lock died with its process), runs the task
// again, and leaves nothing behind once the job is done.
func TestSpillsOfAKilledWorkerAreRemoved(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0", "--ack-wait", "2s")
	c := p.client()
	docs := books(t, 4)
	upload(t, c, "books", docs)
	tmp := t.TempDir()
	first, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "1", "--name", "first", "--temp-dir", tmp, "--sort-buffer-mb", "1")
	j := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 1, Reducers: 1})
	var left []string
	for deadline := time.Now().Add(apitest.Timeout); len(left) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no spill directory appeared in %s while the map ran", tmp)
		}
		left, _ = filepath.Glob(filepath.Join(tmp, "mrcluster-spill-*"))
	}
	first.kill(t)
	// A directory is looked at once it is a minute old (one just made is
	// locked a moment later): this one is made that old.
	old := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(left[0], old, old); err != nil {
		t.Fatalf("the killed worker's spill directory: %v", err)
	}
	second, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "1", "--name", "second", "--temp-dir", tmp)
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	var size int64
	for _, d := range docs {
		size += int64(len(d.Data))
	}
	if j.State != client.Succeeded || j.Counters.InputBytes != size {
		t.Fatalf("the word count after its worker was killed: %s, %d input bytes of %d", apitest.Describe(j), j.Counters.InputBytes, size)
	}
	if rest, _ := os.ReadDir(tmp); len(rest) != 0 {
		t.Fatalf("%s still holds %d entries once the job is done (the first %s); want none", tmp, len(rest), rest[0].Name())
	}
	if out := second.out.String(); !strings.Contains(out, "removed the local files of tasks whose process died") || !strings.Contains(out, "dirs=1") {
		t.Fatalf("the second worker did not say it removed the first's spills:\n%s", out)
	}
}

// A --temp-dir a task cannot use stops a worker or a server at its start,
// saying what is wrong, instead of failing every data task later; so does
// a --data-dir the store cannot use (the embedded NATS server waited 30 s
// on one, then blamed its port).
func TestABadTempOrDataDirIsRefusedAtStart(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "--temp-dir", missing}, "--temp-dir: " + missing + " does not exist"},
		{[]string{"worker", "--temp-dir", file}, "--temp-dir: " + file + " is not a directory"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--temp-dir", missing}, "--temp-dir: " + missing + " does not exist"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", file}, "--data-dir: mkdir " + file + ": not a directory"},
	} {
		cmd := exec.Command(binary, c.args...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("mrcluster %s: %v\n%s\nwant an exit saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}

// A worker process given the --name of a pool that runs exits, saying so
// (their statuses would overwrite each other); once that pool's process
// is killed, one of that name starts again (the dead one's status, its
// heartbeat stopped, is waited out).
func TestTwoPoolsOfOneName(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0")
	first, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "twin")
	// Bounded: a second pool that ran would never exit.
	ctx, cancel := context.WithTimeout(apitest.Context(t), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "twin").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(string(out), "a pool of workers named twin is running already") {
		t.Fatalf("a second pool named twin: %v (want exit status 3)\n%s", err, out)
	}
	first.kill(t)
	launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "twin")
	c := p.client()
	c.AwaitIdleWorkers(t, 2)
	if j := c.Await(t, c.Submit(t, "noop", 4).ID, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
		t.Fatalf("a job run by the pool started again: %s", apitest.Describe(j))
	}
}

// A worker process paused longer than its status lives (SIGSTOP here; a
// suspended laptop, a frozen VM) is taken for dead, and another process
// of its --name starts; the paused one, once continued, finds its name
// taken at its first status write and exits saying so, instead of running
// beside the new one with their statuses overwriting each other. The new
// one runs the cluster's tasks.
func TestAContinuedWorkerWhoseNameWasTakenExits(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0", "--sleep-scale", "0.001")
	c := p.client()
	args := []string{"worker", "--nats", p.nats, "--concurrency", "2", "--name", "w"}
	a, _ := launch(t, workerReady, nil, args...)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) }()
	// While its status lives, a second one is refused (the paused one is
	// of this host); once it expired (15 s), the second one starts.
	var b *proc
	deadline := time.Now().Add(apitest.Timeout)
	for b == nil {
		bp, lines := spawn(t, workerReady, nil, args...)
		select {
		case <-lines:
			b = bp
		case err := <-bp.exited:
			bp.exited <- err
			if !strings.Contains(bp.out.String(), "is stopped on this host") {
				t.Fatalf("the second worker of the name exited (%v):\n%s", err, bp.out)
			}
			if time.Now().After(deadline) {
				t.Fatal("the paused worker's status never expired")
			}
			time.Sleep(time.Second) // the expiry is not an event the test can wait for
		}
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.exited:
		a.exited <- err
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(a.out.String(), "another process took over the name of this pool of workers, w") {
			t.Fatalf("the continued worker exited with %v (want exit status 3):\n%s", err, a.out)
		}
	case <-time.After(apitest.Timeout):
		t.Fatalf("the continued worker still runs beside the one that took its name:\n%s", a.out)
	}
	j := c.Submit(t, "short", 4)
	if j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
		t.Fatalf("job on the worker that took the name: %s", apitest.Describe(j))
	}
	var w struct{ Workers []job.WorkerStatus }
	c.Do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
	if len(w.Workers) != 2 || w.Workers[0].PID != b.cmd.Process.Pid || w.Workers[1].PID != b.cmd.Process.Pid {
		t.Fatalf("workers = %+v, want the 2 of the second process (%d)", w.Workers, b.cmd.Process.Pid)
	}
}

// A worker process stopped (SIGTERM) while its tasks run and its servers
// are gone ends soon after its --shutdown-timeout, exit status 0: what the
// store cannot take within a short grace is left to the queue's ack wait.
// It used to wait for each call to the store to run out on its own (a
// give-back's 5 s, a result's 10 s, the workers' statuses' removal 2 s,
// the kinds' watch 5 s): 40-43 s with the default timeout of 30 s.
func TestAWorkerStoppedAfterItsServersEndsSoonAfterItsTimeout(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0")
	wp, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--sleep-scale", "1000", "--shutdown-timeout", "1s")
	c := p.client()
	j := c.Submit(t, "long", 6)
	c.Await(t, j.ID, func(j client.Job) bool { return j.Tasks.Running > 0 })
	p.kill(t)
	if err := wp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-wp.exited:
		wp.exited <- err
		if err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, wp.out)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the worker had not exited a minute after SIGTERM\n%s", wp.out)
	}
	if took := time.Since(start); took > 12*time.Second {
		t.Fatalf("the worker took %s to exit after SIGTERM with --shutdown-timeout 1s; want about 3 s (the timeout, then a grace of 2 s for the store)\n%s", took.Round(time.Millisecond), wp.out)
	}
	if out := wp.out.String(); !strings.Contains(out, "shutdown timeout: abandoning running tasks") {
		t.Fatalf("the worker's log does not say it abandoned its running tasks:\n%s", out)
	}
}

// A server paused (SIGSTOP: a stalled VM, a long collection, a leader
// election's wait) while a worker process's tasks end, for longer than a
// result's store call waits (10 s) but not past the tasks' leases: the
// worker holds the results it could not store, renews the leases, and
// stores them once the server is back. No task runs twice; before, every
// task that ended in the pause ran again.
func TestTasksEndedWhileTheirServerWasPausedAreNotRunAgain(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--workers", "0", "--sleep-scale", "0.2", "--ack-wait", "60s", "--backup-after", "0")
	w, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "4", "--sleep-scale", "0.2")
	c := p.client()
	c.AwaitIdleWorkers(t, 4)
	j := c.Submit(t, "long", 12)
	c.Await(t, j.ID, func(j client.Job) bool { return j.Tasks.Running > 0 })
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	defer func() {
		if !continued {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	deadline := time.Now().Add(2 * apitest.Timeout)
	for !strings.Contains(w.out.String(), "could not store task results; trying again in a while") {
		if time.Now().After(deadline) {
			t.Fatalf("no result of the worker met the paused server:\n%s", w.out)
		}
		time.Sleep(100 * time.Millisecond) // the worker's log is no event to wait on
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	if j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
		t.Fatalf("job: %s", apitest.Describe(j))
	}
	tasks, err := c.API().Tasks(apitest.Context(t), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[int]int{}
	for _, a := range tasks {
		if a.Outcome == "lost" && a.Worker == "" {
			// A delivery no worker started (seen once in five runs,
			// at the server's continue: likely a fetch the worker had
			// given up in the pause, answered then). The queue's count
			// of deliveries is all lost runs are counted by
			// (docs/architecture.md).
			continue
		}
		if runs[a.Partition]++; a.Error != "" || a.Superseded || a.Backup {
			t.Fatalf("attempt %+v; want every task run once, done", a)
		}
	}
	for p := range 12 {
		if runs[p] != 1 {
			t.Fatalf("task %d ran %d times; want once: %+v", p, runs[p], tasks)
		}
	}
	// The first publish may have been stored in the pause, unanswered (the
	// job may end by it): the held results are stored again all the same
	// (and shown once), within the second the pool waits.
	for !strings.Contains(w.out.String(), "stored task results the store had not taken before") {
		if time.Now().After(deadline) {
			t.Fatalf("the worker never said it stored the held results:\n%s", w.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
