package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
)

// submit sends an Idempotency-Key and, told to try again (503), sends the
// same request with the same key, so that a submit stored after all is not
// made twice.
func TestSubmitRetriesWithOneIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"the job store is not answering; try again shortly"}}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"id":"noop_0000000000000000000000000a","kind":"noop","state":"queued","partitions":1}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := submit(ctx, []string{"noop", "1", "--server", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("submit: %v (%s)", err, errOut.String())
	}
	if got := strings.TrimSpace(out.String()); got != "noop_0000000000000000000000000a" {
		t.Fatalf("printed %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 3 || keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Fatalf("keys sent: %q; want three equal, non-empty keys", keys)
	}
}

func TestSubmitDoesNotRetryABadRequest(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"code":"invalid","message":"unknown kind \"nope\""}}`))
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	err := submit(context.Background(), []string{"nope", "1", "--server", srv.URL}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "unknown kind") {
		t.Fatalf("submit of an unknown kind: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("a 400 was sent %d times; want once", calls)
	}
}

// A --file holds specs one a line, in arrays or as batch bodies; a spec
// with a field the API does not know is named with its line.
func TestReadSpecs(t *testing.T) {
	in := `{"kind":"noop","partitions":1}
[{"kind":"short","partitions":2}, {"kind":"noop","partitions":3}]

{"jobs":[{"kind":"grep","partitions":4,"params":{"pattern":"x"},"input":["books"]}]}
  {"kind":"noop",
   "partitions":5, "priority":4}
`
	specs, err := readSpecs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range specs {
		got = append(got, fmt.Sprintf("%s/%d@%d", s.spec.Kind, s.spec.Partitions, s.line))
	}
	if want := "noop/1@1 short/2@2 noop/3@2 grep/4@4 noop/5@5"; strings.Join(got, " ") != want {
		t.Fatalf("specs %q; want %q", got, want)
	}
	if specs[3].spec.Params["pattern"] != "x" || specs[4].spec.Priority != 4 {
		t.Fatalf("fields lost: %+v %+v", specs[3].spec, specs[4].spec)
	}
	for _, c := range []struct{ in, want string }{
		{"{\"kind\":\"noop\",\"partitions\":1}\n{\"kind\":\"noop\",\"partitons\":2}\n", `spec 2 (line 2): json: unknown field "partitons"`},
		{"{\"kind\":\"noop\",\"partitions\":\"x\"}", "spec 1 (line 1)"},
		{"{\"kind\":\"noop\",\"partitions\":1}\n\n{\"kind\":", "line 3: not JSON"},
		{" \n", "no job spec in it"},
		{`{"jobs":{}}`, `line 1: "jobs" must be an array`},
	} {
		if _, err := readSpecs(strings.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("readSpecs(%q): %v; want an error with %q", c.in, err, c.want)
		}
	}
}

// submit --file sends the specs in batches of 1,000, in order, and prints
// the ids in order; a spec the server refuses is named by its place in
// the file, with what was submitted before it.
// batchServer is a fake API that takes batches of jobs: answer sees each
// batch's jobs and returns a refusal (a status and its error body), or 0
// to accept the batch, whose jobs get the ids noop_<partitions>.
func batchServer(t *testing.T, answer func(jobs []map[string]any) (status int, refusal string)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Jobs []map[string]any }
		if r.URL.Path != "/api/v1/jobs/batch" || json.NewDecoder(r.Body).Decode(&body) != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if status, refusal := answer(body.Jobs); status != 0 {
			if status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "5")
			}
			w.WriteHeader(status)
			fmt.Fprint(w, refusal)
			return
		}
		out := struct {
			Jobs []map[string]any `json:"jobs"`
		}{}
		for _, j := range body.Jobs {
			out.Jobs = append(out.Jobs, map[string]any{"id": fmt.Sprintf("noop_%v", j["partitions"]), "kind": "noop", "state": "queued"})
		}
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// refuseBadKind answers a batch as the API does when a spec's kind is
// "bad": 400, naming its index; else 0, for the batch to go in.
func refuseBadKind(jobs []map[string]any) (int, string) {
	for i, j := range jobs {
		if j["kind"] == "bad" {
			return http.StatusBadRequest, fmt.Sprintf(`{"error":{"code":"invalid","message":"jobs[%d]: unknown kind \"bad\""}}`, i)
		}
	}
	return 0, ""
}

// batchSizes records the size of every batch a fake server is sent.
type batchSizes struct {
	mu    sync.Mutex
	sizes []int
}

// record returns answer, recording the size of each batch it answers.
func (b *batchSizes) record(answer func(jobs []map[string]any) (int, string)) func(jobs []map[string]any) (int, string) {
	return func(jobs []map[string]any) (int, string) {
		b.mu.Lock()
		b.sizes = append(b.sizes, len(jobs))
		b.mu.Unlock()
		return answer(jobs)
	}
}

func (b *batchSizes) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprint(b.sizes)
}

func TestSubmitFile(t *testing.T) {
	var sizes batchSizes
	srv := batchServer(t, sizes.record(refuseBadKind))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lines []string
	for i := range 2500 {
		lines = append(lines, fmt.Sprintf(`{"kind":"noop","partitions":%d}`, i+1))
	}
	path := filepath.Join(t.TempDir(), "specs.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := submit(ctx, []string{"--file", path, "--server", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("submit --file: %v (%s)", err, errOut.String())
	}
	ids := strings.Fields(out.String())
	if len(ids) != 2500 || ids[0] != "noop_1" || ids[2499] != "noop_2500" || sizes.String() != "[1000 1000 500]" {
		t.Fatalf("%d ids (%v … ), batches %v; want 2500 in order, in batches [1000 1000 500]", len(ids), ids[:min(2, len(ids))], &sizes)
	}
	lines[1203] = `{"kind":"bad","partitions":1}`
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := submit(ctx, []string{"--file", path, "--server", srv.URL}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `spec 1204 (line 1204): unknown kind "bad"`) || !strings.Contains(err.Error(), "1000 specs before its batch were submitted") || len(strings.Fields(out.String())) != 1000 {
		t.Fatalf("a bad spec in the second batch: %v; printed %d ids", err, len(strings.Fields(out.String())))
	}
	if err := submit(ctx, []string{"noop", "1", "--file", path, "--server", srv.URL}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "give it alone") {
		t.Fatalf("--file with a kind: %v", err)
	}
}

// A bulk submit that the cluster has no room for waits and sends the batch
// again, saying why once; every batch goes in, in order. Stopped while it
// waits, it says what was submitted.
func TestBulkSubmitWaitsForRoom(t *testing.T) {
	defer func(w, m time.Duration) { busyWait, busyMaxWait = w, m }(busyWait, busyMaxWait)
	busyWait, busyMaxWait = time.Millisecond, 4*time.Millisecond
	var mu sync.Mutex
	var calls, refuse int
	stop := func() {} // called at the third request
	srv := batchServer(t, func([]map[string]any) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		busy := calls > 1 && refuse > 0 // the second batch meets a full cluster
		if busy {
			refuse--
		}
		if calls == 3 {
			stop()
		}
		if busy {
			return http.StatusTooManyRequests, `{"error":{"code":"too_many_requests","message":"the cluster has 250000 jobs not finished and this batch would add 1000, over the limit of 250000 (--max-unfinished-jobs); retry when some have finished"}}`
		}
		return 0, ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	refuse = 3
	var out, errOut bytes.Buffer
	if err := submit(ctx, []string{"noop", "1", "--count", "2500", "--server", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("submit --count 2500: %v (%s)", err, errOut.String())
	}
	mu.Lock()
	n := calls
	mu.Unlock()
	if ids := strings.Fields(out.String()); len(ids) != 2500 || n != 6 {
		t.Fatalf("%d ids printed after %d requests; want 2500 after 6 (3 batches, the second refused 3 times)", len(ids), n)
	}
	if n := strings.Count(errOut.String(), "waiting for the cluster to make room"); n != 1 || !strings.Contains(errOut.String(), "--max-unfinished-jobs") {
		t.Fatalf("said on stderr: %q; want the server's reason, once", errOut.String())
	}

	// Stopped while it waits: the error says what went in.
	path := filepath.Join(t.TempDir(), "specs.jsonl")
	if err := os.WriteFile(path, []byte(strings.Repeat(`{"kind":"noop","partitions":1}`+"\n", 1500)), 0o600); err != nil {
		t.Fatal(err)
	}
	sctx, cancelSubmit := context.WithCancel(ctx)
	mu.Lock()
	calls, refuse, stop = 0, 1<<30, cancelSubmit
	mu.Unlock()
	out.Reset()
	err := submit(sctx, []string{"--file", path, "--server", srv.URL}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "1000 specs before its batch were submitted") || len(strings.Fields(out.String())) != 1000 {
		t.Fatalf("stopped while waiting for room: %v; printed %d ids", err, len(strings.Fields(out.String())))
	}
}

// submit's and schedule add's flags make the spec's fields.
func TestSpecFlags(t *testing.T) {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	f := newSpecFlags(fs)
	if err := fs.Parse([]string{"--max-attempts", "5", "--priority", "3", "--reducers", "2", "--input", "books"}); err != nil {
		t.Fatal(err)
	}
	spec, err := f.spec("submit", []string{"wordcount", "4"}, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if spec.MaxAttempts != 5 || spec.Priority != 3 || spec.Reducers != 2 || spec.Partitions != 4 || len(spec.Input) != 1 {
		t.Fatalf("spec %+v", spec)
	}
}

// A file is stored under its base name, with '-' for each character a
// stored name cannot hold; two files of one upload that would be stored
// under one name are refused before anything is sent.
func TestStoredNames(t *testing.T) {
	for path, want := range map[string]string{
		"/data/moby.txt":       "moby.txt",
		"My Book.txt":          "My Book.txt",
		"/x/été 2026.csv":      "été 2026.csv",
		"../a..b.txt":          "a.b.txt",
		".hidden":              "hidden",
		"dots.":                "dots",
		" spaced .txt ":        "spaced .txt",
		"/tmp/naïve (1).txt":   "naïve (1).txt",
		"/srv/part-00001_x.gz": "part-00001_x.gz",
		"a:b,c*d?.txt":         "a-b-c-d-.txt",
		"tab\there\x00.txt":    "tab-here-.txt",
		"bad\xffutf8.txt":      "bad-utf8.txt",
	} {
		if err := job.ValidFileName(want); err != nil {
			t.Errorf("storedName(%q) = %q, which the server refuses: %v", path, want, err)
		}
		if got := storedName(path); got != want {
			t.Errorf("storedName(%q) = %q; want %q", path, got, want)
		}
	}
	if _, err := storedNames([]string{"a/x:y.txt", "b/x-y.txt"}); err == nil || !strings.Contains(err.Error(), "a/x:y.txt and b/x-y.txt would both be stored as x-y.txt") {
		t.Fatalf("two files of one name: %v", err)
	}
	if names, err := storedNames([]string{"a/one.txt", "b/two.txt"}); err != nil || names[1] != "two.txt" {
		t.Fatalf("two names: %v %v", names, err)
	}
}

// A submit that never got an answer (the server stopped answering after
// it may have stored the job) ends naming the key it was sent under, so
// that running the command again with it is answered that job rather than
// submitting a second one.
func TestSubmitWithoutAnAnswerNamesItsKey(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	keys := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys[r.Header.Get("Idempotency-Key")] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"a submit with this Idempotency-Key is still in progress; try again shortly"}}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := submit(ctx, []string{"noop", "1", "--server", srv.URL}, &out, &errOut)
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 1 {
		t.Fatalf("keys sent: %v; want one", keys)
	}
	for key := range keys {
		if err == nil || !strings.Contains(err.Error(), "run the same command again with --idempotency-key "+key) {
			t.Fatalf("submit without an answer: %v; want the key %s named", err, key)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("printed %q", out.String())
	}
}

// An unfinished job's tasks whose last attempt was interrupted, and that
// have not finished since, are named with why; others are not.
func TestWaitingNamesInterruptedTasks(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 12, 5, 1, 0, s, 0, time.Local) }
	tasks := []client.TaskAttempt{
		{Phase: "map", Partition: 0, State: "done", FinishedAt: at(1)},
		{Phase: "reduce", Partition: 0, State: "interrupted", FinishedAt: at(2), Error: "store x: the store has no room for it"},
		{Phase: "reduce", Partition: 0, State: "done", FinishedAt: at(3)},
		{Phase: "reduce", Partition: 1, State: "interrupted", FinishedAt: at(4), Error: "store y: the store has\\nno room for it"},
		{Phase: "reduce", Partition: 1, State: "interrupted", FinishedAt: at(9), Error: "not run: the store has room for 3 bytes, and the task's last output was 9"},
		{Phase: "reduce", Partition: 2, State: "failed", FinishedAt: at(5), Error: "boom"},
	}
	var out strings.Builder
	waiting(&out, tasks)
	want := "waiting        reduce 1, interrupted at 01:00:09: not run: the store has room for 3 bytes, and the task's last output was 9\n"
	if out.String() != want {
		t.Fatalf("waiting wrote\n%q\nwant\n%q", out.String(), want)
	}
}

// A negative number that is no flag's value is said as such, not as an
// unknown flag followed by every flag's help.
func TestNegativeArguments(t *testing.T) {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("priority", 2, "")
	fs.Bool("wait", false, "")
	for _, c := range []struct {
		args []string
		bad  string
	}{
		{args: []string{"noop", "-3"}, bad: "-3"},
		{args: []string{"noop", "3", "--wait", "-1.5"}, bad: "-1.5"},
		{args: []string{"noop", "3", "--priority", "-1"}},
		{args: []string{"noop", "3", "--priority=-1"}},
		{args: []string{"noop", "3", "--", "-3"}},
		{args: []string{"noop", "-x"}},
	} {
		err := negativeArg(fs, c.args)
		switch {
		case c.bad == "" && err != nil:
			t.Errorf("%q: %v; want no error", c.args, err)
		case c.bad != "" && (err == nil || !strings.HasPrefix(err.Error(), c.bad+": a negative number is not allowed here")):
			t.Errorf("%q: %v; want the error naming %s", c.args, err, c.bad)
		}
	}
	if _, err := parseInterspersed(fs, []string{"noop", "-3"}); err == nil || strings.Contains(err.Error(), "flag provided but not defined") {
		t.Errorf("parseInterspersed of a negative count: %v", err)
	}
}

// The task table says a lost attempt's time is not known rather than 0s
// (or at most how long, when the server saw it start),
// marks backups and runs that did not count, and puts the maps first.
func TestTaskTable(t *testing.T) {
	var out strings.Builder
	err := taskTable(&out, []client.TaskAttempt{
		{Partition: 0, Phase: "reduce", Attempt: 1, Worker: "h.1", State: "done", DurationMS: 2.5},
		{Partition: 1, Attempt: 1, State: "lost", Error: "the queue heard no end of this attempt"},
		{Partition: 2, Attempt: 1, Worker: "h.3", State: "lost", DurationMS: 11142, Error: "the queue heard no end of this attempt"},
		{Partition: 1, Attempt: 2, Worker: "h.0", State: "done", DurationMS: 9001, Value: 5, Superseded: true},
		{Partition: 1, Attempt: 1, Worker: "h.2", State: "done", DurationMS: 7001, Value: 5, Backup: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		`^PHASE\s+TASK\s+ATTEMPT\s+WORKER\s+STATE\s+TOOK\s+VALUE OR ERROR$`,
		`^map\s+1\s+1\s+-\s+lost\s+-\s+the queue heard no end of this attempt$`,
		`^map\s+2\s+1\s+h\.3\s+lost\s+≤11\.142s\s+the queue heard no end of this attempt$`,
		`^map\s+1\s+2\s+h\.0\s+done \(did not count\)\s+9\.001s\s+5$`,
		`^map\s+1\s+1\s+h\.2\s+done \(backup\)\s+7\.001s\s+5$`,
		`^reduce\s+0\s+1\s+h\.1\s+done\s+3ms\s+-$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("task table:\n%s", out.String())
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Errorf("line %d: %q; want it to match %s", i, lines[i], w)
		}
	}
}

// The reduce input line names the smallest, median and largest input of a
// job's reducers, and the hot key's reducer when one reads 4 times the
// median or more; a job of one reducer, or none, gets no line.
func TestReduceInputsLine(t *testing.T) {
	for _, c := range []struct {
		in   []int64
		want string
	}{
		{nil, ""},
		{[]int64{500}, ""},
		{[]int64{100, 120, 110}, "100 to 120 bytes per reducer, median 110"},
		{[]int64{100, 120, 2400, 110}, "100 to 2400 bytes per reducer, median 120; reducer 2 reads 20 times the median: a hot key"},
		{[]int64{0, 0, 0, 300}, "0 to 300 bytes per reducer, median 0; reducer 3 reads nearly all of it: a hot key"},
		{[]int64{0, 0}, "0 to 0 bytes per reducer, median 0"},
	} {
		if got := reduceInputs(c.in); got != c.want {
			t.Errorf("reduceInputs(%v) = %q; want %q", c.in, got, c.want)
		}
	}
}

// dataset put sends a file again, whole, while the server answers 503 (a
// write probe that timed out, a store electing a leader), and says it is
// stored once the server takes it.
func TestDatasetPutRetriesWhileUnavailable(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(data))
		n := len(bodies)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"the store does not take writes: try again shortly"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"name":"books"}`))
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "a.txt")
	if err := os.WriteFile(path, []byte("hello world\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := datasetCmd(ctx, []string{"put", "books", path, "--server", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("dataset put: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), "stored "+path+" as books/a.txt (12 bytes)") {
		t.Fatalf("said %q", errOut.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 3 || bodies[0] != "hello world\n" || bodies[1] != bodies[0] || bodies[2] != bodies[0] {
		t.Fatalf("bodies sent: %q; want the whole file three times", bodies)
	}
}

// status names the job a worker waits to run alone, as it names a busy
// worker's.
func TestStatusShowsAWorkerWaitingToRunATaskAlone(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/workers":
			_, _ = w.Write([]byte(`{"workers":[{"key":"w.0","host":"h","busy":true,"job_id":"nap_1","partition":0,"tasks_done":3},` +
				`{"key":"w.1","host":"h","busy":false,"job_id":"","waits_alone":"killer_2","tasks_done":1},{"key":"w.2","host":"h","busy":false,"job_id":"","tasks_done":0}]}`))
		case "/api/v1/queue":
			_, _ = w.Write([]byte(`{"depth":0,"jobs":[],"counts":{}}`))
		case "/api/v1/kinds":
			_, _ = w.Write([]byte(`{"kinds":[]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := status(ctx, []string{"--server", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("status: %v (%s)", err, errOut.String())
	}
	for _, want := range []string{`(?m)^w\.0\s+h\s+busy\s+nap_1\s+0\s+3$`, `(?m)^w\.1\s+h\s+waits to run alone\s+killer_2\s+-\s+1$`, `(?m)^w\.2\s+h\s+idle\s+-?\s*-\s+0$`, `1 of 3 workers busy`} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Fatalf("status printed:\n%s\nwant a line matching %s", out.String(), want)
		}
	}
}
