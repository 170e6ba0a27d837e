package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// The chaos test: three servers (R3) with their workers and two worker
// processes, while clients submit jobs and batches of jobs (retrying with
// an Idempotency-Key, as told), faults come one after another: a server
// SIGKILLed and started again, a worker process SIGKILLed and started
// again, a worker process paused (SIGSTOP) past its lease and continued, a
// server paused past its leases and a leader election and continued (in
// the longer runs also one paused, continued for a moment and paused
// again), and (as root) the disk of one server filled and freed. Then every
// acknowledged job must have ended correctly, no job may be stored that no
// client was answered, no task may have run twice without a recorded
// reason (a lost worker, a failure, a store interruption, a backup copy),
// and nothing may keep running. `make chaos` runs it for five minutes;
// `make test` for 40 s.

// chaosClient is an HTTP client that never fails the test: servers die.
var chaosClient = &http.Client{Timeout: 10 * time.Second}

// keepChaosData copies the servers' data directories into
// $MRCLUSTER_CHAOS_KEEP (when set) before a failed chaos test removes them,
// for a look at each server's copy of the streams afterwards.
func keepChaosData(t *testing.T, dirs []string) {
	keep := os.Getenv("MRCLUSTER_CHAOS_KEEP")
	if keep == "" {
		return
	}
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Logf("could not keep the servers' data: %v", err)
		return
	}
	for i, d := range dirs {
		to := filepath.Join(keep, fmt.Sprintf("server%d", i))
		if out, err := exec.Command("cp", "-a", d, to).CombinedOutput(); err != nil {
			t.Logf("could not keep server %d's data: %v %s", i, err, out)
			continue
		}
		t.Logf("server %d's data kept in %s", i, to)
	}
}

func chaosDo(method, url, key string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := chaosClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, err
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, data)
	}
	return resp.StatusCode, nil
}

type chaosNode struct {
	mu   sync.Mutex
	proc *proc
	past []*proc // the processes killed, whose output a failure greps
	args []string
	url  string
	up   bool
}

// submitted is a submit of the chaos test's clients: every try of it, and
// the jobs it was answered. A job stored that no client was answered is
// shown with the tries of the submits around its time (unanswered).
type submitted struct {
	kind   string
	tries  []submitTry
	answer []string
}

type submitTry struct {
	at     time.Time
	server int
	status int
	err    error
}

// unanswered tells what is known of job j, stored while no client was
// answered it: the submits of its kind begun up to a minute before its id
// was made, with their tries, and the servers' log lines that name it.
func unanswered(j client.Job, submits map[string]*submitted, nodes []*chaosNode) string {
	var b strings.Builder
	made, _ := job.IDTime(j.ID)
	fmt.Fprintf(&b, "its id was made at %s; the submits of %s begun in the minute before:\n", made.Format("15:04:05.000"), j.Kind)
	for key, s := range submits {
		if s.kind != j.Kind || len(s.tries) == 0 || s.tries[0].at.After(made) || made.Sub(s.tries[0].at) > time.Minute {
			continue
		}
		fmt.Fprintf(&b, "  key %s, answered %v:\n", key, s.answer)
		for _, t := range s.tries {
			fmt.Fprintf(&b, "    %s to server %d: %d %v\n", t.at.Format("15:04:05.000"), t.server, t.status, t.err)
		}
	}
	for i, n := range nodes {
		n.mu.Lock()
		procs := append(slices.Clone(n.past), n.proc)
		n.mu.Unlock()
		for k, p := range procs {
			for line := range strings.Lines(p.out.String()) {
				if strings.Contains(line, j.ID) {
					fmt.Fprintf(&b, "  server %d (process %d): %s", i, k+1, line)
				}
			}
		}
	}
	return b.String()
}

type acked struct {
	id         string
	kind       string
	partitions int
}

func TestChaos(t *testing.T) {
	t.Parallel()
	duration := 40 * time.Second
	if d, err := time.ParseDuration(os.Getenv("MRCLUSTER_CHAOS_DURATION")); err == nil {
		duration = d
	}
	ports := freePorts(t, 9)
	var routes, natsURLs []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		natsURLs = append(natsURLs, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	// As root, server 0's data directory is a tmpfs of its own, to fill.
	// Full disks in a cluster are only in `make chaos`: a job was seen left
	// queued after two of them (an open defect, see docs/architecture.md).
	// Faults only the longer runs (make chaos) take: a server paused twice.
	long := duration >= 2*time.Minute
	diskFull := os.Geteuid() == 0 && os.Getenv("MRCLUSTER_CHAOS_DURATION") != "" && os.Getenv("MRCLUSTER_CHAOS_NO_DISKFULL") == ""
	if diskFull {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", dirs[0]).CombinedOutput(); err != nil {
			t.Logf("no disk-full episodes: cannot mount a tmpfs (%v %s)", err, out)
			diskFull = false
		} else {
			t.Cleanup(func() { _ = exec.Command("umount", "-l", dirs[0]).Run() })
		}
	} else {
		t.Log("no disk-full episodes: they need root and make chaos (MRCLUSTER_CHAOS_DURATION set, MRCLUSTER_CHAOS_NO_DISKFULL not)")
	}
	t.Cleanup(func() { // before the tmpfs is unmounted
		if t.Failed() {
			keepChaosData(t, dirs)
		}
	})
	// MRCLUSTER_CHAOS_FAULTS=disk: only server 0's disk filled and server 0
	// killed, in turn.
	diskOnly := diskFull && os.Getenv("MRCLUSTER_CHAOS_FAULTS") == "disk"
	nodes := make([]*chaosNode, 3)
	for i := range nodes {
		url := fmt.Sprintf("http://127.0.0.1:%d", ports[6+i])
		nodes[i] = &chaosNode{url: url, args: []string{"serve", "--addr", strings.TrimPrefix(url, "http://"),
			"--nats-listen", strings.TrimPrefix(natsURLs[i], "nats://"), "--data-dir", filepath.Join(dirs[i], "data"),
			"--cluster-name", "chaos", "--cluster-listen", strings.TrimPrefix(routes[i], "nats://"), "--routes", strings.Join(routes, ","),
			"--workers", "1", "--ack-wait", "2s", "--sleep-scale", "0.01", "--retry-backoff", "100ms", "--submit-rate", "0"}}
	}
	waits := make([]<-chan []string, 3)
	for i, n := range nodes {
		n.proc, waits[i] = spawn(t, servingLine, nil, n.args...)
	}
	for i, n := range nodes {
		n.proc.ready(t, waits[i])
		n.up = true
	}
	// A server that rejoins in the middle of a leader election may give up
	// at start; it is started again, as a supervisor would (at most 3 times).
	restart := func(n *chaosNode) {
		for try := 1; ; try++ {
			p, lines := spawn(t, servingLine, nil, n.args...)
			select {
			case <-lines:
				n.mu.Lock()
				n.past = append(n.past, n.proc)
				n.proc, n.up = p, true
				n.mu.Unlock()
				return
			case err := <-p.exited:
				p.exited <- err
				if try == 3 {
					t.Fatalf("a server did not start again in 3 tries: %v\n%s", err, p.out)
				}
				t.Logf("a restarted server exited at start (%v); starting it again", err)
			case <-time.After(2 * apitest.Timeout):
				// A server rejoining a cluster under faults, on a machine
				// running every other test too, once took more than 90 s
				// (30 of them making its streams); where it waits is
				// asked of the process itself: Go prints every
				// goroutine's stack on SIGQUIT.
				_ = p.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case err := <-p.exited:
					p.exited <- err
				case <-time.After(10 * time.Second):
				}
				t.Fatalf("a restarted server was not ready in %s (its goroutines' stacks end its output):\n%s", 2*apitest.Timeout, p.out)
			}
		}
	}
	workerArgs := func(name string) []string {
		return []string{"worker", "--nats", strings.Join(natsURLs, ","), "--concurrency", "2", "--name", name, "--retry-backoff", "100ms", "--sleep-scale", "0.01"}
	}
	workers := []*proc{}
	for _, name := range []string{"w1", "w2"} {
		w, _ := launch(t, workerReady, nil, workerArgs(name)...)
		workers = append(workers, w)
	}
	docs := books(t, 1)[:2]
	upload(t, apitest.Client{URL: nodes[1].url}, "books", docs)
	want := kinds.SeqWordCount(docs)

	// Clients.
	var mu sync.Mutex
	var jobs []acked
	var refused, batches, abandoned int
	submits := map[string]*submitted{} // by idempotency key
	stop := make(chan struct{})
	var clients sync.WaitGroup
	newKey := func() string {
		var b [8]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	// send posts body under key to one server after another until one
	// answers, and reports the answer; a 400 fails the test.
	send := func(path, key, kind string, body, out any, first int) bool {
		mu.Lock()
		s := &submitted{kind: kind}
		submits[key] = s
		mu.Unlock()
		var err error
		for n := range 20 {
			node := nodes[(first+n)%3]
			var status int
			at := time.Now()
			status, err = chaosDo("POST", node.url+path, key, body, out)
			mu.Lock()
			s.tries = append(s.tries, submitTry{at: at, server: (first + n) % 3, status: status, err: err})
			mu.Unlock()
			if err == nil {
				return true
			}
			if status == http.StatusBadRequest {
				t.Errorf("a valid submit refused: %v", err)
				return false
			}
			mu.Lock()
			refused++
			mu.Unlock()
			// Backing off as a client does (0.2 s doubling to 1.6 s):
			// twenty tries then span about 27 s, longer than a leader
			// election after a kill, which refuses submits at once.
			time.Sleep(200 * time.Millisecond << min(n, 3))
		}
		mu.Lock()
		abandoned++
		mu.Unlock()
		t.Logf("a submit under key %s given up after 20 tries, the last: %v", key, err)
		return false
	}
	// A client of batches of ten small jobs, each under a key of its own;
	// every other batch of one-task jobs, which the servers store in
	// groups (docs/design-groups.md).
	clients.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			specs := make([]map[string]any, 10)
			for i := range specs {
				specs[i] = map[string]any{"kind": "short", "partitions": 1 + mrand.IntN(3)*(n%2)}
			}
			var answer struct{ Jobs []client.Job }
			key := newKey()
			if !send("/api/v1/jobs/batch", key, "short", map[string]any{"jobs": specs}, &answer, n) {
				continue
			}
			if len(answer.Jobs) != len(specs) {
				t.Errorf("a batch of %d answered %d jobs", len(specs), len(answer.Jobs))
				return
			}
			mu.Lock()
			for _, j := range answer.Jobs {
				jobs = append(jobs, acked{id: j.ID, kind: j.Kind, partitions: j.Partitions})
				submits[key].answer = append(submits[key].answer, j.ID)
			}
			batches++
			mu.Unlock()
		}
	})
	// A client of bursts of eight single submits at once to one server,
	// each under a key of its own: one-task jobs, which the server
	// gathers into groups, each key claimed for its own job.
	clients.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			var burst sync.WaitGroup
			for range 8 {
				burst.Go(func() {
					var j client.Job
					key := newKey()
					if send("/api/v1/jobs", key, "short", map[string]any{"kind": "short", "partitions": 1}, &j, n) {
						mu.Lock()
						jobs = append(jobs, acked{id: j.ID, kind: j.Kind, partitions: j.Partitions})
						submits[key].answer = []string{j.ID}
						mu.Unlock()
					}
				})
			}
			burst.Wait()
		}
	})
	for c := range 3 {
		clients.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				spec := map[string]any{"kind": "short", "partitions": 1 + mrand.IntN(8)}
				if n%10 == 9 {
					spec = map[string]any{"kind": "wordcount", "input": []string{"books"}, "partitions": 4, "reducers": 2}
				}
				var j client.Job
				key := newKey()
				if send("/api/v1/jobs", key, spec["kind"].(string), spec, &j, c+n) {
					mu.Lock()
					jobs = append(jobs, acked{id: j.ID, kind: j.Kind, partitions: j.Partitions})
					submits[key].answer = []string{j.ID}
					mu.Unlock()
				}
			}
		})
	}

	// Faults, one after another.
	end := time.Now().Add(duration)
	var faults []string
	var serverFaults []time.Time // for checkRanOnce
	// pauseServer stops server i for d and continues it. Continued, a
	// consumer leader deposed meanwhile still leads in its own eyes for a
	// moment: its ack waits have all run out, and it delivers again, as
	// new, tasks that the new leader's workers ran and acked (seen: a map
	// task run at 42.29 s by a worker process, delivered again by the
	// server continued at 44.3 s to its own pool, under the same attempt
	// number); both ends are server faults.
	pauseServer := func(i int, d time.Duration) {
		n := nodes[i]
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		serverFaults = append(serverFaults, time.Now())
		time.Sleep(d) // the fault itself
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		serverFaults = append(serverFaults, time.Now())
	}
	for time.Now().Before(end) {
		time.Sleep(time.Duration(2000+mrand.IntN(2000)) * time.Millisecond)
		f := mrand.IntN(5)
		if long && mrand.IntN(6) == 0 {
			f = 5
		}
		if diskOnly {
			f = 3 * (len(faults) % 2) // server 0 SIGKILLed, its disk filled
		}
		switch {
		case f == 0:
			i := mrand.IntN(3)
			if diskOnly {
				i = 0
			}
			n := nodes[i]
			n.mu.Lock()
			n.up = false
			n.mu.Unlock()
			n.proc.kill(t)
			faults = append(faults, fmt.Sprintf("server %d SIGKILLed", i))
			serverFaults = append(serverFaults, time.Now())
			time.Sleep(time.Duration(500+mrand.IntN(2000)) * time.Millisecond)
			restart(n)
		case f == 1:
			i := mrand.IntN(len(workers))
			workers[i].kill(t)
			faults = append(faults, fmt.Sprintf("worker w%d SIGKILLed", i+1))
			workers[i], _ = launch(t, workerReady, nil, workerArgs(fmt.Sprintf("w%d", i+1))...)
		case f == 2:
			i := mrand.IntN(len(workers))
			_ = workers[i].cmd.Process.Signal(syscall.SIGSTOP)
			faults = append(faults, fmt.Sprintf("worker w%d paused 5 s", i+1))
			time.Sleep(5 * time.Second) // past its 2 s lease
			_ = workers[i].cmd.Process.Signal(syscall.SIGCONT)
		case f == 4:
			// Paused, not dead: its connections stay open, and its
			// clients wait on it until their own timeout.
			i := mrand.IntN(3)
			faults = append(faults, fmt.Sprintf("server %d paused 8 s", i))
			pauseServer(i, 8*time.Second) // past its leases, and an election
		case f == 5:
			// Paused, continued for a moment, paused again (a VM
			// stalling twice): an upload once waited on a consumer
			// placed on it for as long as it stayed paused.
			i := mrand.IntN(3)
			faults = append(faults, fmt.Sprintf("server %d paused 4 s, continued, paused 6 s", i))
			pauseServer(i, 4*time.Second)
			time.Sleep(time.Duration(200+mrand.IntN(1000)) * time.Millisecond)
			pauseServer(i, 6*time.Second)
		case diskFull:
			faults = append(faults, "server 0's disk filled for 3 s")
			serverFaults = append(serverFaults, time.Now())
			fill := filepath.Join(dirs[0], "filler")
			if f, err := os.Create(fill); err == nil {
				buf := make([]byte, 1<<20)
				for {
					if _, err := f.Write(buf); err != nil {
						break
					}
				}
				f.Close()
			}
			time.Sleep(3 * time.Second)
			_ = os.Remove(fill)
		}
	}
	close(stop)
	clients.Wait()
	t.Logf("faults: %s", strings.Join(faults, "; "))
	// A server whose embedded NATS server did not stop when restarted
	// after a full disk started itself again, and left the stacks of
	// what held it: worth a look, kept where the failed runs' data go.
	for i, d := range dirs {
		stuck, _ := filepath.Glob(filepath.Join(d, "data", "stuck-nats-*.txt"))
		for _, f := range stuck {
			t.Logf("server %d's embedded NATS server was stuck and the server started again: stacks in %s", i, f)
			if keep := os.Getenv("MRCLUSTER_CHAOS_KEEP"); keep != "" && os.MkdirAll(keep, 0o755) == nil {
				_ = exec.Command("cp", f, filepath.Join(keep, fmt.Sprintf("server%d-%s", i, filepath.Base(f)))).Run()
			}
		}
	}
	// Nothing here damages a file: a copy set aside at a start as short
	// of its leader's (app/copies.go) is worth a look.
	for i, d := range dirs {
		if aside, _ := filepath.Glob(filepath.Join(d, "data", "damaged-*", "*")); len(aside) > 0 {
			t.Logf("server %d set aside copies it found short of their leader's at a start: %v", i, aside)
		}
	}
	mu.Lock()
	grouped := 0
	for _, a := range jobs {
		if job.IsMember(a.id) {
			grouped++
		}
	}
	t.Logf("%d jobs acknowledged (%d of them in %d batches, %d in groups), %d submits refused and retried, %d given up after 20 tries", len(jobs), 10*batches, batches, grouped, refused, abandoned)
	mu.Unlock()

	// Every acknowledged job ends, correctly.
	url := nodes[0].url
	deadline := time.Now().Add(3 * time.Minute)
	for _, a := range jobs {
		var j client.Job
		for {
			_, err := chaosDo("GET", url+"/api/v1/jobs/"+a.id, "", nil, &j)
			if err == nil && j.State.Terminal() {
				break
			}
			if time.Now().After(deadline) {
				var h, q, w any
				_, _ = chaosDo("GET", url+"/api/v1/jobs/"+a.id+"/tasks", "", nil, &h)
				_, _ = chaosDo("GET", url+"/api/v1/queue", "", nil, &q)
				_, _ = chaosDo("GET", url+"/api/v1/workers", "", nil, &w)
				for i, n := range nodes[1:] {
					var o client.Job
					_, oerr := chaosDo("GET", n.url+"/api/v1/jobs/"+a.id, "", nil, &o)
					t.Logf("server %d reads job %s as %q (%v)", i+1, a.id, o.State, oerr)
				}
				t.Fatalf("acknowledged job %s is %s 3 minutes after the faults ended (%v): %+v\nhistory %v\nqueue %v\nworkers %v", a.id, j.State, err, j.Tasks, h, q, w)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if j.State != client.Succeeded {
			t.Fatalf("acknowledged job %s ended %s: %s", a.id, j.State, j.Error)
		}
		if a.kind == "short" && (j.Result == nil || j.Result.Sum != int64(a.partitions)) {
			t.Fatalf("job %s of %d partitions has result %+v", a.id, a.partitions, j.Result)
		}
		if a.kind == "wordcount" {
			resp, err := chaosClient.Get(url + "/api/v1/jobs/" + a.id + "/output")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != want {
				t.Fatalf("wordcount %s differs from the sequential count (%d against %d bytes)", a.id, len(got), len(want))
			}
		}
		checkRanOnce(t, url, a.id, redelivered{serverFaults: serverFaults})
	}
	// No job is stored that no client was answered (a batch stored in part
	// by a server that died is completed by its retry, not left beside a
	// new one), unless a client gave a submit up.
	if abandoned == 0 {
		answered := map[string]bool{}
		for _, a := range jobs {
			answered[a.id] = true
		}
		for cursor := ""; ; {
			var page client.JobList
			path := "/api/v1/jobs?limit=500"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			if _, err := chaosDo("GET", url+path, "", nil, &page); err != nil {
				t.Fatal(err)
			}
			for _, j := range page.Jobs {
				if !answered[j.ID] {
					t.Fatalf("job %s (%s, %s) is stored, and no client was answered it\n%s", j.ID, j.Kind, j.State, unanswered(j, submits, nodes))
				}
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
	}
	// Nothing keeps running: the queue empties and every worker is idle.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var q struct{ Depth int }
		var w struct{ Workers []job.WorkerStatus }
		_, err1 := chaosDo("GET", url+"/api/v1/queue", "", nil, &q)
		_, err2 := chaosDo("GET", url+"/api/v1/workers", "", nil, &w)
		busy := 0
		for _, s := range w.Workers {
			if s.Busy {
				busy++
			}
		}
		if err := errors.Join(err1, err2); err == nil && q.Depth == 0 && busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after every job ended: %d tasks queued, %d workers busy (%v)", q.Depth, busy, errors.Join(err1, err2))
		}
	}
}

// redelivered says which runs of one task under one attempt number, by
// different workers, checkRanOnce takes for a delivery the queue repeated
// without counting it (see there).
type redelivered struct {
	// clustered: any two, from a cluster whose connections were cut.
	clustered bool
	// killed: a run by a pool of these processes (SIGKILLed), then one by
	// a pool that was not.
	killed []string
	// serverFaults: two runs with a fault of a server of the cluster (a
	// kill, a pause or its end, its disk filled) between their starts.
	serverFaults []time.Time
	// others are the cluster's other servers: when url cannot answer the
	// history, what they answer is logged (a copy gone from the whole
	// cluster, or from one server's view of it).
	others []string
}

// checkRanOnce fails the test when a task of job id has two final results
// and no recorded reason to have run twice. Two results under one attempt
// number from different workers are a reason when a consumer's record of a
// delivery may have been lost, as again says. In a cluster, a consumer's
// delivery counts are replicated after the delivery, and a leader that
// takes over (in a partition, or after the old one was killed or paused)
// before the count of a delivery the old one made reached it delivers that
// message again under the same count (seen: attempt 2 of partitions 0 and
// 1 of one job, 7 s apart, from workers of two servers). A single server's
// embedded JetStream writes a consumer's deliveries to disk at most every
// 100 ms, so a server killed right after a task's result was stored,
// before the task's acknowledgement was processed, also forgets that it
// delivered the task, and its next life delivers it as new (seen in CI: a
// noop task run by the killed server's pool and again 0.5 s after the
// restart, both attempt 1). The same worker twice under one number is
// always a duplicate with no delivery behind it. (A retry that queued a
// completed batch's tasks again would look like the killed server's case;
// the coordinator's unit test TestARetryCompletesABatchWhoseServerDiedMidway
// holds the completion to queuing none.)
func checkRanOnce(t *testing.T, url, id string, again redelivered) {
	t.Helper()
	var h struct{ Tasks []job.TaskResult }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := chaosDo("GET", url+"/api/v1/jobs/"+id+"/tasks", "", nil, &h)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			for _, o := range again.others {
				var j client.Job
				_, jerr := chaosDo("GET", o+"/api/v1/jobs/"+id, "", nil, &j)
				_, terr := chaosDo("GET", o+"/api/v1/jobs/"+id+"/tasks", "", nil, &h)
				t.Logf("server %s: job %s %s (%v), its task history %d records (%v)", o, id, j.State, jerr, len(h.Tasks), terr)
			}
			t.Fatalf("task history of %s: %v", id, err)
		}
	}
	type task struct {
		phase job.Phase
		n     int
	}
	finals, reasons, records, last := map[task]int{}, map[task]bool{}, map[task]int{}, map[task]int{}
	for _, r := range h.Tasks {
		k := task{r.Phase, r.Partition}
		records[k]++
		last[k] = max(last[k], r.Attempt)
		if r.Final() {
			finals[k]++
		}
		if !r.Final() || r.Backup {
			reasons[k] = true
		}
	}
	// Attempt numbers advance only through a failure, an interruption or a
	// lost delivery, each of which writes a record; but that record is
	// stored like any result, and in a partition it may not be. A gap in the
	// numbers is that evidence: runs happened whose reason was not stored.
	for k := range finals {
		if last[k] > records[k] {
			reasons[k] = true
		}
	}
	// Two results of one task under different attempt numbers: the later
	// delivery came after the earlier result was stored but its
	// acknowledgement was lost (cut off in a partition). The next worker
	// writes a "lost" record for it, under the earlier attempt's number,
	// which a partition may keep from being stored; the numbers' advance is
	// the evidence. Two results under one number would be a duplicate with
	// no delivery behind it: that is what this check is for.
	type run struct {
		attempt int
		worker  string
	}
	wasKilled := func(worker string) bool {
		pool, _, _ := strings.Cut(worker, ".")
		return slices.Contains(again.killed, pool)
	}
	// faulted: a server fault between the starts of every two runs in
	// a row (a second of slack: the run's start is taken after its
	// delivery, on another process's clock).
	faulted := func(runs []job.TaskResult) bool {
		slices.SortFunc(runs, func(a, b job.TaskResult) int { return a.StartedAt.Compare(b.StartedAt) })
		for i := 1; i < len(runs); i++ {
			from, to := runs[i-1].StartedAt.Add(-time.Second), runs[i].StartedAt
			if !slices.ContainsFunc(again.serverFaults, func(f time.Time) bool { return !f.Before(from) && !f.After(to) }) {
				return false
			}
		}
		return true
	}
	finalAttempts, finalRuns := map[task]map[int]bool{}, map[task]map[run]bool{}
	killedRuns := map[task]int{} // final runs by a pool of a killed process
	byTask := map[task][]job.TaskResult{}
	for _, r := range h.Tasks {
		if k := (task{r.Phase, r.Partition}); r.Final() {
			if finalAttempts[k] == nil {
				finalAttempts[k], finalRuns[k] = map[int]bool{}, map[run]bool{}
			}
			finalAttempts[k][r.Attempt] = true
			finalRuns[k][run{r.Attempt, r.Worker}] = true
			byTask[k] = append(byTask[k], r)
			if wasKilled(r.Worker) {
				killedRuns[k]++
			}
		}
	}
	for k, n := range finals {
		distinct := len(finalRuns[k]) == n
		if n < 2 {
			continue
		}
		other := reasons[k] || len(finalAttempts[k]) == n || again.clustered && distinct
		forgot := !other && distinct && killedRuns[k] == n-1
		moved := !other && !forgot && distinct && faulted(byTask[k])
		if other || forgot || moved {
			reasons[k] = true
		}
		switch {
		case forgot:
			t.Logf("task %s/%d of job %s ran %d times, by a killed server's pool and after its restart: its delivery was forgotten in the kill", k.phase, k.n, id, n)
		case moved:
			t.Logf("task %s/%d of job %s ran %d times under one attempt, a server fault between the runs: a consumer leader's delivery was lost with it", k.phase, k.n, id, n)
		}
	}
	for k, n := range finals {
		if n > 1 && !reasons[k] {
			t.Fatalf("task %s/%d of job %s ran %d times with no failure, lost worker or backup recorded: %+v", k.phase, k.n, id, n, h.Tasks)
		}
	}
}
