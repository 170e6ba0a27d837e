package app_test

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
)

// scrape returns the samples of /metrics, keyed by name and labels as
// printed, e.g. `mrcluster_jobs_submitted_total{kind="noop"}`.
func (b *bundle) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	r := b.do(t, "GET", "/metrics", "")
	if r.Status != 200 {
		t.Fatalf("GET /metrics = %d %s", r.Status, r.Body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsMoveAsJobsRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	before := b.scrape(t)
	for name, want := range map[string]float64{"mrcluster_workers": 4, "mrcluster_queue_depth": 0} {
		if before[name] != want {
			t.Errorf("%s = %v before any job, want %v", name, before[name], want)
		}
	}
	j := b.submit(t, "noop", 7)
	b.awaitState(t, j.ID, client.Succeeded)
	f := b.submit(t, "fail", 3)
	b.await(t, f.ID, terminal)
	// The coordinator counts a change just after writing it, so a reader
	// may see the failed job a moment before its counters move. It applies
	// results in order, one batch at a time: once a later job (of a kind
	// whose counters are not checked) is seen done, the failed job's
	// counting is over.
	last := b.submit(t, "short", 1)
	b.awaitState(t, last.ID, client.Succeeded)
	after := b.scrape(t)
	for name, delta := range map[string]float64{
		`mrcluster_jobs_submitted_total{kind="noop"}`:                                       1,
		`mrcluster_job_transitions_total{kind="noop",state="succeeded"}`:                    1,
		`mrcluster_job_transitions_total{kind="fail",state="failed"}`:                       1,
		`mrcluster_tasks_finished_total{kind="noop",outcome="done",phase="map"}`:            7,
		`mrcluster_tasks_finished_total{kind="fail",outcome="failed",phase="map"}`:          1,
		`mrcluster_task_duration_seconds_count{kind="noop",phase="map"}`:                    7,
		`mrcluster_http_requests_total{code="202",method="POST",route="POST /api/v1/jobs"}`: 3,
		`mrcluster_jobs{state="succeeded"}`:                                                 2,
		`mrcluster_jobs{state="failed"}`:                                                    1,
	} {
		if got := after[name] - before[name]; got != delta {
			t.Errorf("%s moved by %v, want %v", name, got, delta)
		}
	}
	for _, name := range []string{
		`mrcluster_jetstream_stream_messages{stream="MR_RESULTS"}`,
		`mrcluster_jetstream_stream_messages{stream="KV_mr_jobs"}`,
	} {
		if after[name] < 1 {
			t.Errorf("%s = %v, want at least 1", name, after[name])
		}
	}
	if room := after["mrcluster_store_room_bytes"]; !(room > 1<<20) {
		t.Errorf("mrcluster_store_room_bytes = %v on a store with room", room)
	}
	// An open websocket is counted once its first message arrived.
	c := b.dial(t, "/queue")
	var q []string
	readJSON(t, c, &q)
	if n := b.scrape(t)["mrcluster_websocket_clients"]; n < 1 {
		t.Errorf("mrcluster_websocket_clients = %v with a websocket open", n)
	}
}

// Every metric the Grafana dashboard in docs/ queries exists.
func TestGrafanaDashboardUsesRealMetrics(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	b := setup(t)
	j := b.submit(t, "noop", 2)
	b.awaitState(t, j.ID, client.Succeeded)
	re := regexp.MustCompile(`mrcluster_[a-z_]+`)
	var queried []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queried = append(queried, re.FindAllString(tg.Expr, -1)...)
		}
	}
	n := len(queried)
	// A task's metrics are counted just after its result is written, so
	// they may trail the job's success by a moment on a loaded machine.
	deadline := time.Now().Add(10 * time.Second)
	for {
		names := map[string]bool{}
		for k := range b.scrape(t) {
			name, _, _ := strings.Cut(k, "{")
			names[name] = true
		}
		var missing []string
		for _, m := range queried {
			if !names[m] {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard queries %v, which /metrics does not have", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n < 10 {
		t.Fatalf("the dashboard queries only %d metrics", n)
	}
}
