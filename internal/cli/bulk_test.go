package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
)

// A bulk submit to a cluster that takes fewer unfinished jobs than a batch
// holds sends smaller batches, and every job goes in: against a real
// server with --max-unfinished-jobs 300, batches of 1,000 are refused as
// too large (413), then 500, then 250 go in, waiting for room (429) as the
// workers finish jobs.
func TestBulkSubmitSendsSmallerBatchesToASmallCluster(t *testing.T) {
	srv := startServer(t, func(c *app.Config) { c.MaxUnfinishedJobs = 300 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := submit(ctx, []string{"noop", "1", "--count", "1000", "--server", srv.URL()}, &out, &errOut); err != nil {
		t.Fatalf("submit --count 1000 to a cluster of at most 300 unfinished jobs: %v\n%s", err, errOut.String())
	}
	ids := map[string]bool{}
	for _, id := range strings.Fields(out.String()) {
		ids[id] = true
	}
	if len(ids) != 1000 {
		t.Fatalf("%d distinct ids printed, want 1000", len(ids))
	}
	said := errOut.String()
	if !strings.Contains(said, "takes no batch of 1000 jobs") || !strings.Contains(said, "--max-unfinished-jobs") || !strings.Contains(said, "sending batches of 250") {
		t.Fatalf("stderr: %q; want why the batches got smaller, naming the flag", said)
	}
}

// startServer starts a server on random ports with its own data
// directory and 4 workers, without the per-client submit rate.
func startServer(t *testing.T, mod func(*app.Config)) *app.Server {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.SubmitRate = 0
	if mod != nil {
		mod(&cfg)
	}
	srv, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return srv
}

// cancelAfter is a writer that cancels a context once n lines went
// through it: a command cut short at a known place.
type cancelAfter struct {
	bytes.Buffer
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	if w.n -= bytes.Count(p, []byte("\n")); w.n <= 0 {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

// A bulk submit cut short and run again with the same --idempotency-key
// goes on where it stopped: the batches that went in are answered with
// their jobs, and the cluster holds each spec's job once. A changed file
// under the same key is refused, and a single submit's key works alike.
func TestBulkSubmitResumesUnderItsKey(t *testing.T) {
	srv := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := filepath.Join(t.TempDir(), "specs.jsonl")
	specs := strings.Repeat(`{"kind":"noop","partitions":1}`+"\n", 2500)
	if err := os.WriteFile(path, []byte(specs), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--file", path, "--idempotency-key", "nightly-2026-12-02", "--server", srv.URL()}

	cut, stop := context.WithCancel(ctx)
	first := &cancelAfter{n: 1000, cancel: stop}
	var errOut bytes.Buffer
	err := submit(cut, args, first, &errOut)
	if err == nil || !strings.Contains(err.Error(), "1000 specs before its batch were submitted") || !strings.Contains(err.Error(), "run the same command again, with the same --idempotency-key") {
		t.Fatalf("a submit cut short after its first batch: %v", err)
	}
	var again bytes.Buffer
	if err := submit(ctx, args, &again, &errOut); err != nil {
		t.Fatalf("the same submit again: %v\n%s", err, errOut.String())
	}
	before, all := strings.Fields(first.String()), strings.Fields(again.String())
	if len(before) != 1000 || len(all) != 2500 || !slices.Equal(before, all[:1000]) {
		t.Fatalf("%d ids, then %d; want 1000, then 2500 starting with the same 1000", len(before), len(all))
	}
	api := client.New(srv.URL(), "")
	stored := map[string]bool{}
	var page client.JobList
	for {
		var err error
		if page, err = api.Jobs(ctx, client.ListOptions{Limit: 500, Cursor: page.NextCursor}); err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			stored[j.ID] = true
		}
		if page.NextCursor == "" {
			break
		}
	}
	for _, id := range all {
		delete(stored, id)
	}
	if len(stored) != 0 || len(all) != 2500 {
		t.Fatalf("the cluster holds %d jobs besides the 2500 printed", len(stored))
	}

	changed := strings.Replace(specs, `"partitions":1`, `"partitions":2`, 1)
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := submit(ctx, args, io.Discard, &errOut); err == nil || !strings.Contains(err.Error(), "Idempotency-Key") {
		t.Fatalf("a changed file under the same key: %v; want the key's reuse refused", err)
	}

	var one, two bytes.Buffer
	single := []string{"noop", "2", "--idempotency-key", "once", "--server", srv.URL()}
	if err := submit(ctx, single, &one, &errOut); err != nil {
		t.Fatal(err)
	}
	if err := submit(ctx, single, &two, &errOut); err != nil || one.String() != two.String() {
		t.Fatalf("a single submit twice under one key: %v; ids %q and %q", err, one.String(), two.String())
	}
}

// When a later part of a split batch fails, the jobs of the parts before
// it are printed and counted, and the error names the spec of the file
// that was refused, counted across the parts.
func TestSplitBatchNamesTheRefusedSpec(t *testing.T) {
	var sizes batchSizes
	srv := batchServer(t, sizes.record(func(jobs []map[string]any) (int, string) {
		if len(jobs) > 300 {
			return http.StatusRequestEntityTooLarge, fmt.Sprintf(`{"error":{"code":"too_large","message":"this batch has %d jobs, more than the 300 that may be unfinished at once (--max-unfinished-jobs): it could never be admitted"}}`, len(jobs))
		}
		return refuseBadKind(jobs)
	}))
	var specs strings.Builder
	for i := range 700 {
		kind := "noop"
		if i == 650 {
			kind = "bad"
		}
		fmt.Fprintf(&specs, `{"kind":%q,"partitions":1}`+"\n", kind)
	}
	path := filepath.Join(t.TempDir(), "specs.jsonl")
	if err := os.WriteFile(path, []byte(specs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := submit(ctx, []string{"--file", path, "--server", srv.URL}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "spec 651 (line 651)") || !strings.Contains(err.Error(), "525 specs before its batch were submitted") {
		t.Fatalf("error %v; want spec 651 named, 525 submitted (batches sent: %v)", err, &sizes)
	}
	if n := len(strings.Fields(out.String())); n != 525 {
		t.Fatalf("%d ids printed, want the 525 of the parts that went in (batches sent: %v)", n, &sizes)
	}
	if sizes.String() != "[700 350 175 175 175 175]" {
		t.Fatalf("batches sent: %v; want [700 350 175 175 175 175]", &sizes)
	}
}

// cancel, retry and delete take many ids, or "-" for those of standard input (as
// submit --count and jobs print them): each job's line in order, a failure
// on stderr without stopping the others, and an error counting them. jobs
// lists more than a page (500) when asked, or all with --limit 0.
func TestCancelAndDeleteManyJobs(t *testing.T) {
	srv := startServer(t, func(c *app.Config) { c.Workers = 0 }) // the jobs stay queued
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ids, errOut bytes.Buffer
	const n = 1200
	if err := submit(ctx, []string{"noop", "1", "--count", fmt.Sprint(n), "--server", srv.URL()}, &ids, &errOut); err != nil {
		t.Fatal(err)
	}
	all := strings.Fields(ids.String())
	defer func(r io.Reader) { stdin = r }(stdin)
	// status names ten of the jobs with tasks waiting, and counts them all.
	var st bytes.Buffer
	if err := status(ctx, []string{"--server", srv.URL()}, &st, &errOut); err != nil {
		t.Fatal(err)
	}
	if out := st.String(); strings.Count(out, "\n  noop_") != 10 || !strings.Contains(out, "… and over 990 more jobs with tasks waiting") ||
		!strings.Contains(out, fmt.Sprintf("%d tasks queued", n)) || !strings.Contains(out, fmt.Sprintf("jobs: %d in all: 0 scheduled, %d queued, 0 running", n, n)) {
		t.Fatalf("status of %d queued jobs:\n%s", n, out)
	}

	var out bytes.Buffer
	err := deleteJob(ctx, []string{all[0], all[1], "--server", srv.URL()}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "2 of the jobs were not deleted") || !strings.Contains(errOut.String(), all[1]+": ") || out.Len() != 0 {
		t.Fatalf("delete of two queued jobs: %v\nstdout %q\nstderr %q", err, out.String(), errOut.String())
	}
	stdin = strings.NewReader(ids.String() + "\n" + "noop_nothere 0 extra words\n")
	out.Reset()
	errOut.Reset()
	err = cancelJob(ctx, []string{"-", "--server", srv.URL()}, &out, &errOut)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err == nil || !strings.Contains(err.Error(), "1 of the jobs were not canceled") || !strings.Contains(errOut.String(), `noop_nothere: job "noop_nothere" not found`) {
		t.Fatalf("cancel - with an unknown id among %d: %v\nstderr %q", n, err, errOut.String())
	}
	if len(lines) != n {
		t.Fatalf("%d lines printed; want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != all[i]+" canceled" {
			t.Fatalf("line %d: %q; want %q", i, l, all[i]+" canceled")
		}
	}
	// Two of them retried, in one command, then canceled again.
	out.Reset()
	if err := retryJob(ctx, []string{all[0], all[1], "--server", srv.URL()}, &out, &errOut); err != nil || out.String() != all[0]+" queued (retry 1)\n"+all[1]+" queued (retry 1)\n" {
		t.Fatalf("retry of two canceled jobs: %v\n%s", err, out.String())
	}
	// Queued again, they cannot be retried: --wait has nothing to follow.
	if err := retryJob(ctx, []string{all[0], all[1], "--wait", "--server", srv.URL()}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "2 of the jobs were not retried") {
		t.Fatalf("retry --wait of two queued jobs: %v", err)
	}
	if err := cancelJob(ctx, []string{all[0], all[1], "--server", srv.URL()}, io.Discard, &errOut); err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer // the table of mrcluster jobs, its head line included
	if err := listJobs(ctx, []string{"--state", "canceled", "--limit", "700", "--server", srv.URL()}, &table, &errOut); err != nil || strings.Count(table.String(), "\n") != 1+700 {
		t.Fatalf("jobs --limit 700: %v, %d lines", err, strings.Count(table.String(), "\n"))
	}
	table.Reset()
	if err := listJobs(ctx, []string{"--state", "canceled", "--limit", "0", "--server", srv.URL()}, &table, &errOut); err != nil || strings.Count(table.String(), "\n") != 1+n {
		t.Fatalf("jobs --limit 0: %v, %d lines; want the head and %d", err, strings.Count(table.String(), "\n"), n)
	}
	for kind, want := range map[string]int{"noop": 1 + n, "short": 1} {
		var byKind bytes.Buffer
		if err := listJobs(ctx, []string{"--kind", kind, "--limit", "0", "--server", srv.URL()}, &byKind, &errOut); err != nil || strings.Count(byKind.String(), "\n") != want {
			t.Fatalf("jobs --kind %s --limit 0: %v, %d lines; want %d", kind, err, strings.Count(byKind.String(), "\n"), want)
		}
	}
	// As JSON, one list, printed page by page.
	var listed bytes.Buffer
	if err := listJobs(ctx, []string{"--state", "canceled", "--limit", "0", "-o", "json", "--server", srv.URL()}, &listed, &errOut); err != nil {
		t.Fatal(err)
	}
	var list client.JobList
	if err := json.Unmarshal(listed.Bytes(), &list); err != nil || len(list.Jobs) != n || list.NextCursor != "" || list.Jobs[0].State != client.Canceled {
		t.Fatalf("jobs --limit 0 -o json: %d jobs, cursor %q, %v", len(list.Jobs), list.NextCursor, err)
	}
	listed.Reset()
	if err := listJobs(ctx, []string{"--state", "canceled", "--limit", "3", "-o", "json", "--server", srv.URL()}, &listed, &errOut); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(listed.Bytes(), &list); err != nil || len(list.Jobs) != 3 || list.NextCursor == "" {
		t.Fatalf("jobs --limit 3 -o json: %d jobs, cursor %q, %v", len(list.Jobs), list.NextCursor, err)
	}
	listed.Reset()
	if err := listJobs(ctx, []string{"--state", "running", "-o", "json", "--server", srv.URL()}, &listed, &errOut); err != nil || strings.TrimSpace(listed.String()) != "{\n  \"jobs\": []\n}" {
		t.Fatalf("jobs -o json of no job: %v %q", err, listed.String())
	}
	stdin = strings.NewReader(table.String())
	out.Reset()
	if err := deleteJob(ctx, []string{"-", "--server", srv.URL()}, &out, &errOut); err != nil || strings.Count(out.String(), " deleted\n") != n {
		t.Fatalf("delete - of the %d canceled jobs: %v\n%s", n, err, out.String())
	}
	if l, err := client.New(srv.URL(), "").Jobs(ctx, client.ListOptions{}); err != nil || len(l.Jobs) != 0 {
		t.Fatalf("jobs left after the delete: %d %v", len(l.Jobs), err)
	}
	if err := cancelJob(ctx, []string{"--server", srv.URL()}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "takes job ids") {
		t.Fatalf("cancel without an id: %v", err)
	}
	// A pipe of no jobs: the table's head alone, or nothing.
	for _, in := range []string{"ID  KIND  STATE  DONE  CREATED  RESULT\n", ""} {
		stdin = strings.NewReader(in)
		out.Reset()
		errOut.Reset()
		if err := retryJob(ctx, []string{"-", "--server", srv.URL()}, &out, &errOut); err != nil || out.Len() != 0 || !strings.Contains(errOut.String(), "no job ids on standard input") {
			t.Fatalf("retry - of %q: %v, out %q, stderr %q; want nothing done, and said", in, err, out.String(), errOut.String())
		}
	}
}
