package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/view"
	"go.uber.org/goleak"
)

var binary string

func TestMain(m *testing.M) {
	// A binary built with -race sleeps a second at its exit, for reports
	// of races in goroutines still running (GORACE's atexit_sleep_ms):
	// every command the tests run took 1.1 s, 0.05 s of it working.
	// Races are reported as they happen all the same.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	dir, err := os.MkdirTemp("", "mrcluster-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mrcluster")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mrcluster:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// The servers run as processes of their own; what is checked here
		// is the test's side: clients, event streams, waits.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// proc is a mrcluster server running as a separate process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	url    string
	nats   string
	out    *syncBuffer
	exited chan error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var servingLine = regexp.MustCompile(`serving on (http://\S+) \(NATS for remote workers: ((?:nats|tls)://[^)\s]+)\)`)

// start runs `mrcluster serve` on loopback with random ports and returns
// once it serves.
func start(t *testing.T, dataDir string, env []string, args ...string) *proc {
	t.Helper()
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)
	p, m := launch(t, servingLine, env, args...)
	p.url, p.nats = m[1], m[2]
	return p
}

// launch runs the binary and returns once it prints a line matching ready
// on stdout, with the line's submatches. The process is killed when the
// test ends; its stderr is shown if the test failed.
func launch(t *testing.T, ready *regexp.Regexp, env []string, args ...string) (*proc, []string) {
	t.Helper()
	p, lines := spawn(t, ready, env, args...)
	return p, p.ready(t, lines)
}

// spawn starts the binary without waiting; ready waits for its ready line.
func spawn(t *testing.T, ready *regexp.Regexp, env []string, args ...string) (*proc, <-chan []string) {
	t.Helper()
	return spawnWith(t, nil, ready, env, args...)
}

// spawnWith is spawn with the binary run through prefix (e.g. ip netns exec NS).
func spawnWith(t *testing.T, prefix []string, ready *regexp.Regexp, env []string, args ...string) (*proc, <-chan []string) {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), binary), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, out: &syncBuffer{}, exited: make(chan error, 1), name: args[0]}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case lines <- m:
				default:
				}
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := <-p.exited
		p.exited <- err
		if t.Failed() {
			// Written at once, not logged: the test's own failure lines
			// then come after every process's output, at the end, where
			// a CI excerpt of the last lines shows them.
			fmt.Fprintf(os.Stderr, "=== output of %s, a process of the failed %s (its failure is reported below):\n%s\n", args, t.Name(), p.out)
		}
	})
	return p, lines
}

func (p *proc) ready(t *testing.T, lines <-chan []string) []string {
	t.Helper()
	select {
	case m := <-lines:
		return m
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("%s exited before it was ready (%v):\n%s", p.name, err, p.out)
	case <-time.After(apitest.Timeout):
		t.Fatalf("%s was not ready in time:\n%s", p.name, p.out)
	}
	return nil
}

func (p *proc) client() apitest.Client { return apitest.Client{URL: p.url} }

var workersLine = regexp.MustCompile(`msg="workers started" pool=(\S+)`)

// pool returns the name of the server's pool of workers, from its log.
func (p *proc) pool(t *testing.T) string {
	t.Helper()
	m := workersLine.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("no pool of workers named in the log of %s:\n%s", p.name, p.out)
	}
	return m[1]
}

// kill sends SIGKILL and waits for the process to die.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-p.exited
	p.exited <- err
}

// Kill the server with SIGKILL while jobs run, start it again on the same
// data directory: every acknowledged job completes with its full result,
// and results finished before the crash are still there.
func TestSIGKILLDuringJobsLosesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--sleep-scale", "0.02", "--ack-wait", "2s"}
	p := start(t, dir, nil, args...)
	c := p.client()

	finished := c.Submit(t, "noop", 10)
	finished = c.Await(t, finished.ID, func(j client.Job) bool { return j.State == client.Succeeded })

	type want struct {
		id    string
		n     int
		value int64
	}
	var jobs []want
	for _, spec := range []struct {
		kind  string
		n     int
		value int64
	}{{"short", 40, 1}, {"long", 20, 5}, {"short", 60, 1}, {"noop", 500, 1}} {
		j := c.Submit(t, spec.kind, spec.n)
		jobs = append(jobs, want{j.ID, spec.n, spec.value})
	}
	// Kill once the first job is under way but not done.
	c.Await(t, jobs[0].id, func(j client.Job) bool { return j.Tasks.Done > 0 })
	p.kill(t)

	p2 := start(t, dir, nil, args...)
	c2 := p2.client()
	for _, w := range jobs {
		j := c2.Await(t, w.id, func(j client.Job) bool { return j.State.Terminal() })
		if j.State != client.Succeeded || !reflect.DeepEqual(j.Result.Values, apitest.Values(w.n, w.value)) {
			t.Fatalf("after the crash: %s result %+v; want %d values of %d", apitest.Describe(j), j.Result, w.n, w.value)
		}
	}
	again := c2.Job(t, finished.ID)
	if !reflect.DeepEqual(again.Result, finished.Result) || again.State != client.Succeeded {
		t.Fatalf("job finished before the crash: %s, want result %+v", apitest.Describe(again), finished.Result)
	}
}

// SIGTERM: the server stops taking tasks, exits 0, and leaves the rest
// queued for the next start.
func TestSIGTERMExitsCleanly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := start(t, dir, nil, "--workers", "1", "--sleep-scale", "0.05")
	c := p.client()
	j := c.Submit(t, "long", 30)
	c.Await(t, j.ID, func(j client.Job) bool { return j.Tasks.Running == 1 })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-p.exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", err, p.out)
	}
	p.exited <- nil
	if !strings.Contains(p.out.String(), "queued tasks stay queued") {
		t.Errorf("the log does not say what happens to queued tasks:\n%s", p.out)
	}

	p2 := start(t, dir, nil, "--sleep-scale", "0.001")
	done := p2.client().Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() })
	if done.State != client.Succeeded || !reflect.DeepEqual(done.Result.Values, apitest.Values(30, 5)) {
		t.Fatalf("after restart: %s", apitest.Describe(done))
	}
}

func TestConfigFromEnvironmentAndFlags(t *testing.T) {
	t.Parallel()
	workers := func(p *proc) int {
		var st struct{ Workers []view.SeedWorker }
		p.client().Do(t, "GET", "/status", "").JSON(t, &st)
		return len(st.Workers)
	}
	p := start(t, t.TempDir(), []string{"MRCLUSTER_WORKERS=2", "MRCLUSTER_MAX_PARTITIONS=7"})
	if n := workers(p); n != 2 {
		t.Fatalf("MRCLUSTER_WORKERS=2 gave %d workers", n)
	}
	if r := p.client().Do(t, "POST", "/short/8", ""); r.Status != 400 || !strings.Contains(string(r.Body), "from 1 to 7") {
		t.Fatalf("MRCLUSTER_MAX_PARTITIONS=7 not applied: %d %s", r.Status, r.Body)
	}
	// A flag beats the environment.
	p = start(t, t.TempDir(), []string{"MRCLUSTER_WORKERS=2"}, "--workers", "3")
	if n := workers(p); n != 3 {
		t.Fatalf("--workers 3 with MRCLUSTER_WORKERS=2 gave %d workers", n)
	}
	// Bad settings are refused with a message naming them.
	out, err := exec.Command(binary, "serve", "--workers", "-1", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--workers must be 0 or more") {
		t.Fatalf("--workers -1: %v %s", err, out)
	}
	out, err = exec.Command(binary, "serve", "--max-lost-runs", "-1", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--max-lost-runs must be from 0 (no bound) to 1000, got -1") {
		t.Fatalf("--max-lost-runs -1: %v %s", err, out)
	}
	cmd := exec.Command(binary, "serve", "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "MRCLUSTER_SLEEP_SCALE=fast")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "MRCLUSTER_SLEEP_SCALE") {
		t.Fatalf("MRCLUSTER_SLEEP_SCALE=fast: %v %s", err, out)
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--sleep-scale", "0.001")
	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(binary, append(args, "--server", p.url)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, errOut, err := run("submit", "short", "4", "--wait")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "short_") || lines[1] != `{"values":[1,1,1,1],"sum":4}` {
		t.Fatalf("submit --wait: %v\nstdout %s\nstderr %s", err, out, errOut)
	}
	if !strings.Contains(errOut, "4/4 done") {
		t.Errorf("submit --wait without a terminal should print progress lines, got:\n%s", errOut)
	}
	id, _, err := run("submit", "noop", "2")
	id = strings.TrimSpace(id)
	if err != nil || !strings.HasPrefix(id, "noop_") {
		t.Fatalf("submit: %v %q", err, id)
	}
	p.client().Await(t, id, func(j client.Job) bool { return j.State == client.Succeeded })
	out, _, err = run("jobs")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "succeeded") {
		t.Fatalf("jobs: %v\n%s", err, out)
	}
	out, _, err = run("job", id)
	if err != nil || !regexp.MustCompile(`(?m)^state\s+succeeded$`).MatchString(out) || !regexp.MustCompile(`(?m)^sum\s+2 \(of 2 values\)$`).MatchString(out) {
		t.Fatalf("job: %v\n%s", err, out)
	}
	out, _, err = run("job", id, "-o", "json")
	if err != nil || !strings.Contains(out, `"sum": 2`) {
		t.Fatalf("job -o json: %v\n%s", err, out)
	}
	p.client().AwaitIdleWorkers(t, 4)
	out, _, err = run("status")
	if err != nil || !strings.Contains(out, "0 of 4 workers busy") || !regexp.MustCompile(`(?m)^store: room for [0-9.]+ [MG]iB more`).MatchString(out) {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if out, _, err = run("submit", "noop", "2", "--count", "3"); err != nil || len(strings.Fields(out)) != 3 || !strings.HasPrefix(out, "noop_") {
		t.Fatalf("submit --count 3: %v\n%s", err, out)
	}
	specs := filepath.Join(t.TempDir(), "specs.jsonl")
	_ = os.WriteFile(specs, []byte("{\"kind\":\"noop\",\"partitions\":1}\n{\"kind\":\"short\",\"partitions\":2,\"priority\":4}\n"), 0o600)
	if out, errOut, err = run("submit", "--file", specs); err != nil || len(strings.Fields(out)) != 2 || !strings.HasPrefix(strings.Fields(out)[1], "short_") {
		t.Fatalf("submit --file: %v\n%s%s", err, out, errOut)
	}
	p.client().Await(t, strings.Fields(out)[1], func(j client.Job) bool { return j.State == client.Succeeded && j.Priority == 4 })
	_, errOut, err = run("submit", "medium", "3")
	if err == nil || !strings.Contains(errOut, "known kinds: grep, indexer, long, noop, short, wordcount") {
		t.Fatalf("submit of an unknown kind: %v %s", err, errOut)
	}
	// Data: upload two files, count their words, read the output.
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")
	_ = os.WriteFile(a, []byte("the cat\nthe dog\n"), 0o600)
	_ = os.WriteFile(b, []byte("a dog, the end"), 0o600)
	if _, errOut, err = run("dataset", "put", "pets", a, b); err != nil || !strings.Contains(errOut, "stored") {
		t.Fatalf("dataset put: %v %s", err, errOut)
	}
	if out, _, err = run("dataset", "ls"); err != nil || !strings.Contains(out, "pets") || !strings.Contains(out, "  2  ") {
		t.Fatalf("dataset ls: %v\n%s", err, out)
	}
	out, errOut, err = run("submit", "wordcount", "--input", "pets", "--partitions", "3", "--reducers", "2", "--wait")
	if err != nil || !strings.Contains(out, "dog 2") || !strings.Contains(errOut, "5 output records") {
		t.Fatalf("submit wordcount --wait: %v\n%s\n%s", err, out, errOut)
	}
	wid := strings.Fields(out)[0] // the id, first
	// Without a partition count, a data job's is the cluster's choice.
	if out, errOut, err = run("submit", "grep", "--input", "pets", "--param", "pattern=dog", "--wait"); err != nil || !strings.Contains(out, "the dog") {
		t.Fatalf("submit grep --input without partitions: %v\n%s\n%s", err, out, errOut)
	}
	if out, _, err = run("output", wid); err != nil || out != "a 1\ncat 1\ndog 2\nend 1\nthe 3\n" {
		t.Fatalf("output %s: %v\n%q", wid, err, out)
	}
	if _, errOut, err = run("submit", "wordcount", "--input", "nope", "--partitions", "2"); err == nil || !strings.Contains(errOut, `dataset "nope" does not exist`) {
		t.Fatalf("submit with a missing dataset: %v %s", err, errOut)
	}
	if _, _, err = run("dataset", "rm", "pets"); err != nil {
		t.Fatalf("dataset rm: %v", err)
	}
	if out, _, err = run("delete", wid); err != nil || !strings.Contains(out, wid+" deleted") {
		t.Fatalf("delete %s: %v\n%s", wid, err, out)
	}
	if _, errOut, err = run("output", wid); err == nil || !strings.Contains(errOut, "not found") {
		t.Fatalf("output of a deleted job: %v %s", err, errOut)
	}
	_, errOut, err = run("job", "short_nope")
	if err == nil || !strings.Contains(errOut, "not found") {
		t.Fatalf("job of an unknown id: %v %s", err, errOut)
	}
	// Every unfinished job of a kind canceled at once (the kind paused
	// holds them queued).
	if _, errOut, err = run("kind", "pause", "noop"); err != nil {
		t.Fatalf("kind pause: %v %s", err, errOut)
	}
	held, _, err := run("submit", "noop", "1", "--count", "3")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, id := range strings.Fields(held) {
		lines = append(lines, id+" canceled")
	}
	out, errOut, err = run("cancel", "--kind", "noop")
	// A batch's jobs were made in the same instant: in no known order.
	if got := strings.Split(strings.TrimSpace(out), "\n"); err != nil || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(lines))) {
		t.Fatalf("cancel --kind noop: %v\nstdout %s\nstderr %s\nwant the 3 held jobs", err, out, errOut)
	}
	if out, errOut, err = run("cancel", "--kind", "noop", "--state", "queued"); err != nil || out != "" || !strings.Contains(errOut, "no unfinished queued noop jobs") {
		t.Fatalf("cancel with nothing to cancel: %v\nstdout %s\nstderr %s", err, out, errOut)
	}
	if _, errOut, err = run("cancel", "--state", "failed"); err == nil || !strings.Contains(errOut, "have finished") {
		t.Fatalf("cancel --state failed: %v %s; want the server's 400", err, errOut)
	}
	if _, errOut, err = run("cancel", "noop_x", "--kind", "noop"); err == nil || !strings.Contains(errOut, "not both") {
		t.Fatalf("cancel with ids and --kind: %v %s", err, errOut)
	}
	if _, errOut, err = run("kind", "resume", "noop"); err != nil {
		t.Fatalf("kind resume: %v %s", err, errOut)
	}
	cmd := exec.Command(binary, "status", "--server", "http://127.0.0.1:1")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "cannot reach the server") {
		t.Fatalf("status against no server: %v %s", err, out)
	}
}

// mrcluster wait follows many jobs (ids, or - for standard input) to their
// end through the server's events, riding out the server's restart, and
// exits 1 naming the jobs that did not succeed; submit --count N --wait
// waits for all N.
func TestWaitForManyJobs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--addr", fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0]), "--sleep-scale", "0.001"}
	p := start(t, dir, nil, args...)
	run := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.Command(binary, append(args, "--server", p.url)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, errOut, err := run("", "submit", "noop", "1", "--count", "30", "--wait")
	if err != nil || len(strings.Fields(out)) != 30 || !strings.Contains(errOut, "30/30 jobs finished: 30 succeeded, 0 failed, 0 canceled") {
		t.Fatalf("submit --count 30 --wait: %v\nstdout %s\nstderr %s", err, out, errOut)
	}
	if _, errOut, err := run("", "kind", "pause", "short"); err != nil {
		t.Fatalf("kind pause: %v %s", err, errOut)
	}
	held, errOut, err := run("", "submit", "short", "1", "--count", "3")
	ids := strings.Fields(held)
	if err != nil || len(ids) != 3 {
		t.Fatalf("submit --count 3: %v\n%s%s", err, held, errOut)
	}
	wait := exec.Command(binary, "wait", "-", "--server", p.url)
	var stdout, stderr syncBuffer
	wait.Stdin, wait.Stdout, wait.Stderr = strings.NewReader(held), &stdout, &stderr
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- wait.Wait() }()
	t.Cleanup(func() { _ = wait.Process.Kill() })
	// And one job's wait, which reads the job every second.
	one := exec.Command(binary, "wait", ids[1], "--server", p.url)
	var oneOut, oneErr syncBuffer
	one.Stdout, one.Stderr = &oneOut, &oneErr
	if err := one.Start(); err != nil {
		t.Fatal(err)
	}
	oneExited := make(chan error, 1)
	go func() { oneExited <- one.Wait() }()
	t.Cleanup(func() { _ = one.Process.Kill() })
	// Once they follow the events (the server's two websockets), the
	// server is killed and started again on the same address and data.
	c := p.client()
	for !regexp.MustCompile(`(?m)^mrcluster_websocket_clients 2$`).Match(c.Do(t, "GET", "/metrics", "").Body) {
		select {
		case err := <-exited:
			t.Fatalf("wait exited before its jobs ended: %v\n%s", err, stderr.String())
		case <-apitest.Context(t).Done():
			t.Fatalf("wait never followed the server's events:\n%s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.kill(t)
	p = start(t, dir, nil, args...)
	c = p.client()
	if _, err := c.API().Cancel(apitest.Context(t), ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := run("", "kind", "resume", "short"); err != nil {
		t.Fatalf("kind resume: %v %s", err, errOut)
	}
	var exit *exec.ExitError
	if err := apitest.Recv(t, exited, "wait to exit once its jobs ended"); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("wait of a canceled job and two succeeded ones: %v, want exit 1\n%s", err, stderr.String())
	}
	want := fmt.Sprintf("%s canceled\n%s succeeded\n%s succeeded\n", ids[0], ids[1], ids[2])
	if stdout.String() != want || !strings.Contains(stderr.String(), "3/3 jobs finished: 2 succeeded, 0 failed, 1 canceled\n"+ids[0]+" canceled\n") {
		t.Fatalf("wait printed\n%s\nstderr\n%s\nwant\n%s", stdout.String(), stderr.String(), want)
	}
	if err := apitest.Recv(t, oneExited, "one job's wait to exit once it ended"); err != nil || oneOut.String() != `{"values":[1],"sum":1}`+"\n" {
		t.Fatalf("wait %s through the server's restart: %v\nstdout %s\nstderr %s", ids[1], err, oneOut.String(), oneErr.String())
	}
	if _, errOut, err := run("", "wait", ids[1], "short_nope"); err == nil || !strings.Contains(errOut, "short_nope") || !strings.Contains(errOut, "not found") {
		t.Fatalf("wait of an id that does not exist: %v %s", err, errOut)
	}
	// retry --wait of many jobs follows them all.
	if _, errOut, err := run("", "kind", "pause", "short"); err != nil {
		t.Fatalf("kind pause: %v %s", err, errOut)
	}
	again, errOut, err := run("", "submit", "short", "1", "--count", "2")
	if err != nil {
		t.Fatalf("submit --count 2: %v %s", err, errOut)
	}
	if out, errOut, err := run("", "cancel", "-", "--state", "queued"); err == nil {
		t.Fatalf("cancel - with --state: %v\n%s%s; want refused", err, out, errOut)
	}
	if out, errOut, err := run(again, "cancel", "-"); err != nil || strings.Count(out, " canceled") != 2 {
		t.Fatalf("cancel -: %v\n%s%s", err, out, errOut)
	}
	if _, errOut, err := run("", "kind", "resume", "short"); err != nil {
		t.Fatalf("kind resume: %v %s", err, errOut)
	}
	if out, errOut, err := run(again, "retry", "-", "--wait"); err != nil || strings.Count(out, "(retry 1)") != 2 || !strings.Contains(errOut, "2/2 jobs finished: 2 succeeded, 0 failed, 0 canceled") {
		t.Fatalf("retry - --wait: %v\nstdout %s\nstderr %s", err, out, errOut)
	}
	// A server never reached is said at once, not waited for.
	for _, args := range [][]string{{ids[1]}, ids} {
		out, err := exec.Command(binary, append([]string{"wait", "--server", "http://127.0.0.1:1"}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "cannot reach the server") {
			t.Fatalf("wait %d jobs on a server that does not answer: %v %s", len(args), err, out)
		}
	}
}
