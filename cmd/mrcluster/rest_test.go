package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/internal/apitest"
)

// goroutines reads the server's go_goroutines from its /metrics.
func (p *proc) goroutines(t *testing.T) int {
	t.Helper()
	resp, err := apitest.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_goroutines %q: %v", v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("no go_goroutines in %s/metrics", p.url)
	return 0
}

// A server that ran jobs of every shape and is at rest again runs as many
// goroutines as after the first round of them: what each job, upload,
// read, cancel, pause and websocket started has ended. (The package tests'
// goleak checks see what a component leaves once stopped; this sees what
// piles up in a server that runs on.) On failure the server is sent
// SIGQUIT, whose goroutine dump ends its output.
func TestAServerAtRestRunsWhatItRanBefore(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--sleep-scale", "0.001")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append(args, "--server", p.url)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mrcluster %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")}
	for i, f := range files {
		if err := os.WriteFile(f, []byte(strings.Repeat(fmt.Sprintf("the whale %d and the sea\n", i), 5000)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	round := func(r int) {
		ds := fmt.Sprintf("ds%d", r)
		run("dataset", "put", ds, files[0], files[1])
		wc := strings.Fields(run("submit", "wordcount", "--input", ds, "--partitions", "3", "--reducers", "2", "--wait"))[0]
		run("submit", "grep", "--input", ds, "--partitions", "2", "--param", "pattern=whale", "--wait")
		run("output", wc)
		run("submit", "noop", "1", "--count", "100", "--wait")
		run("kind", "pause", "noop")
		run("submit", "noop", "2", "--count", "5")
		run("cancel", "--kind", "noop")
		run("kind", "resume", "noop")
		run("delete", wc)
		run("dataset", "rm", ds)
		for _, path := range []string{"/status", "/workerStatus", "/queue", "/results", "/api/v1/events"} {
			c := p.client().Dial(t, path)
			_, _, err := c.Read(apitest.Context(t))
			if err != nil {
				t.Fatalf("read %s: %v", path, err)
			}
			c.Close(websocket.StatusNormalClosure, "")
		}
	}
	settled := func() int { // two reads half a second apart agree
		last := p.goroutines(t)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			time.Sleep(500 * time.Millisecond)
			n := p.goroutines(t)
			if n == last {
				return n
			}
			last = n
		}
		return last
	}
	round(0)
	before := settled()
	for r := 1; r <= 3; r++ {
		round(r)
	}
	const slack = 5 // what comes and goes: a connection being closed, a timer's goroutine
	n := p.goroutines(t)
	for deadline := time.Now().Add(30 * time.Second); n > before+slack && time.Now().Before(deadline); n = p.goroutines(t) {
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("goroutines at rest: %d after the first round, %d after three more", before, n)
	if n > before+slack {
		_ = p.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines to its output
		err := <-p.exited
		p.exited <- err // for the cleanup
		t.Fatalf("%d goroutines at rest after three more rounds of jobs, %d after the first: %d more, left by the jobs (the server's goroutines are in its output above)", n, before, n-before)
	}
}
