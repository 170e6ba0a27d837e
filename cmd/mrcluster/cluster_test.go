package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// freePorts finds n free loopback ports for cluster routes, which every
// server must know before any starts.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// threeServers starts three servers of one cluster on loopback (2 workers
// each, leases of 2 s, no backups; extra flags added) and returns them
// once they serve, with the arguments that start server i again on its
// data directory.
func threeServers(t *testing.T, extra ...string) ([]*proc, func(i int) []string) {
	t.Helper()
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int) []string {
		return append([]string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", dirs[i],
			"--cluster-name", "mr", "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--routes", strings.Join(routes, ","),
			"--workers", "2", "--ack-wait", "2s", "--backup-after", "0"}, extra...)
	}
	// Start all three at once: none is ready before a majority is up.
	nodes := make([]*proc, 3)
	waits := make([]<-chan []string, 3)
	for i := range nodes {
		nodes[i], waits[i] = spawn(t, servingLine, nil, args(i)...)
	}
	for i, n := range nodes {
		m := n.ready(t, waits[i])
		n.url, n.nats = m[1], m[2]
	}
	return nodes, args
}

// Three servers form one cluster through their embedded NATS servers
// (JetStream replicas 3, routes over TLS). A wordcount submitted to one of them runs on the
// workers of all three; one server is killed with SIGKILL in the middle of
// the map phase; the job completes with the sequential output, counted
// once, and the killed server, started again, rejoins and serves it.
func TestThreeServerCluster(t *testing.T) {
	t.Parallel()
	// Routes speak TLS and verify each other's certificates.
	ca, cert, key := certs(t, t.TempDir())
	nodes, args := threeServers(t, "--nats-tls-cert", cert, "--nats-tls-key", key, "--nats-tls-ca", ca)
	a, b := nodes[0].client(), nodes[1].client()
	docs := books(t, 2)
	upload(t, a, "books", docs)
	j := b.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 12, Reducers: 3})
	// Every server's workers take part.
	j = a.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() || j.Tasks.Done >= 2 })
	if j.State.Terminal() {
		t.Fatalf("the job ended before the kill (%s): make it longer", apitest.Describe(j))
	}
	// A job scheduled on the server about to die runs on the others at
	// its time, once.
	delayed := nodes[2].client().SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 3, Delay: "3s"})
	// A schedule of a job every second, added on that server too, fires
	// once per tick before, across and after the kill.
	ctx := apitest.Context(t)
	if _, err := nodes[2].client().API().AddSchedule(ctx, client.NewSchedule{Name: "tick", Cron: "* * * * * *", Job: client.Spec{Kind: "noop", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	nodes[2].kill(t)
	j = a.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	want := countedOnce(t, b, j, docs, "with a server killed")
	d := b.Await(t, delayed.ID, func(j client.Job) bool { return j.State.Terminal() })
	queued := 0
	for _, s := range d.History {
		if s.State == "queued" {
			queued++
		}
	}
	if d.State != client.Succeeded || d.Result.Sum != 3 || queued != 1 || d.History[0].State != "scheduled" {
		t.Fatalf("the job scheduled on the killed server: %s, history %+v", apitest.Describe(d), d.History)
	}
	var h struct{ Tasks []job.TaskResult }
	a.Do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "").JSON(t, &h)
	hosts := map[string]bool{}
	for _, r := range h.Tasks {
		if r.Final() { // lost attempts have no worker
			hosts[r.Worker[:strings.LastIndex(r.Worker, ".")]] = true
		}
	}
	if len(hosts) < 2 {
		t.Fatalf("tasks ran on %d worker pools, want the servers' pools to share them: %v", len(hosts), hosts)
	}
	// The killed server rejoins and serves the job.
	again, lines := spawn(t, servingLine, nil, args(2)...)
	m := again.ready(t, lines)
	again.url = m[1]
	c := again.client()
	if got := c.Job(t, j.ID); got.State != client.Succeeded {
		t.Fatalf("the rejoined server sees the job %s", apitest.Describe(got))
	}
	if got := c.Output(t, j.ID); got != want {
		t.Fatal("the rejoined server serves a different output")
	}

	// The schedule, seen from the rejoined server, fires on; then it is
	// deleted and its jobs counted: one per tick, none missing.
	rejoined := time.Now()
	c.AwaitSchedule(t, "tick", func(s client.Schedule) bool {
		return s.LastTick != nil && s.LastTick.After(rejoined.Add(2*time.Second))
	})
	if err := c.API().DeleteSchedule(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	ticks := map[int64]string{}
	var first, last time.Time
	for cursor := ""; ; {
		page, err := c.API().Jobs(ctx, client.ListOptions{Cursor: cursor, Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		for _, sj := range page.Jobs {
			if sj.Schedule != "tick" {
				continue
			}
			if other, dup := ticks[sj.Tick.Unix()]; dup {
				t.Fatalf("tick %s made two jobs: %s and %s", sj.Tick, other, sj.ID)
			}
			ticks[sj.Tick.Unix()] = sj.ID
			if first.IsZero() || sj.Tick.Before(first) {
				first = *sj.Tick
			}
			if sj.Tick.After(last) {
				last = *sj.Tick
			}
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if want := int(last.Sub(first)/time.Second) + 1; len(ticks) != want || want < 5 {
		t.Fatalf("%d jobs for the %d ticks from %s to %s: a tick was missed", len(ticks), want, first, last)
	}

	// A kind paused on one server holds a job submitted there; resumed on
	// another, the job runs.
	if _, err := a.API().PauseKind(ctx, "noop"); err != nil {
		t.Fatal(err)
	}
	held := a.SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 3})
	if !held.Paused {
		t.Fatalf("a job of a paused kind: %s", apitest.Describe(held))
	}
	if k, err := c.API().ResumeKind(ctx, "noop"); err != nil || k.Paused {
		t.Fatalf("resume on another server: %+v %v", k, err)
	}
	if d := b.Await(t, held.ID, func(j client.Job) bool { return j.State.Terminal() }); d.State != client.Succeeded || d.Result.Sum != 3 {
		t.Fatalf("the held job after the resume: %s", apitest.Describe(d))
	}

	// A rate limit set on one server holds for the workers of all three:
	// 8 tasks at 2 a second start over three seconds or more.
	if _, err := a.API().SetKindLimits(ctx, "noop", client.KindLimits{Rate: "2/s"}); err != nil {
		t.Fatal(err)
	}
	// Each server learns the limit by watching the store (a limit holds
	// for the tasks a server queues once it knows it): b shows it first.
	for known := false; !known; {
		ks, err := b.API().Kinds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			known = known || k.Name == "noop" && k.Rate == "2/s"
		}
		if !known {
			select {
			case <-ctx.Done():
				t.Fatal("the server the job goes to never learned the rate limit set on another")
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	submitted := time.Now()
	rated := b.SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 8})
	if d := c.Await(t, rated.ID, func(j client.Job) bool { return j.State.Terminal() }); d.State != client.Succeeded {
		t.Fatalf("the rate-limited job: %s", apitest.Describe(d))
	}
	attempts, err := c.API().Tasks(ctx, rated.ID)
	if err != nil || len(attempts) != 8 {
		t.Fatalf("its tasks: %d %v", len(attempts), err)
	}
	// The last cannot start before its window: the fourth second after
	// the submit's, less the part of it already gone.
	lastStart := attempts[0].StartedAt
	pools := map[string]bool{}
	for _, r := range attempts {
		if r.StartedAt.After(lastStart) {
			lastStart = r.StartedAt
		}
		pools[r.Worker[:strings.LastIndex(r.Worker, ".")]] = true
	}
	if lastStart.Sub(submitted) < 2*time.Second {
		t.Fatalf("8 tasks at 2 a second all started within %s of the submit, on %d worker pools", lastStart.Sub(submitted), len(pools))
	}
}

// A server of three paused (SIGSTOP: a stalled VM, a debugger, a swap
// storm) in the middle of a word count, long past the tasks' lease and
// long enough for the others to elect new leaders: the other two take its
// tasks and go on taking submits; continued, it catches up and serves
// what happened meanwhile, and takes jobs again. Nothing is counted twice.
func TestPausedServer(t *testing.T) {
	t.Parallel()
	nodes, _ := threeServers(t)
	a, paused := nodes[0].client(), nodes[2]
	docs := books(t, 2)
	upload(t, a, "books", docs)
	wc := a.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 12, Reducers: 3})
	// Pause the third server once its workers hold tasks of the job,
	// looking at each event.
	pool := paused.pool(t)
	events := a.Dial(t, "/api/v1/events")
	for !busyIn(t, a, pool, wc.ID) {
		if j := a.Job(t, wc.ID); j.State.Terminal() {
			t.Fatalf("the job ended before the pause (%s): make it longer", apitest.Describe(j))
		}
		if _, _, err := events.Read(apitest.Context(t)); err != nil {
			t.Fatal(err)
		}
	}
	events.CloseNow()
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The other two take submits (a client retries a 503 while leaders
	// move, under one idempotency key) and run them, and the word count,
	// while it is paused.
	ctx := apitest.Context(t)
	b := client.New(nodes[1].url, "")
	b.SubmitRetries = 8
	var during []string
	for i := range 5 {
		j, err := b.Submit(ctx, client.Spec{Kind: "noop", Partitions: 1 + i})
		if err != nil {
			t.Fatalf("a submit to a live server while another is paused: %v", err)
		}
		during = append(during, j.ID)
	}
	t.Logf("5 submits to a live server %s into the pause", time.Since(stopped).Round(time.Millisecond))
	j := a.Await(t, wc.ID, func(j client.Job) bool { return j.State.Terminal() })
	t.Logf("the word count ended %s into the pause", time.Since(stopped).Round(time.Millisecond))
	countedOnce(t, a, j, docs, "with a server paused")
	for i, id := range during {
		if d := nodes[1].client().Await(t, id, func(j client.Job) bool { return j.State.Terminal() }); d.State != client.Succeeded || d.Result.Sum != int64(1+i) {
			t.Fatalf("a job submitted during the pause: %s", apitest.Describe(d))
		}
	}
	// The pause lasts 10 s at least (the fault, not a wait for an event):
	// five leases, and more than an election.
	time.Sleep(time.Until(stopped.Add(10 * time.Second)))
	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Continued, the server catches up: it shows the jobs as the others
	// do, and runs a job submitted to it.
	c := paused.client()
	continued := time.Now()
	for _, id := range append(during, j.ID) {
		if d := c.Await(t, id, func(j client.Job) bool { return j.State.Terminal() }); d.State != client.Succeeded {
			t.Fatalf("the continued server shows %s", apitest.Describe(d))
		}
	}
	t.Logf("the continued server shows the jobs %s after it was continued", time.Since(continued).Round(time.Millisecond))
	after := c.SubmitSpec(t, client.Spec{Kind: "short", Partitions: 4})
	if d := c.Await(t, after.ID, func(j client.Job) bool { return j.State.Terminal() }); d.State != client.Succeeded || d.Result.Sum != 4 {
		t.Fatalf("a job submitted to the continued server: %s", apitest.Describe(d))
	}
	t.Logf("a job submitted to it ran; %s after it was continued", time.Since(continued).Round(time.Millisecond))
}

// A server of three paused, continued for a few reads, and paused again
// (a VM stalling twice): the other two keep answering uploads and reads of a
// dataset, every request in time, and read it whole; a word count
// submitted over it counts every byte. An upload's read of the dataset's
// files once asked, for ever and whatever its deadline, for a consumer
// placed on the paused server.
func TestServerPausedAgain(t *testing.T) {
	t.Parallel()
	nodes, _ := threeServers(t)
	paused := nodes[2].cmd.Process
	t.Cleanup(func() { _ = paused.Signal(syscall.SIGCONT) })
	var size int64
	put := func(from, to int) {
		for i := from; i < to; i++ {
			data := fmt.Sprintf("file %d of the dataset, written while a server was paused\n", i)
			size += int64(len(data))
			answered(t, nodes[0].url, "PUT", fmt.Sprintf("/api/v1/datasets/stalls/files/f%02d.txt", i), data)
		}
	}
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	put(0, 10)
	if err := paused.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // reads while it catches up
		answered(t, nodes[i%2].url, "GET", "/api/v1/datasets/stalls", "")
	}
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	put(10, 20)
	for _, n := range nodes[:2] {
		var ds struct {
			FileCount int   `json:"file_count"`
			Size      int64 `json:"size"`
		}
		if err := json.Unmarshal(answered(t, n.url, "GET", "/api/v1/datasets/stalls", ""), &ds); err != nil || ds.FileCount != 20 || ds.Size != size {
			t.Fatalf("the dataset reads %+v (%v), want 20 files of %d bytes", ds, err, size)
		}
	}
	b := client.New(nodes[1].url, "")
	b.SubmitRetries = 8
	j, err := b.Submit(apitest.Context(t), client.Spec{Kind: "wordcount", Input: []string{"stalls"}, Partitions: 4, Reducers: 2})
	if err != nil {
		t.Fatalf("a word count submitted while a server is paused: %v", err)
	}
	if d := nodes[1].client().Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() }); d.State != client.Succeeded || d.Counters.InputBytes != size {
		t.Fatalf("the word count: %s, %d input bytes of %d", apitest.Describe(d), d.Counters.InputBytes, size)
	}
}

// answered sends a request to the server at url until it succeeds, each
// try within 20 s, and returns the answer's body: a 503 (leaders moving)
// is sent again, for up to a minute; a try not answered at all fails the
// test.
func answered(t *testing.T, url, method, path, body string) []byte {
	t.Helper()
	start, tctx := time.Now(), apitest.Context(t)
	for {
		ctx, cancel := context.WithTimeout(tctx, 20*time.Second)
		req, err := http.NewRequestWithContext(ctx, method, url+path, strings.NewReader(body))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s %s: %v (%s after the first try)", method, path, err, time.Since(start).Round(time.Millisecond))
		}
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		switch {
		case err != nil:
			t.Fatalf("%s %s: %v", method, path, err)
		case resp.StatusCode/100 == 2:
			return out
		case resp.StatusCode != http.StatusServiceUnavailable || time.Since(start) > time.Minute:
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
		}
		select {
		case <-tctx.Done():
			t.Fatalf("%s %s: %v", method, path, tctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// countedOnce fails the test unless word count j (of 12 maps and 3
// reduces) succeeded with the sequential count of docs as its output, read
// from c, and counted every input byte and task once; it returns the
// output.
func countedOnce(t *testing.T, c apitest.Client, j client.Job, docs []kinds.Doc, what string) string {
	t.Helper()
	if j.State != client.Succeeded {
		t.Fatalf("wordcount %s: %s", what, apitest.Describe(j))
	}
	want := kinds.SeqWordCount(docs)
	if got := c.Output(t, j.ID); got != want {
		t.Fatalf("wordcount %s: the output differs from the sequential count (%d against %d bytes)", what, len(got), len(want))
	}
	var size int64
	for _, d := range docs {
		size += int64(len(d.Data))
	}
	if j.Counters.InputBytes != size || j.Tasks.Done != 15 {
		t.Fatalf("wordcount %s: counted %d input bytes of %d and %d tasks of 15: a task counted twice or lost", what, j.Counters.InputBytes, size, j.Tasks.Done)
	}
	return want
}
