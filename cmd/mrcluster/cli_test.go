package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/apitest"
)

// mrcluster runs the binary with env added to the environment and returns
// its stdout, stderr and exit code.
func mrcluster(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("mrcluster %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// Every client command finds its server and token in MRCLUSTER_SERVER and
// MRCLUSTER_TOKEN when no flag gives them, and a flag beats them; each
// answers --help with its usage and exit status 0.
func TestCLIEnvironmentAndHelp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, t.TempDir(), nil, "--auth-token-file", tokenFile, "--auth-read")
	file := filepath.Join(dir, "a.txt")
	_ = os.WriteFile(file, []byte("the cat\nthe dog\n"), 0o600)
	env := []string{"MRCLUSTER_SERVER=" + p.url, "MRCLUSTER_TOKEN=s3cret"}
	ok := func(args ...string) string {
		t.Helper()
		out, errOut, code := mrcluster(t, env, args...)
		if code != 0 {
			t.Fatalf("mrcluster %s with the server and token in the environment: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	ok("dataset", "put", "pets", file)
	if out := ok("dataset", "ls"); !strings.Contains(out, "pets") {
		t.Fatalf("dataset ls:\n%s", out)
	}
	// A file keeps its name, spaces and all; a character a stored name
	// cannot hold (':') is stored as '-', as the dashboard does, and the
	// command says so.
	spaced, colon := filepath.Join(dir, "My Pets.txt"), filepath.Join(dir, "birds: notes.txt")
	_ = os.WriteFile(spaced, []byte("the bird\n"), 0o600)
	_ = os.WriteFile(colon, []byte("a wing\n"), 0o600)
	if _, errOut, code := mrcluster(t, env, "dataset", "put", "birds", spaced, colon); code != 0 ||
		!strings.Contains(errOut, "as birds/My Pets.txt") || !strings.Contains(errOut, "as birds/birds- notes.txt") {
		t.Fatalf("dataset put of %q and %q: exit %d, %s", spaced, colon, code, errOut)
	}
	if out := ok("dataset", "ls"); !regexp.MustCompile(`(?m)^birds\s+2\s+16\s`).MatchString(out) {
		t.Fatalf("dataset ls after files of a spaced name and a colon:\n%s", out)
	}
	// A dataset's files are listed, read back and deleted one by one.
	if out := ok("dataset", "ls", "birds"); !regexp.MustCompile(`(?m)^My Pets.txt\s+9\s+1\s`).MatchString(out) || !strings.Contains(out, "birds- notes.txt") {
		t.Fatalf("dataset ls birds:\n%s", out)
	}
	if out := ok("dataset", "cat", "birds", "My Pets.txt"); out != "the bird\n" {
		t.Fatalf("dataset cat birds 'My Pets.txt': %q", out)
	}
	ok("dataset", "rm", "birds", "birds- notes.txt")
	if out := ok("dataset", "ls"); !regexp.MustCompile(`(?m)^birds\s+1\s+9\s`).MatchString(out) {
		t.Fatalf("dataset ls after a file of birds was deleted:\n%s", out)
	}
	if _, errOut, code := mrcluster(t, env, "dataset", "cat", "birds", "birds- notes.txt"); code != 1 || !strings.Contains(errOut, `dataset birds has no file "birds- notes.txt"`) {
		t.Fatalf("dataset cat of a deleted file: exit %d, %s", code, errOut)
	}
	if out := ok("kinds"); !strings.Contains(out, "grep") || !strings.Contains(out, "pattern") {
		t.Fatalf("kinds lists no grep with its pattern:\n%s", out)
	}
	ok("kind", "ls")
	if out := ok("kind", "pause", "grep"); !strings.Contains(out, "kind grep paused") {
		t.Fatalf("kind pause: %q", out)
	}
	if out := ok("kinds"); !regexp.MustCompile(`(?m)^grep\s+built in.*paused`).MatchString(out) {
		t.Fatalf("kinds after a pause:\n%s", out)
	}
	// status says why a paused kind's tasks wait.
	waiting := strings.TrimSpace(ok("submit", "grep", "--input", "pets", "--partitions", "1", "--param", "pattern=cat"))
	if out := ok("status"); !strings.Contains(out, waiting+": 1 (kind paused)") || !regexp.MustCompile(`(?m)^kinds paused, their tasks waiting until resumed \(mrcluster kind resume NAME\): grep since \d{4}-`).MatchString(out) {
		t.Fatalf("status with grep paused and %s waiting:\n%s", waiting, out)
	}
	ok("kind", "resume", "grep")
	ok("wait", waiting)
	if out := ok("kind", "limit", "grep", "--concurrency", "2", "--rate", "50/s"); !strings.Contains(out, "kind grep: at most 2 at once, at most 50/s") {
		t.Fatalf("kind limit: %q", out)
	}
	if out := ok("kinds"); !regexp.MustCompile(`(?m)^grep\s+built in.*at most 2 at once, at most 50/s`).MatchString(out) {
		t.Fatalf("kinds after a limit:\n%s", out)
	}
	if out := ok("status"); !strings.Contains(out, "kinds limited: grep (at most 2 at once, at most 50/s)") {
		t.Fatalf("status with grep limited:\n%s", out)
	}
	ok("kind", "limit", "grep", "--concurrency", "0")
	id := strings.Fields(ok("submit", "wordcount", "--input", "pets", "--partitions", "2"))[0]
	if out := ok("wait", id); !strings.Contains(out, "the 2") {
		t.Fatalf("wait %s printed %q", id, out)
	}
	for _, args := range [][]string{{"job", id}, {"jobs"}, {"output", id}, {"status"}, {"job", id, "-o", "json"}} {
		ok(args...)
	}
	// The task attempts, maps first, as the dashboard's table.
	if out := ok("job", id, "--tasks"); !regexp.MustCompile(`(?s)\nPHASE\s+TASK\s+ATTEMPT\s+WORKER\s+STATE\s+TOOK\s+VALUE OR ERROR\n` +
		`map\s+\d\s+1\s+\S+\s+done\s+\S+\s+\d+ records out\nmap\s+\d\s+1\s+\S+\s+done\s+.*\nreduce\s+0\s+1\s+\S+\s+done\s`).MatchString(out) {
		t.Fatalf("job --tasks:\n%s", out)
	}
	if out := ok("job", id, "--tasks", "-o", "json"); !strings.HasPrefix(out, "{\n  \"tasks\": [") {
		t.Fatalf("job --tasks -o json:\n%s", out)
	}
	again := strings.TrimSpace(ok("rerun", id))
	if out := ok("job", again); !strings.HasPrefix(again, "wordcount_") || again == id || !regexp.MustCompile(`(?m)^rerun of\s+`+id+`$`).MatchString(out) {
		t.Fatalf("rerun %s gave %q:\n%s", id, again, out)
	}
	ok("wait", again)
	ok("delete", again)
	short := strings.TrimSpace(ok("submit", "long", "50")) // minutes of sleeps: canceled long before its end
	if out := ok("cancel", short); !strings.Contains(out, "canceled") {
		t.Fatalf("cancel: %q", out)
	}
	if _, _, code := mrcluster(t, env, "wait", short); code != 1 {
		t.Fatalf("wait of a canceled job exited %d, want 1", code)
	}
	urgent := strings.TrimSpace(ok("submit", "noop", "1", "--priority", "4", "--wait"))
	if out := ok("job", strings.Fields(urgent)[0]); !regexp.MustCompile(`(?m)^priority\s+4$`).MatchString(out) {
		t.Fatalf("a job of priority 4:\n%s", out)
	}
	if _, errOut, code := mrcluster(t, env, "submit", "noop", "1", "--priority", "9"); code != 1 || !strings.Contains(errOut, "priority must be an integer from 1 (low) to 4 (high)") {
		t.Fatalf("--priority 9: exit %d %s", code, errOut)
	}
	// Retried, the canceled job is queued again, in the same job.
	if out := ok("retry", short); !regexp.MustCompile(`^` + short + ` (queued|running) \(retry 1\)\n$`).MatchString(out) {
		t.Fatalf("retry: %q", out)
	}
	if out := ok("job", short); !regexp.MustCompile(`(?m)^retries\s+1$`).MatchString(out) {
		t.Fatalf("job after a retry:\n%s", out)
	}
	ok("cancel", short)
	if _, errOut, code := mrcluster(t, env, "retry", id); code != 1 || !strings.Contains(errOut, "only a failed or canceled job can be retried") {
		t.Fatalf("retry of a succeeded job: exit %d %s", code, errOut)
	}
	// A cron schedule of a wordcount every second, through every
	// subcommand; its job reads the dataset, so the schedule goes first.
	if out := ok("schedule", "add", "tick", "--cron", "* * * * * *", "--timezone", "Europe/Paris", "wordcount", "2", "--input", "pets"); !strings.Contains(out, "Europe/Paris") || !strings.Contains(out, "wordcount, 2 partitions, input pets") {
		t.Fatalf("schedule add:\n%s", out)
	}
	var fired struct{ Jobs []struct{ Job string } }
	for len(fired.Jobs) == 0 {
		if err := json.Unmarshal([]byte(ok("schedule", "show", "tick", "-o", "json")), &fired); err != nil {
			t.Fatal(err)
		}
		if len(fired.Jobs) == 0 {
			ok("wait", strings.TrimSpace(ok("submit", "noop", "1"))) // a job's time, not a sleep
		}
	}
	if out := ok("job", fired.Jobs[0].Job); !regexp.MustCompile(`(?m)^schedule\s+tick, tick `).MatchString(out) {
		t.Fatalf("a schedule's job does not name it:\n%s", out)
	}
	if out := ok("schedule", "pause", "tick"); !strings.Contains(out, "paused") {
		t.Fatalf("schedule pause:\n%s", out)
	}
	if out := ok("schedule", "ls"); !regexp.MustCompile(`tick\s+\* \* \* \* \* \*\s+Europe/Paris\s+wordcount 2\s+paused`).MatchString(out) {
		t.Fatalf("schedule ls:\n%s", out)
	}
	ok("schedule", "resume", "tick")
	ok("schedule", "rm", "tick")
	if _, errOut, code := mrcluster(t, env, "schedule", "show", "tick"); code != 1 || !strings.Contains(errOut, `schedule "tick" not found`) {
		t.Fatalf("show a deleted schedule: exit %d %s", code, errOut)
	}
	if _, errOut, code := mrcluster(t, env, "schedule", "add", "x", "noop", "1"); code != 1 || !strings.Contains(errOut, "--cron") {
		t.Fatalf("schedule add without --cron: exit %d %s", code, errOut)
	}
	ok("delete", id)
	ok("dataset", "rm", "pets")

	// Without the token: refused, and told what to do.
	if _, errOut, code := mrcluster(t, []string{"MRCLUSTER_SERVER=" + p.url}, "dataset", "ls"); code != 1 || !strings.Contains(errOut, "--token") {
		t.Fatalf("dataset ls without the token: exit %d %s", code, errOut)
	}
	// A flag beats the environment, both ways.
	if _, errOut, code := mrcluster(t, env, "dataset", "ls", "--server", "http://127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "cannot reach the server at http://127.0.0.1:1") {
		t.Fatalf("--server beats MRCLUSTER_SERVER: exit %d %s", code, errOut)
	}
	bad := []string{"MRCLUSTER_SERVER=http://127.0.0.1:1", "MRCLUSTER_TOKEN=s3cret"}
	if _, errOut, code := mrcluster(t, bad, "status", "--server", p.url); code != 0 {
		t.Fatalf("--server beats an unreachable MRCLUSTER_SERVER: exit %d %s", code, errOut)
	}

	// Help, everywhere.
	out, _, code := mrcluster(t, nil, "--help")
	for _, cmd := range []string{"serve", "worker", "submit", "dataset", "kind put", "kinds", "schedule add", "wait", "retry", "rerun", "output", "jobs", "job", "cancel", "delete", "status", "config", "version"} {
		if !strings.Contains(out, "mrcluster "+cmd) {
			t.Errorf("the top-level help lacks %q", cmd)
		}
	}
	if code != 0 {
		t.Errorf("--help exited %d", code)
	}
	for _, args := range [][]string{{"submit", "--help"}, {"dataset", "--help"}, {"dataset", "put", "-h"}, {"kind", "--help"}, {"kinds", "-h"}, {"schedule", "--help"}, {"schedule", "add", "-h"}, {"wait", "-h"}, {"rerun", "-h"}, {"retry", "-h"}, {"job", "--help"}, {"jobs", "-h"}, {"output", "-h"}, {"cancel", "-h"}, {"delete", "-h"}, {"status", "-h"}, {"config", "-h"}, {"serve", "-h"}, {"worker", "-h"}} {
		out, errOut, code := mrcluster(t, nil, args...)
		if code != 0 || !strings.Contains(strings.ToLower(out+errOut), "usage") {
			t.Errorf("mrcluster %s: exit %d, no usage:\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	if _, errOut, code := mrcluster(t, nil); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Errorf("mrcluster alone: exit %d\n%s", code, errOut)
	}
	// Mistakes in the command line's own terms.
	if _, errOut, code := mrcluster(t, env, "submit", "short", "3", "--partitions", "5"); code != 1 || !strings.Contains(errOut, "give the partition count once") {
		t.Errorf("two partition counts: exit %d %s", code, errOut)
	}
	if _, errOut, code := mrcluster(t, env, "submit", "grep", "--input", "x", "--partitions", "1"); code != 1 || !strings.Contains(errOut, "--param pattern=… is required") {
		t.Errorf("grep without its pattern: exit %d %s", code, errOut)
	}
}

// A second server on a taken NATS port fails at once, saying so; and
// --allow-origin adds to the loopback origins, which
// --allow-loopback-origins=false drops.
func TestServeFlags(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--allow-origin", "https://dash.example.com", "--sleep-scale", "0.001", "--kind-limit", "grep=concurrency:3,rate:20/s; short=concurrency:1")
	kinds, err := p.client().API().Kinds(apitest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		want := map[string]string{"grep": "3 20/s", "short": "1 "}[k.Name]
		if got := fmt.Sprintf("%d %s", k.Concurrency, k.Rate); want != "" && got != want {
			t.Errorf("--kind-limit: kind %s has %q, want %q", k.Name, got, want)
		}
	}
	for _, bad := range [][]string{{"--kind-limit", "nope=concurrency:1"}, {"--kind-limit", "grep=speed:2"}} {
		_, errOut, code := mrcluster(t, nil, append([]string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, bad...)...)
		if code != 1 || !strings.Contains(errOut, "--kind-limit") {
			t.Errorf("serve %v: exit %d\n%s", bad, code, errOut)
		}
	}
	_, port, _ := strings.Cut(strings.TrimPrefix(p.nats, "nats://"), ":")
	_, errOut, code := mrcluster(t, nil, "serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:"+port, "--data-dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "cannot listen on 127.0.0.1:"+port+" (--nats-listen)") {
		t.Fatalf("serve on a taken NATS port: exit %d\n%s", code, errOut)
	}
	origin := func(p *proc, o string) int {
		return p.client().Do(t, "POST", "/noop/1", "", "Origin", o).Status
	}
	for o, want := range map[string]int{"https://dash.example.com": 200, "http://localhost:5173": 200, "http://evil.example.com": 403} {
		if got := origin(p, o); got != want {
			t.Errorf("origin %s: %d, want %d", o, got, want)
		}
	}
	q := start(t, t.TempDir(), nil, "--allow-origin", "https://dash.example.com", "--allow-loopback-origins=false", "--sleep-scale", "0.001")
	for o, want := range map[string]int{"https://dash.example.com": 200, "http://localhost:5173": 403} {
		if got := origin(q, o); got != want {
			t.Errorf("without loopback origins, origin %s: %d, want %d", o, got, want)
		}
	}
}
