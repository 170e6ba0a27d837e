package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/view"
)

// With --log-format json every log line is a JSON object, with one line per
// HTTP request and per job state change carrying the ids as attributes.
func TestJSONLogs(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir(), nil, "--log-format", "json", "--sleep-scale", "0.001")
	c := p.client()
	j := c.Submit(t, "short", 3)
	c.Await(t, j.ID, func(j client.Job) bool { return j.State == client.Succeeded })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-p.exited; err != nil {
		t.Fatalf("exit: %v", err)
	}
	p.exited <- nil
	var sawRequest, sawSucceeded bool
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := line[k]; !ok {
				t.Fatalf("log line without %q: %s", k, sc.Text())
			}
		}
		switch line["msg"] {
		case "http request":
			if line["route"] == "POST /api/v1/jobs" && line["status"] == float64(202) && line["duration"] != nil && line["method"] == "POST" && line["client"] == "127.0.0.1" {
				sawRequest = true
			}
		case "job succeeded":
			// From running, or from queued when the tasks ended within the
			// 100 ms a start notice waits before it moves the job.
			if line["job"] == j.ID && line["kind"] == "short" && (line["from"] == "running" || line["from"] == "queued") && line["to"] == "succeeded" {
				sawSucceeded = true
			}
		}
	}
	if !sawRequest || !sawSucceeded {
		t.Fatalf("request line %v, job line %v in:\n%s", sawRequest, sawSucceeded, p.out)
	}
}

// A flag beats the environment, which beats the file, which beats the
// default; `mrcluster config` says which gave each value.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "mrcluster.toml")
	err := os.WriteFile(file, []byte("workers = 2\nmax-partitions = 50\nack-wait = \"9s\"\naddr = \"127.0.0.1:1\"\nallow-origin = [\"http://a.example\", \"http://b.example:*\"]\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "config", "--config", file, "--ack-wait", "7s")
	cmd.Env = append(os.Environ(), "MRCLUSTER_MAX_PARTITIONS=60", "MRCLUSTER_ADDR=127.0.0.1:2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("config: %v\n%s", err, out)
	}
	for _, want := range []string{
		`ack-wait = "7s"`, "# flag",
		`max-partitions = 60`, "# env MRCLUSTER_MAX_PARTITIONS",
		`addr = "127.0.0.1:2"`,
		`workers = 2`, "# file " + file,
		`max-file-mb = 8192`, `insecure = false`,
		`allow-origin = "http://a.example,http://b.example:*"`,
		`data-dir = "./mrcluster-data"`, "# default",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}

	// serve applies the file.
	p := start(t, t.TempDir(), nil, "--config", file, "--addr", "127.0.0.1:0")
	var st struct{ Workers []view.SeedWorker }
	p.client().Do(t, "GET", "/status", "").JSON(t, &st)
	if len(st.Workers) != 2 {
		t.Fatalf("workers = 2 in the file gave %d workers", len(st.Workers))
	}
	if r := p.client().Do(t, "POST", "/short/51", ""); r.Status != 400 || !strings.Contains(string(r.Body), "from 1 to 50") {
		t.Fatalf("max-partitions = 50 in the file not applied: %d %s", r.Status, r.Body)
	}

	// What config prints is a file serve reads back, to the same
	// settings; a secret is not printed, so it is left out.
	round := filepath.Join(t.TempDir(), "round.toml")
	cmd = exec.Command(binary, "config", "--config", file, "--auth-token", "s3cret")
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("config: %v", err)
	}
	if strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), `# auth-token = "****"`) {
		t.Fatalf("config shows the token, or does not say it is hidden:\n%s", out)
	}
	if err := os.WriteFile(round, out, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := exec.Command(binary, "config", "--config", round).CombinedOutput()
	if err != nil {
		t.Fatalf("config --config of config's own output: %v\n%s", err, again)
	}
	values := func(b []byte) []string {
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if v, _, _ := strings.Cut(l, "#"); strings.TrimSpace(v) != "" && !strings.HasPrefix(v, "auth-token =") {
				out = append(out, strings.TrimSpace(v))
			}
		}
		return out
	}
	if a, b := values(out), values(again); strings.Join(a, "\n") != strings.Join(b, "\n") || len(a) < 30 {
		t.Fatalf("the settings read back differ:\n%s\nthen\n%s", out, again)
	}
	start(t, t.TempDir(), nil, "--config", round, "--addr", "127.0.0.1:0")

	// Mistakes in the file are named.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	_ = os.WriteFile(bad, []byte("wrokers = 3\n"), 0o644)
	out, err = exec.Command(binary, "config", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown setting "wrokers"`) {
		t.Fatalf("a misspelt setting: %v %s", err, out)
	}
	_ = os.WriteFile(bad, []byte("workers = \"many\"\n"), 0o644)
	out, err = exec.Command(binary, "config", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "workers = many") {
		t.Fatalf("a bad value: %v %s", err, out)
	}
	out, err = exec.Command(binary, "config", "--trusted-proxy", "10.0.0.0/8,proxy.local").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--trusted-proxy "proxy.local" is neither an IP address nor a network`) {
		t.Fatalf("a bad trusted proxy: %v %s", err, out)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "mrcluster ") {
		t.Fatalf("version: %v %q", err, out)
	}
	p := start(t, t.TempDir(), nil)
	var h struct{ Status, Version string }
	p.client().Do(t, "GET", "/healthz", "").JSON(t, &h)
	if h.Status != "ok" || h.Version == "" || !strings.Contains(string(out), h.Version) {
		t.Fatalf("healthz = %+v, version command said %q", h, out)
	}
}

// A second server on the data directory of a running one refuses to
// start, naming the first's process (two would write the same store
// files); once the first is killed, a server starts there again.
func TestOneServerPerDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := start(t, dir, nil)
	out, err := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", dir).CombinedOutput()
	want := fmt.Sprintf("--data-dir %s is in use by another mrcluster server (process %d)", dir, p.cmd.Process.Pid)
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("a second server on the same data directory: %v\n%s\nwant an exit saying %q", err, out, want)
	}
	p.kill(t)
	start(t, dir, nil)
}
