package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
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
	j := c.SubmitSpec(t, client.Spec{Kind: "panics", Input: []string{"in"}, Partitions: 2, Reducers: 1})
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Failed || !strings.Contains(j.Error, "map function panicked") || !strings.Contains(j.Error, "nil map") || !strings.Contains(j.Error, "attempt 2 of 2") {
		t.Fatalf("job of a panicking kind: %s", apitest.Describe(j))
	}
	select {
	case err := <-w.exited:
		t.Fatalf("the worker process exited after the panics: %v\n%s", err, w.out)
	default:
	}
	ok := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"in"}, Partitions: 2, Reducers: 1})
	if ok = c.Await(t, ok.ID, func(j client.Job) bool { return j.State.Terminal() }); ok.State != client.Succeeded {
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
	j := c.SubmitSpec(t, client.Spec{Kind: "slowcount", Input: []string{"books"}, Partitions: 6, Reducers: 2})
	c.Await(t, j.ID, func(j client.Job) bool { return busyIn(t, c, "sick", j.ID) })
	launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "2", "--name", "healthy")
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Succeeded || len(j.Backups) == 0 {
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

// A worker's death is not its task's failure: with --max-attempts 2, the
// only worker process is SIGKILLed four times while it runs the same map
// task (and restarted), then the task fails once on its own: the job still
// succeeds, and its history shows the four lost attempts and the failed one.
func TestWorkerDeathsAreNotFailedAttempts(t *testing.T) {
	ownKinds(t)
	p := start(t, t.TempDir(), nil, "--workers", "0", "--max-attempts", "2", "--ack-wait", "1s", "--retry-backoff", "10ms")
	c := p.client()
	c.PutFile(t, "in", "a.txt", []byte("one two\nthree one\n"))
	worker := func(env []string) *proc {
		w, _ := launch(t, workerReady, env, "worker", "--nats", p.nats, "--concurrency", "1", "--name", "victim", "--retry-backoff", "10ms")
		return w
	}
	victim := worker(nil)
	j := c.SubmitSpec(t, client.Spec{Kind: "nap", Input: []string{"in"}, Partitions: 1, Reducers: 1, Params: map[string]any{"seconds": 3}})
	// The attempt each kill interrupts: a status of the killed process may
	// still be seen a moment after the next one started.
	last := 0
	for kill := range 4 {
		// Polled: a worker that keeps its job from one process to the
		// next may send no event.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			a := runningAttempt(t, c, "victim", j.ID)
			if a > last {
				last = a
				break
			}
			if c.Job(t, j.ID).State.Terminal() || time.Now().After(deadline) {
				break
			}
		}
		if now := c.Job(t, j.ID); now.State.Terminal() {
			t.Fatalf("the job ended after %d kills: %s", kill, apitest.Describe(now))
		}
		victim.kill(t)
		var env []string
		if kill == 3 {
			env = []string{"NAP_FAIL_ONCE=" + filepath.Join(t.TempDir(), "failed")}
		}
		victim = worker(env)
	}
	j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Succeeded {
		t.Fatalf("a job whose worker was killed four times and whose task failed once: %s", apitest.Describe(j))
	}
	if out := c.Output(t, j.ID); out != "one 2\nthree 1\ntwo 1\n" {
		t.Fatalf("output %q", out)
	}
	states, h := mapStates(t, c, j.ID)
	if states["lost"] < 4 || states["failed"] != 1 || states["done"] != 1 {
		t.Fatalf("map task history %v; want at least 4 lost, 1 failed, 1 done: %+v", states, h)
	}
	// The server saw each killed process's status name the attempt it ran:
	// the history names its worker and its start, which the worker that
	// recorded the loss could not know.
	for _, a := range h {
		if a.State == "lost" && (a.Worker != "victim.0" || a.DurationMS <= 0) {
			t.Errorf("lost attempt %d: worker %q, %.1f ms from its start to its loss noticed; want victim.0's, and its start known", a.Attempt, a.Worker, a.DurationMS)
		}
	}
}

// A worker process killed in the middle of a task and started again under
// its name, as a service manager restarts it, gives the dead process's task
// back to the queue at once: it runs again within seconds, not once its
// lease runs out after the queue's ack wait (10 minutes here, far past the
// test's own wait); the history names the killed run's worker.
func TestARestartedWorkerGivesBackItsDeadRunAtOnce(t *testing.T) {
	ownKinds(t)
	p := start(t, t.TempDir(), nil, "--workers", "0", "--ack-wait", "10m")
	c := p.client()
	c.PutFile(t, "in", "a.txt", []byte("one two\nthree one\n"))
	worker := func() *proc {
		w, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "1", "--name", "victim")
		return w
	}
	victim := worker()
	j := c.SubmitSpec(t, client.Spec{Kind: "nap", Input: []string{"in"}, Partitions: 1, Reducers: 1, Params: map[string]any{"seconds": 3}})
	// Polled: the status names the task's delivery once the worker wrote
	// it, which no event announces.
	for deadline := time.Now().Add(time.Minute); runningAttempt(t, c, "victim", j.ID) != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the worker never ran the job's map task: %s", apitest.Describe(c.Job(t, j.ID)))
		}
	}
	victim.kill(t)
	worker()
	awaitOneLostRun(t, c, j.ID, "victim.0")
}

// awaitOneLostRun waits, well within the queue's ack wait of 10 minutes,
// for job id to succeed with one lost run of its map task, which names
// worker, and one done.
func awaitOneLostRun(t *testing.T, c apitest.Client, id, worker string) {
	t.Helper()
	j := c.AwaitWithin(t, 2*time.Minute, id, func(j client.Job) bool { return j.State.Terminal() })
	if j.State != client.Succeeded {
		t.Fatalf("a job whose worker's process was killed and started again: %s", apitest.Describe(j))
	}
	states, h := mapStates(t, c, id)
	if states["lost"] != 1 || states["done"] != 1 {
		t.Fatalf("map task history %v; want 1 lost run and 1 done: %+v", states, h)
	}
	for _, a := range h {
		if a.State == "lost" && a.Worker != worker {
			t.Errorf("the lost run names worker %q, want %s, the killed process's", a.Worker, worker)
		}
	}
}

// The same for a server SIGKILLed and started again on its data directory:
// its own workers (a pool of another name each run) give back the tasks
// the killed process's workers were running, found by their host and
// their dead process.
func TestARestartedServerGivesBackItsDeadRunsAtOnce(t *testing.T) {
	ownKinds(t)
	dir := t.TempDir()
	p := start(t, dir, nil, "--workers", "1", "--ack-wait", "10m")
	c := p.client()
	c.PutFile(t, "in", "a.txt", []byte("one two\nthree one\n"))
	j := c.SubmitSpec(t, client.Spec{Kind: "nap", Input: []string{"in"}, Partitions: 1, Reducers: 1, Params: map[string]any{"seconds": 3}})
	var ran string // the worker running the map, as its status names it
	for deadline := time.Now().Add(time.Minute); ran == ""; time.Sleep(50 * time.Millisecond) {
		var w struct{ Workers []job.WorkerStatus }
		c.Do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
		for _, s := range w.Workers {
			if s.Busy && s.JobID == j.ID && s.Attempt == 1 {
				ran = s.Key
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no worker ran the job's map task: %s", apitest.Describe(c.Job(t, j.ID)))
		}
	}
	p.kill(t)
	c = start(t, dir, nil, "--workers", "1", "--ack-wait", "10m").client()
	awaitOneLostRun(t, c, j.ID, ran)
}

// mapStates counts the states of job id's map attempts in its task history,
// which it returns too.
func mapStates(t *testing.T, c apitest.Client, id string) (map[string]int, []client.TaskAttempt) {
	t.Helper()
	var h struct{ Tasks []client.TaskAttempt }
	c.Do(t, "GET", "/api/v1/jobs/"+id+"/tasks", "").JSON(t, &h)
	states := map[string]int{}
	for _, a := range h.Tasks {
		if a.Phase == "map" {
			states[a.State]++
		}
	}
	return states, h.Tasks
}

// runningAttempt returns the attempt a worker of pool runs of job id, or 0.
func runningAttempt(t *testing.T, c apitest.Client, pool, id string) int {
	var w struct{ Workers []job.WorkerStatus }
	c.Do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
	for _, s := range w.Workers {
		if s.Pool == pool && s.Busy && s.JobID == id {
			return s.Attempt
		}
	}
	return 0
}

// A task that kills every worker process it runs on (as the out-of-memory
// killer would, a task taking all the memory): its workers restarted each
// time (as systemd would), it runs --max-lost-runs times, then its job
// fails saying why, instead of taking down workers for ever; the worker
// lives on and runs the next job.
func TestATaskThatKillsItsWorkersFailsItsJob(t *testing.T) {
	ownKinds(t)
	p := start(t, t.TempDir(), nil, "--workers", "0", "--max-lost-runs", "2", "--ack-wait", "1s")
	c := p.client()
	c.PutFile(t, "in", "a.txt", []byte("one two\nthree one\n"))
	worker := func() *proc {
		w, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "1", "--name", "victim")
		return w
	}
	w := worker()
	j := c.SubmitSpec(t, client.Spec{Kind: "killer", Input: []string{"in"}, Partitions: 1, Reducers: 1})
	deaths, timeout := 0, time.After(apitest.Timeout)
	// Polled between the worker's deaths: the loop starts it again as
	// it dies, which a wait for the job's end would not.
	for tick := time.NewTicker(50 * time.Millisecond); !c.Job(t, j.ID).State.Terminal(); {
		select {
		case err := <-w.exited:
			w.exited <- err // for the process's clean-up
			if deaths++; deaths > 2 {
				t.Fatalf("the task killed its worker %d times; --max-lost-runs 2 allows 2", deaths)
			}
			w = worker()
		case <-tick.C:
		case <-timeout:
			t.Fatalf("the job did not end: %s", apitest.Describe(c.Job(t, j.ID)))
		}
	}
	j = c.Job(t, j.ID)
	if j.State != client.Failed || deaths != 2 || !strings.Contains(j.Error, "last 2 runs in a row ended with their worker lost") || !strings.Contains(j.Error, "--max-lost-runs 2") {
		t.Fatalf("job whose task killed its worker %d times: %s", deaths, apitest.Describe(j))
	}
	if states, h := mapStates(t, c, j.ID); states["lost"] != 2 || states["failed"] != 1 || len(h) != 3 {
		t.Fatalf("map task history %v; want 2 lost runs (each once) and the failure: %+v", states, h)
	}
	ok := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"in"}, Partitions: 1, Reducers: 1})
	if ok = c.Await(t, ok.ID, func(j client.Job) bool { return j.State.Terminal() }); ok.State != client.Succeeded {
		t.Fatalf("the next job on the restarted worker: %s", apitest.Describe(ok))
	}
	select {
	case err := <-w.exited:
		t.Fatalf("the worker exited after the task was given up: %v\n%s", err, w.out)
	default:
	}
}

// A task that kills its worker process takes down the tasks running
// beside it too, and the queue delivers them again together. Those that
// ran beside it twice run alone in their pool, end, and succeed; the
// killer runs alone from then on and alone is taken for what kills the
// workers: its job fails after --max-lost-runs deaths, the others'
// succeed. (Before, every death counted against them all, and every job
// that ran beside the killer failed with it.)
func TestTasksBesideAKillerAreNotTakenForIt(t *testing.T) {
	ownKinds(t)
	p := start(t, t.TempDir(), nil, "--workers", "0", "--max-lost-runs", "4", "--ack-wait", "1s")
	c := p.client()
	c.PutFile(t, "in", "a.txt", []byte("one two\nthree one\n"))
	worker := func() *proc {
		w, _ := launch(t, workerReady, nil, "worker", "--nats", p.nats, "--concurrency", "4", "--name", "shared")
		return w
	}
	w := worker()
	var naps []string
	for range 3 {
		j := c.SubmitSpec(t, client.Spec{Kind: "nap", Input: []string{"in"}, Partitions: 1, Reducers: 1, Params: map[string]any{"seconds": 5}})
		naps = append(naps, j.ID)
	}
	for _, id := range naps {
		c.Await(t, id, func(client.Job) bool { return runningAttempt(t, c, "shared", id) > 0 })
	}
	killer := c.SubmitSpec(t, client.Spec{Kind: "killer", Input: []string{"in"}, Partitions: 1, Reducers: 1})
	ended := func() bool {
		for _, id := range append([]string{killer.ID}, naps...) {
			if !c.Job(t, id).State.Terminal() {
				return false
			}
		}
		return true
	}
	deaths, timeout := 0, time.After(apitest.Timeout)
	for tick := time.NewTicker(50 * time.Millisecond); !ended(); {
		select {
		case err := <-w.exited:
			w.exited <- err // for the process's clean-up
			if deaths++; deaths > 4 {
				t.Fatalf("the worker died %d times; --max-lost-runs 4 allows the killer 4 runs", deaths)
			}
			w = worker()
		case <-tick.C:
		case <-timeout:
			t.Fatalf("the jobs did not end: killer %s", apitest.Describe(c.Job(t, killer.ID)))
		}
	}
	if k := c.Job(t, killer.ID); k.State != client.Failed || !strings.Contains(k.Error, "last 4 runs in a row ended with their worker lost") || deaths != 4 {
		t.Fatalf("the killer's job after %d deaths: %s", deaths, apitest.Describe(k))
	}
	besideTwice := 0
	for _, id := range naps {
		j := c.Job(t, id)
		states, h := mapStates(t, c, id)
		if j.State != client.Succeeded || states["lost"] > 2 {
			t.Fatalf("a job that ran beside the killer: %s; map history %v: %+v", apitest.Describe(j), states, h)
		}
		if states["lost"] == 2 {
			besideTwice++
		}
	}
	if besideTwice == 0 {
		t.Fatal("no job ran beside the killer twice: the test did not test what it is for")
	}
}
