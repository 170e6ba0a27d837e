package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
)

// GET /api/v1/jobs/{id}?wait=D answers once the job has finished, or with
// its state once D is over: a script follows a job with one request where
// it polled; a wait that is no duration, or over a minute, is a 400.
func TestGetJobWaitsForItsEnd(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	hold, release := held(started)
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(hold) })
	j := b.submit(t, "hold", 1)
	for _, bad := range []string{"abc", "-1s", "2m", "10"} {
		if r := b.do(t, "GET", "/api/v1/jobs/"+j.ID+"?wait="+bad, ""); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "wait must be a duration from 0s to 1m0s") {
			t.Errorf("wait=%s: %d %s; want a 400 naming the wait", bad, r.Status, r.Body)
		}
	}
	if r := b.do(t, "GET", "/api/v1/jobs/hold_nope?wait=30s", ""); r.Status != http.StatusNotFound {
		t.Errorf("a wait for a job that does not exist: %d %s; want 404 at once", r.Status, r.Body)
	}
	apitest.Recv(t, started, "the job's task to start")
	var got client.Job
	begun := time.Now()
	r := b.do(t, "GET", "/api/v1/jobs/"+j.ID+"?wait=300ms", "")
	if r.JSON(t, &got); r.Status != http.StatusOK || got.State.Terminal() || time.Since(begun) < 300*time.Millisecond {
		t.Fatalf("a wait of 300 ms on a running job: %d %s after %v; want it unfinished, after the 300 ms", r.Status, got.State, time.Since(begun))
	}
	// A wait of a minute, answered as the job ends.
	type answer struct {
		status int
		job    client.Job
		took   time.Duration
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		begun := time.Now()
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(b.srv.URL() + "/api/v1/jobs/" + j.ID + "?wait=1m")
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		a := answer{status: resp.StatusCode}
		a.err = json.NewDecoder(resp.Body).Decode(&a.job)
		a.took = time.Since(begun)
		done <- a
	}()
	close(release)
	a := apitest.Recv(t, done, "the wait of a minute to be answered")
	if a.err != nil || a.status != http.StatusOK || a.job.State != client.Succeeded || a.took > 50*time.Second {
		t.Fatalf("a wait of a minute on a job that then ended: %d %s after %v (%v); want it succeeded, well before the minute", a.status, a.job.State, a.took, a.err)
	}
	// Counted, not timed: a wait's time is the client's, not the server's
	// latency.
	m := string(b.do(t, "GET", "/metrics", "").Body)
	if !strings.Contains(m, `mrcluster_http_requests_total{code="200",method="GET",route="GET /api/v1/jobs/{id}"} 2`) ||
		strings.Contains(m, `mrcluster_http_request_duration_seconds_count{method="GET",route="GET /api/v1/jobs/{id}"}`) {
		t.Errorf("the metrics of the waiting GETs (want 2 counted with 200, none timed):\n%s", grepLines(m, "/api/v1/jobs/{id}\""))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
