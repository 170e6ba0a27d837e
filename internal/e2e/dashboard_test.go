// Package e2e drives the dashboard in a real headless Chromium against a
// real server.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/webui"
)

// chromium finds Debian's Chromium, which .ci/run installs.
func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := exec.LookPath(p); err == nil {
				return p
			}
		}
	}
	t.Fatal("no Chromium: install Debian's chromium package (.ci/run does), or set CHROMIUM")
	return ""
}

type gate struct{ release chan struct{} }

// kindsWithGate are the built-in kinds, except that "short" runs until the
// test opens the gate, so the page can be seen with a full queue.
func kindsWithGate(g *gate) *job.Registry {
	r := kinds.Builtin(0.001)
	r.Register(job.Kind{Name: "short", Description: "sleeps, then returns 1", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		select {
		case <-g.release:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}})
	return r
}

func startServer(t *testing.T, dir, addr string, g *gate, mod ...func(*app.Config)) *app.Server {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = addr, "127.0.0.1:0", dir
	cfg.Kinds = kindsWithGate(g)
	cfg.ShutdownTimeout = 5 * time.Second
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	return srv
}

// text waits until the text of the first element matching sel satisfies
// ok, and returns it. It looks every 50 ms: the page gives no signal to
// wait on, and the wait ends with the test's deadline.
func text(ctx context.Context, t *testing.T, sel string, ok func(string) bool, what string) string {
	t.Helper()
	return textWithin(ctx, t, sel, ok, what, 30*time.Second)
}

// textWithin is text with a limit of its own, for what takes longer than
// a page's reaction (a compile on the server).
func textWithin(ctx context.Context, t *testing.T, sel string, ok func(string) bool, what string, limit time.Duration) string {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent.trim() : "" })()`, sel)
	var got string
	start := time.Now()
	for {
		var err error
		if got, err = chromedp.Run(ctx, chromedp.Evaluate[string](js)); err != nil {
			t.Fatalf("waiting for %s (last %q): %v", what, got, err)
		}
		if ok(got) {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: last %q: %v", what, got, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Since(start) > limit {
			shot(ctx, t, "failure.png")
			t.Fatalf("waiting for %s: still %q after %s", what, got, limit)
		}
	}
}

func TestDashboard(t *testing.T) {
	if !webui.Built() {
		t.Fatal("the dashboard is not built into this test binary: run `make web` (make test does) before go test")
	}
	dir := t.TempDir()
	g := &gate{release: make(chan struct{})}
	srv := startServer(t, dir, "127.0.0.1:0", g)
	addr := srv.Addr()
	closed := false
	defer func() {
		if !closed {
			_ = srv.Stop(context.Background())
		}
	}()

	ctx := browser(t)

	url := "http://" + addr + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`[data-test="submit-form"]`))); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	text(ctx, t, `[data-test="connection"]`, func(s string) bool { return s == "live" }, "the live connection")
	text(ctx, t, `[data-test="stat-workers"] b`, func(s string) bool { return s == "0/4" }, "4 idle workers")

	// A validation error shows next to its field.
	if err := chromedp.Do(ctx,
		setValue(`select[name="kind"]`, "short"),
		setValue(`input[name="partitions"]`, "0"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="error-partitions"]`, func(s string) bool { return strings.Contains(s, "from 1 to") }, "the partitions error")
	if err := chromedp.Do(ctx,
		setValue(`input[name="partitions"]`, "8"),
		setValue(`input[name="timeout"]`, "soon"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="error-timeout"]`, func(s string) bool { return strings.Contains(s, "timeout must be a duration") }, "the timeout error")
	if err := chromedp.Do(ctx, setValue(`input[name="timeout"]`, "")); err != nil {
		t.Fatal(err)
	}

	// Submit a short job of 8 partitions through the form.
	if err := chromedp.Do(ctx,
		setValue(`input[name="partitions"]`, "8"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="toast"]`, func(s string) bool { return strings.Contains(s, "Submitted short_") && strings.Contains(s, "open it") }, "the toast with the new job")
	text(ctx, t, `[data-test="stat-queue"] b`, func(s string) bool { return s == "4" }, "4 tasks queued")
	text(ctx, t, `[data-test="stat-workers"] b`, func(s string) bool { return s == "4/4" }, "4 busy workers")
	text(ctx, t, `[data-test="store-room"]`, func(s string) bool { return strings.HasPrefix(s, "Store: room for ") && strings.Contains(s, "B more") }, "the store's room in the queue card")
	text(ctx, t, `[data-test="worker"] .wj`, func(s string) bool { return strings.HasPrefix(s, "short_") }, "a worker card naming its job")
	text(ctx, t, `[data-test="worker-task"]`, func(s string) bool { return strings.HasPrefix(s, "partition ") }, "a worker card naming its task")
	text(ctx, t, `[data-tab="running"] span`, func(s string) bool { return s == "1" }, "the running tab's count")
	shot(ctx, t, "dashboard-under-load.png")

	// At a phone's width the page does not spill sideways: tables scroll
	// inside their cards.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `body`, func(string) bool {
		w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		return err == nil && w <= 390
	}, "a page no wider than a phone")
	shot(ctx, t, "dashboard-phone.png")
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1400, 1000)); err != nil {
		t.Fatal(err)
	}

	close(g.release)
	text(ctx, t, `tr[data-state] [data-test="progress"]`, func(s string) bool { return s == "100%" }, "the progress bar at 100%")
	text(ctx, t, `tr[data-state] [data-test="result"]`, func(s string) bool { return s == "sum 8" }, "the result")

	// The job's page: its tasks, one per partition, and their timeline.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-state] td a`)), chromedp.WaitVisible(chromedp.CSS(`[data-test="job-detail"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="sum"]`, func(s string) bool { return s == "8" }, "the sum on the job's page")
	rows := `(() => document.querySelectorAll('[data-test="tasks"] tbody tr').length + "")()`
	text(ctx, t, `[data-test="tasks"]`, func(string) bool {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[string](rows))
		return err == nil && n == "8"
	}, "8 task rows")
	text(ctx, t, `[data-test="gantt"]`, func(s string) bool { return strings.Contains(s, "s") }, "the timeline")
	shot(ctx, t, "job-detail.png")
	if err := chromedp.Do(ctx, chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"]`))); err != nil {
		t.Fatal(err)
	}

	// Reload: the same state.
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `tr[data-state="succeeded"] [data-test="result"]`, func(s string) bool { return s == "sum 8" }, "the result after a reload")
	text(ctx, t, `[data-test="history-totals"]`, func(s string) bool {
		return strings.HasPrefix(s, "8 tasks done, 1 jobs succeeded") && strings.Contains(s, "by kind: short 8")
	}, "the last hour's chart, from the server, after a reload")
	shot(ctx, t, "dashboard.png")

	// Restart the server: the page says it lost the connection, then
	// reconnects by itself.
	_ = srv.Stop(context.Background())
	closed = true
	text(ctx, t, `[data-test="connection"]`, func(s string) bool { return s == "reconnecting" }, "the page noticing the server is gone")
	text(ctx, t, `[data-test="down-banner"]`, func(s string) bool { return strings.Contains(s, "not answering") }, "the banner saying the server is down")
	disabled := `(() => document.querySelector('[data-test="submit-form"] button').disabled ? "yes" : "no")()`
	text(ctx, t, `body`, func(string) bool {
		d, err := chromedp.Run(ctx, chromedp.Evaluate[string](disabled))
		return err == nil && d == "yes"
	}, "the submit button disabled while the server is down")
	srv = startServer(t, dir, addr, g)
	closed = false
	text(ctx, t, `[data-test="connection"]`, func(s string) bool { return s == "live" }, "the page reconnecting")
	text(ctx, t, `[data-test="down-banner"]`, func(s string) bool { return s == "" }, "the banner gone")
	text(ctx, t, `tr[data-state="succeeded"] [data-test="result"]`, func(s string) bool { return s == "sum 8" }, "the result after the restart")

	// Bulk: pick every job shown, delete them at once.
	c := apitest.Client{URL: "http://" + srv.Addr()}
	for range 2 {
		c.Submit(t, "noop", 2)
	}
	text(ctx, t, `[data-tab="succeeded"] span`, func(s string) bool { return s == "3" }, "three succeeded jobs")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.confirm = () => true; return true })()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="pick-all"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="bulk"]`, func(s string) bool { return strings.HasPrefix(s, "3 picked") }, "three jobs picked")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="bulk-delete"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="bulk-note"]`, func(s string) bool { return s == "Deleted 3 of 3" }, "the bulk delete's note")
	text(ctx, t, `[data-test="jobs-empty"]`, func(s string) bool { return strings.HasPrefix(s, "No job yet") }, "the empty list")
	if list, err := c.API().Jobs(apitest.Context(t), client.ListOptions{}); err != nil || len(list.Jobs) != 0 {
		t.Fatalf("jobs left on the server: %+v, %v", list.Jobs, err)
	}

	// Canceled jobs retried: one from its row, one picked in bulk; each
	// runs in the same job, and its page counts the retry.
	var canceled []string
	for range 2 {
		j := c.SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 2, Delay: "1h"})
		if _, err := c.API().Cancel(apitest.Context(t), j.ID); err != nil {
			t.Fatal(err)
		}
		canceled = append(canceled, j.ID)
	}
	text(ctx, t, `[data-tab="canceled"] span`, func(s string) bool { return s == "2" }, "two canceled jobs")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-job="`+canceled[0]+`"] [data-test="retry"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `tr[data-job="`+canceled[0]+`"]`, func(s string) bool { return strings.Contains(s, "succeeded") && strings.Contains(s, "sum 2") }, "the job retried from its row")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`tr[data-job="`+canceled[1]+`"] [data-test="pick"]`)),
		chromedp.Click(chromedp.CSS(`[data-test="bulk-retry"]`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="bulk-note"]`, func(s string) bool { return s == "Retried 1 of 1" }, "the bulk retry's note")
	text(ctx, t, `tr[data-job="`+canceled[1]+`"]`, func(s string) bool { return strings.Contains(s, "succeeded") }, "the job retried in bulk")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-job="`+canceled[1]+`"] td a`)), chromedp.WaitVisible(chromedp.CSS(`[data-test="job-detail"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="retries"]`, func(s string) bool { return s == "1" }, "the retry on the job's page")
	text(ctx, t, `[data-test="history"]`, func(s string) bool { return strings.Contains(s, "canceled") && strings.Contains(s, "retried") }, "the retry in the job's history")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="job-detail"] a`)), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"]`))); err != nil {
		t.Fatal(err)
	}

	// A job scheduled for later shows in its tab with its time.
	c.SubmitSpec(t, client.Spec{Kind: "noop", Partitions: 1, Delay: "1h"})
	text(ctx, t, `[data-tab="scheduled"] span`, func(s string) bool { return s == "1" }, "the scheduled tab's count")
	text(ctx, t, `tr[data-state="scheduled"] [data-test="result"]`, func(s string) bool { return strings.HasPrefix(s, "runs at ") }, "the scheduled job's time")
}

// TestDashboardData uploads a dataset through the datasets form, runs a
// wordcount through the job form, and reads its output on the job's page.
func TestDashboardData(t *testing.T) {
	if !webui.Built() {
		t.Fatal("the dashboard is not built into this test binary: run `make web` (make test does) before go test")
	}
	srv := startServer(t, t.TempDir(), "127.0.0.1:0", &gate{release: make(chan struct{})})
	defer func() { _ = srv.Stop(context.Background()) }()
	ctx := browser(t)

	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b: draft.txt")
	_ = os.WriteFile(a, []byte("the whale\nthe sea\n"), 0o600)
	_ = os.WriteFile(b, []byte("a whale, a ship"), 0o600)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+srv.Addr()+"/"), chromedp.WaitVisible(chromedp.CSS(`[data-test="datasets"]`))); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	text(ctx, t, `[data-test="connection"]`, func(s string) bool { return s == "live" }, "the live connection")
	if err := chromedp.Do(ctx,
		chromedp.SetUploadFiles(chromedp.CSS(`[data-test="upload-form"] input[type="file"]`), []string{a, b}),
		setValue(`input[name="dataset"]`, "sea"),
		chromedp.Click(chromedp.CSS(`[data-test="upload-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="upload-status"]`, func(s string) bool { return strings.Contains(s, "stored 2 file(s) in sea") }, "the upload")
	text(ctx, t, `tr[data-dataset="sea"]`, func(s string) bool { return strings.Contains(s, "2") }, "the dataset in the list")
	// The file keeps its name, but for the character a file name cannot hold.
	names, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch('/api/v1/datasets/sea').then(r => r.json()).then(d => d.files.map(f => f.name).join('|'))`, chromedp.EvalAwaitPromise))
	if err != nil || names != "a.txt|b- draft.txt" {
		t.Fatalf("the uploaded files are named %q (%v), want a.txt and b- draft.txt", names, err)
	}
	// Its files, shown from the list, download as they were uploaded.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="files-sea"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `tr[data-files="sea"]`, func(s string) bool { return strings.Contains(s, "a.txt") && strings.Contains(s, "b- draft.txt") }, "the dataset's files")
	file, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.querySelector('li[data-file="a.txt"] a').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil || file != "the whale\nthe sea\n" {
		t.Fatalf("a.txt downloaded from the dataset's files: %q, %v", file, err)
	}

	// A wordcount over it through the form; a missing pattern for grep
	// shows under the pattern field first.
	if err := chromedp.Do(ctx,
		setValue(`select[name="kind"]`, "grep"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="error-param-pattern"]`, func(s string) bool { return strings.Contains(s, "pattern is required") }, "the pattern error")
	if err := chromedp.Do(ctx,
		setValue(`select[name="kind"]`, "wordcount"),
		setValue(`input[name="partitions"]`, "3"),
		setValue(`input[name="reducers"]`, "2"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `tr[data-state="succeeded"] [data-test="result"]`, func(s string) bool { return s == "5 output lines" }, "the wordcount's summary")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-state="succeeded"] td a`)), chromedp.WaitVisible(chromedp.CSS(`[data-test="job-detail"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="preview"]`, func(s string) bool { return s == "a 2\nsea 1\nship 1\nthe 2\nwhale 2" }, "the output preview")
	text(ctx, t, `[data-test="output-records"]`, func(s string) bool { return strings.HasPrefix(s, "5") }, "the counters")
	text(ctx, t, `[data-test="reduce-input"]`, func(s string) bool {
		return strings.Contains(s, "per reducer, median") && !strings.Contains(s, "hot key")
	}, "each reducer's input")
	text(ctx, t, `[data-test="history"]`, func(s string) bool {
		return strings.Contains(s, "queued") && strings.Contains(s, "reduce phase") && strings.Contains(s, "succeeded")
	}, "the job's history")
	// Its five tasks, in the table under the timeline: the shot shows them.
	text(ctx, t, `[data-test="tasks"] tbody`, func(s string) bool { return strings.Count(s, "done") == 5 }, "the job's tasks")
	shot(ctx, t, "job-detail-wordcount.png")
	fitsPhone(ctx, t, "a data job's page", "job-detail-phone.png")
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.querySelector('[data-test="download"]').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil || out != "a 2\nsea 1\nship 1\nthe 2\nwhale 2\n" {
		t.Fatalf("download: %v %q", err, out)
	}
	// Saved as a dataset from its page: the next job's input.
	if err := chromedp.Do(ctx, setValue(`input[name="save-as"]`, "counts"), chromedp.Click(chromedp.CSS(`[data-test="save-output"] button`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="saved"]`, func(s string) bool { return strings.Contains(s, "stored as counts/") }, "the output saved as a dataset")
	saved, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch('/api/v1/datasets/counts/files/' + location.pathname.split('/').pop() + '.txt').then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil || saved != out {
		t.Fatalf("the output saved as a dataset reads %q (%v), want the output", saved, err)
	}

	// Run it again from its page: the new job's page names the first, and
	// writes the same output.
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname.split('/').pop()`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="job-rerun"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="rerun-of"]`, func(s string) bool { return s == first }, "the new job naming the first")
	text(ctx, t, `[data-test="preview"]`, func(s string) bool { return s == "a 2\nsea 1\nship 1\nthe 2\nwhale 2" }, "the rerun's output")
	again, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname.split('/').pop()`))
	if err != nil || again == first || !strings.HasPrefix(again, "wordcount_") {
		t.Fatalf("the rerun's page is %q (first %q): %v", again, first, err)
	}

	// Delete it from its page, once confirmed: back to the list, without it.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.confirm = () => true; return true })()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="job-delete"]`)), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="jobs"]`, func(s string) bool { return !strings.Contains(s, again) && strings.Contains(s, first) }, "the deleted job gone from the list, the first still there")
}

// TestDashboardKinds uploads a kind of one's own (the example word count,
// a WebAssembly module) through the kinds view, runs a job of it through
// the job form, and deletes it.
func TestDashboardKinds(t *testing.T) {
	if !webui.Built() {
		t.Fatal("the dashboard is not built into this test binary: run `make web` (make test does) before go test")
	}
	dir := t.TempDir()
	module := filepath.Join(dir, "wc.wasm")
	if err := os.WriteFile(module, apitest.BuildWasm(t, "examples/wasm-wordcount"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, t.TempDir(), "127.0.0.1:0", &gate{release: make(chan struct{})})
	defer func() { _ = srv.Stop(context.Background()) }()
	c := apitest.Client{URL: "http://" + srv.Addr()}
	c.PutFile(t, "sea", "a.txt", []byte("the whale\nthe sea\n"))
	c.PutFile(t, "sea", "b.txt", []byte("a whale, a ship"))
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+srv.Addr()+"/"), chromedp.WaitVisible(chromedp.CSS(`[data-test="kinds"]`))); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	text(ctx, t, `tr[data-kind="wordcount"]`, func(s string) bool { return strings.Contains(s, "built in") }, "the built-in kinds")

	// A file that is not a module, dropped on the form, is named as such.
	drop := `(() => {
		const dt = new DataTransfer()
		dt.items.add(new File(['hello'], 'notes.txt'))
		document.querySelector('[data-test="kind-drop"]').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }))
		return true
	})()`
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](drop)); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="kind-error"]`, func(s string) bool { return strings.Contains(s, "notes.txt is not a .wasm file") }, "the dropped file's error")

	if err := chromedp.Do(ctx,
		chromedp.SetUploadFiles(chromedp.CSS(`[data-test="kind-form"] input[type="file"]`), []string{module}),
		setValue(`input[name="kind-name"]`, "mywc"),
		setValue(`input[name="kind-description"]`, "my word count"),
		chromedp.Click(chromedp.CSS(`[data-test="kind-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	// The server compiles the module: seconds, more under the race detector.
	textWithin(ctx, t, `[data-test="kind-status"]`, func(s string) bool { return strings.Contains(s, "kind mywc is at version 1") }, "the upload", 4*time.Minute)
	text(ctx, t, `tr[data-kind="mywc"]`, func(s string) bool { return strings.Contains(s, "v1") && strings.Contains(s, "my word count") }, "the kind in the list")
	shot(ctx, t, "kinds.png")
	fitsPhone(ctx, t, "the page with the kinds", "kinds-phone.png")

	// The job form offers it; a job of it runs.
	if err := chromedp.Do(ctx,
		setValue(`select[name="kind"]`, "mywc"),
		setValue(`input[name="partitions"]`, "2"),
		setValue(`input[name="reducers"]`, "1"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button`)),
	); err != nil {
		t.Fatal(err)
	}
	textWithin(ctx, t, `tr[data-state="succeeded"] [data-test="result"]`, func(s string) bool { return s == "5 output lines" }, "the job of the uploaded kind", 4*time.Minute)
	list, err := c.API().Jobs(apitest.Context(t), client.ListOptions{Limit: 10})
	if err != nil || len(list.Jobs) != 1 || list.Jobs[0].Kind != "mywc" {
		t.Fatalf("jobs: %+v, %v", list, err)
	}
	if got := c.Output(t, list.Jobs[0].ID); got != "a 2\nsea 1\nship 1\nthe 2\nwhale 2\n" {
		t.Fatalf("output %q", got)
	}

	// Delete, once confirmed.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.confirm = () => true; return true })()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-kind="mywc"] [data-test="delete-kind"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="kind-status"]`, func(s string) bool { return s == "kind mywc deleted" }, "the delete")
	text(ctx, t, `tr[data-kind="mywc"]`, func(s string) bool { return s == "" }, "the kind gone from the list")

	// Pause a built-in kind from its row: a job of it waits, saying why,
	// until Resume.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-kind="grep"] [data-test="pause-kind"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `tr[data-kind="grep"] [data-test="kind-paused"]`, func(s string) bool { return s == "paused" }, "the paused badge")
	// Its unfinished jobs canceled from its row (confirmed, as above).
	held := c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"sea"}, Partitions: 1, Params: map[string]any{"pattern": "ship"}})
	text(ctx, t, `tr[data-job="`+held.ID+`"] [data-test="result"]`, func(s string) bool { return s == "waiting: kind grep is paused" }, "the held job's line")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-kind="grep"] [data-test="cancel-kind-jobs"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="kind-status"]`, func(s string) bool { return s == "1 unfinished job of kind grep canceled" }, "the cancel of the kind's jobs")
	text(ctx, t, `tr[data-job="`+held.ID+`"]`, func(s string) bool { return strings.Contains(s, "canceled") }, "the canceled job's line")
	// The queued jobs of every kind canceled from the queued tab.
	queued := c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"sea"}, Partitions: 1, Params: map[string]any{"pattern": "ship"}})
	text(ctx, t, `tr[data-job="`+queued.ID+`"] [data-test="result"]`, func(s string) bool { return s == "waiting: kind grep is paused" }, "the held job's line")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-tab="queued"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test="cancel-state"]`)),
	); err != nil {
		t.Fatal(err)
	}
	shot(ctx, t, "jobs-queued.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="cancel-state"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="bulk-note"]`, func(s string) bool { return s == "Canceled 1 queued job" }, "the cancel of the queued jobs")
	if j := c.Job(t, queued.ID); j.State != client.Canceled {
		t.Fatalf("the job canceled from the queued tab is %s", j.State)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-tab="all"]`))); err != nil {
		t.Fatal(err)
	}
	g := c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"sea"}, Partitions: 2, Params: map[string]any{"pattern": "whale"}})
	text(ctx, t, `tr[data-job="`+g.ID+`"] [data-test="result"]`, func(s string) bool { return s == "waiting: kind grep is paused" }, "the held job's line")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-kind="grep"] [data-test="resume-kind"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `tr[data-job="`+g.ID+`"]`, func(s string) bool { return strings.Contains(s, "succeeded") }, "the job after the resume")
	if got := c.Output(t, g.ID); got != "a.txt:1 the whale\nb.txt:1 a whale, a ship\n" {
		t.Fatalf("grep output after the resume: %q", got)
	}

	// Limits from the row: a bad rate is refused, saying why; a good one
	// is shown and stored.
	row := `tr[data-kind="grep"] [data-test="kind-limits"]`
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(row+` [data-test="edit-limits"]`)),
		chromedp.WaitVisible(chromedp.CSS(row+` input[name="concurrency"]`)),
		setValue(row+` input[name="concurrency"]`, "2"),
		setValue(row+` input[name="rate"]`, "fast"),
		chromedp.Click(chromedp.CSS(row+` [data-test="save-limits"]`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="kind-error"]`, func(s string) bool { return strings.Contains(s, "rate must be N/s or N/m") }, "the bad rate's error")
	if err := chromedp.Do(ctx,
		setValue(row+` input[name="rate"]`, "30/s"),
		chromedp.Click(chromedp.CSS(row+` [data-test="save-limits"]`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, row, func(s string) bool { return strings.Contains(s, "≤ 2 at once · ≤ 30/s") }, "the limits in the row")
	kinds, err := c.API().Kinds(apitest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if k.Name == "grep" && (k.Concurrency != 2 || k.Rate != "30/s") {
			t.Fatalf("grep's limits on the server: %+v", k)
		}
	}
	fitsPhone(ctx, t, "the kinds with limits", "kinds-limits-phone.png")
}

// fitsPhone checks the page at a phone's width (390×844): nothing spills
// sideways; then it takes a screenshot and goes back to the desktop size.
func fitsPhone(ctx context.Context, t *testing.T, what, screenshot string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `body`, func(string) bool {
		w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		return err == nil && w <= 390
	}, what+" no wider than a phone")
	shot(ctx, t, screenshot)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1400, 900)); err != nil {
		t.Fatal(err)
	}
}

// browser starts a headless Chromium for the test. A Chromium that exits
// before it serves is started again, up to three times: a CI run lost a
// test to one that printed nothing but its D-Bus warnings and exited, the
// machine busy with the other packages' tests.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	binary := chromium(t)
	for try := 1; ; try++ {
		opts := append(append(chromedp.DefaultExecAllocatorOptions[:], extra...),
			chromedp.ExecPath(binary),
			chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
			chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()),
			chromedp.WindowSize(1400, 1000),
		)
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelBrowser := chromedp.NewContext(actx)
		ctx, cancel := context.WithTimeout(bctx, 10*time.Minute) // the scale test submits 10,000 jobs under -race
		err := chromedp.Do(ctx)                                  // starts it
		if err == nil {
			t.Cleanup(cancelAlloc)
			t.Cleanup(cancelBrowser)
			t.Cleanup(cancel)
			return ctx
		}
		cancel()
		cancelBrowser()
		cancelAlloc()
		if try == 3 || !strings.Contains(err.Error(), "chrome failed to start") {
			t.Fatalf("start Chromium (try %d): %v", try, err)
		}
		t.Logf("Chromium exited before it served (try %d of 3); starting it again: %v", try, err)
	}
}

// setValue sets a form field the way typing would, so that Vue's v-model,
// which listens for input and change events, sees it.
func setValue(sel, value string) chromedp.Action[chromedp.Void] {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, sel, value)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[bool](js)(ctx, t)
		return chromedp.Void{}, err
	}
}

// shot saves a screenshot where CI keeps artifacts (MRCLUSTER_ARTIFACTS,
// default artifacts/ at the top of the repository).
func shot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("MRCLUSTER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	// From the top: a full-page shot draws the sticky header where the
	// page is scrolled to, over the middle of the page.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.scrollTo(0, 0); return true })()`)); err != nil {
		t.Fatalf("scroll to the top for a screenshot: %v", err)
	}
	// The page's whole size, clipped to: without a clip, Chromium took the
	// viewport alone now and then (a job's page cut at 860 of its 1,220
	// pixels).
	size, err := chromedp.Run(ctx, chromedp.Evaluate[[2]float64](`[document.documentElement.scrollWidth, document.documentElement.scrollHeight]`))
	if err != nil {
		t.Fatalf("the page's size for a screenshot: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.Action[[]byte](func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		r, err := cdp.Call(ctx, tg, page.CaptureScreenshot, page.CaptureScreenshotParams{
			CaptureBeyondViewport: new(true),
			FromSurface:           new(true),
			Format:                page.CaptureScreenshotFormatPng,
			Clip:                  &page.Viewport{Width: size[0], Height: size[1], Scale: 1},
		})
		if err != nil {
			return nil, err
		}
		return r.Data, nil
	}))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// The schedules view: a schedule added through the job form (its cron
// error shown under its field first) lists its next tick, the jobs of its
// ticks appear in the jobs list naming it, and it is paused, resumed and
// deleted from its row; at a phone's width too.
func TestDashboardSchedules(t *testing.T) {
	if !webui.Built() {
		t.Fatal("the dashboard is not built into this test binary: run `make web` (make test does) before go test")
	}
	srv := startServer(t, t.TempDir(), "127.0.0.1:0", &gate{release: make(chan struct{})})
	defer func() { _ = srv.Stop(context.Background()) }()
	c := apitest.Client{URL: "http://" + srv.Addr()}
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+srv.Addr()+"/"), chromedp.WaitVisible(chromedp.CSS(`[data-test="schedules"]`))); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	text(ctx, t, `[data-test="schedules-empty"]`, func(s string) bool { return strings.Contains(s, "No schedule yet") }, "the empty state")
	text(ctx, t, `select[name="kind"] option[value="noop"]`, func(s string) bool { return s == "noop" }, "the kinds in the form")
	if err := chromedp.Do(ctx,
		setValue(`select[name="kind"]`, "noop"),
		setValue(`input[name="partitions"]`, "2"),
		setValue(`select[name="priority"]`, "4"),
		chromedp.Click(chromedp.CSS(`input[name="when"][value="cron"]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="cron"]`)),
		setValue(`input[name="schedule-name"]`, "heartbeat"),
		setValue(`input[name="cron"]`, "every second"),
		setValue(`input[name="timezone"]`, "UTC"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button[type="submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="error-cron"]`, func(s string) bool { return strings.Contains(s, `cron "every second"`) }, "the cron error under its field")
	if err := chromedp.Do(ctx,
		setValue(`input[name="cron"]`, "*/2 * * * * *"),
		chromedp.Click(chromedp.CSS(`[data-test="submit-form"] button[type="submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="toast"]`, func(s string) bool { return strings.Contains(s, "Schedule heartbeat added") }, "the toast")
	row := `tr[data-schedule="heartbeat"]`
	text(ctx, t, row, func(s string) bool { return strings.Contains(s, "*/2 * * * * *") && strings.Contains(s, "noop × 2") }, "the schedule's row")
	text(ctx, t, row+` [data-test="next"]`, func(s string) bool { return strings.HasPrefix(s, "in ") || s == "now" }, "its next tick")
	// Its jobs appear in the list, naming it; the row links its last ones.
	text(ctx, t, `tr[data-state="succeeded"]`, func(s string) bool { return strings.Contains(s, "p4") && strings.Contains(s, "↻ heartbeat") }, "a job of the schedule, of priority 4, in the list")
	text(ctx, t, row+` a.tick`, func(s string) bool { return s != "" }, "a link to its last job")
	// A job of another kind; the search by schedule name leaves it out.
	other := c.Submit(t, "noop", 1)
	text(ctx, t, `tr[data-job="`+other.ID+`"]`, func(s string) bool { return strings.Contains(s, "succeeded") }, "the other job")
	if err := chromedp.Do(ctx, setValue(`input[name="search"]`, "heartbeat")); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="jobs"] tbody`, func(s string) bool { return strings.Contains(s, "heartbeat") && !strings.Contains(s, other.ID) }, "the jobs of the schedule, searched by its name")
	if err := chromedp.Do(ctx, setValue(`input[name="search"]`, "")); err != nil {
		t.Fatal(err)
	}
	shot(ctx, t, "schedules.png")
	fitsPhone(ctx, t, "the page with a schedule", "schedules-phone.png")

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+` [data-test="pause"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, row+` [data-test="next"]`, func(s string) bool { return s == "paused" }, "the paused schedule")
	if sc, err := c.API().Schedule(apitest.Context(t), "heartbeat"); err != nil || !sc.Paused {
		t.Fatalf("after Pause: %+v %v", sc, err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+` [data-test="resume"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="schedule-status"]`, func(s string) bool { return strings.Contains(s, "resumed") }, "the resume")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.confirm = () => true; return true })()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+` [data-test="delete-schedule"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="schedule-status"]`, func(s string) bool { return s == "schedule heartbeat deleted" }, "the delete")
	if list, err := c.API().Schedules(apitest.Context(t)); err != nil || len(list) != 0 {
		t.Fatalf("schedules after the delete: %+v %v", list, err)
	}
}
