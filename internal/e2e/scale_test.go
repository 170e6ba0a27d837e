package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/webui"
)

// TestDashboardAtScale has the dashboard open while 10,000 jobs are
// submitted and run, then 1,000 tasks wait: the page keeps up with the
// events, shows the right counts, and keeps its DOM bounded (a page of
// jobs, a dozen queue entries), before and after a reload. How long the
// page took is logged, not asserted.
func TestDashboardAtScale(t *testing.T) {
	if !webui.Built() {
		t.Fatal("the dashboard is not built into this test binary: run `make web` (make test does) before go test")
	}
	g := &gate{release: make(chan struct{})}
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Kinds = kindsWithGate(g)
	cfg.SubmitRate = 0
	cfg.ShutdownTimeout = 5 * time.Second
	srv, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop(context.Background()) }()
	defer close(g.release)
	c := apitest.Client{URL: srv.URL()}

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="connection"]`, func(s string) bool { return s == "live" }, "the live connection")

	// 10,000 one-task noop jobs, from 8 clients at once, while the page
	// watches, after one the page will not hold once they are in.
	first := c.Submit(t, "noop", 1)
	const jobs = 10000
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < jobs; i += 8 {
				resp, err := http.Post(srv.URL()+"/api/v1/jobs", "application/json", strings.NewReader(`{"kind":"noop","partitions":1}`))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs <- fmt.Errorf("submit: %s", resp.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("submitted %d jobs in %s", jobs, time.Since(start).Round(time.Millisecond))
	var list struct{ Jobs []client.Job }
	c.Do(t, "GET", "/api/v1/jobs?limit=1", "").JSON(t, &list)
	c.Await(t, list.Jobs[0].ID, func(j client.Job) bool { return j.State.Terminal() })
	c.AwaitIdleWorkers(t, 4)
	t.Logf("ran them in %s", time.Since(start).Round(time.Millisecond))
	// Then 1,004 short tasks: 4 run (the gate holds them), 1,000 wait.
	blocked := c.Submit(t, "short", 1004)
	// The page counts what the server counts, once the server's count
	// holds still: the 1,000 waiting once the job's record shows its four
	// tasks running (a CI run read 1001 while the fourth's start was on its
	// way, and the page, rightly, 1000 after it), and a copy of a finished
	// noop job's task that a loaded machine may leave queued (a result
	// store that timed out queues the task again, and the copy waits behind
	// the gated workers).
	c.Await(t, blocked.ID, func(j client.Job) bool { return j.Tasks.Running == 4 })
	shown := textWithin(ctx, t, `[data-test="stat-queue"] b`, func(s string) bool {
		n, err := strconv.Atoi(s)
		return err == nil && n >= 1000
	}, "1000 tasks queued", 90*time.Second)
	var queue struct{ Depth int }
	c.Do(t, "GET", "/api/v1/queue", "").JSON(t, &queue)
	want := strconv.Itoa(queue.Depth)
	if shown != want {
		textWithin(ctx, t, `[data-test="stat-queue"] b`, func(s string) bool { return s == want }, want+" tasks queued, as the server counts", 30*time.Second)
	}
	check := func(when string) {
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-test="jobs"] tbody tr').length`))
		if err != nil || rows != 50 {
			t.Fatalf("%s: %d job rows in the page (%v), want one page of 50", when, rows, err)
		}
		first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-test="jobs"] tbody tr').dataset.job`))
		var list struct{ Jobs []client.Job }
		c.Do(t, "GET", "/api/v1/jobs?limit=1", "").JSON(t, &list)
		if err != nil || len(list.Jobs) != 1 || first != list.Jobs[0].ID {
			t.Fatalf("%s: first row %q (%v), want the newest job %+v", when, first, err, list.Jobs)
		}
		items, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-test="queue"] li').length`))
		if err != nil || items > 12 {
			t.Fatalf("%s: %d queue entries (%v), want at most 12", when, items, err)
		}
	}
	check("live")
	t.Logf("the page showed %s queued tasks %s after the first submit", want, time.Since(start).Round(time.Millisecond))
	done, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-test="jobs"] tbody tr[data-state="succeeded"]').length`))
	if err != nil || done != 49 {
		t.Fatalf("%d succeeded jobs on the first page (%v), want 49 under the blocked one", done, err)
	}
	shot(ctx, t, "dashboard-at-scale.png")

	reload := time.Now()
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"] tbody tr`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="stat-queue"] b`, func(s string) bool { return s == want }, "the queue after a reload")
	t.Logf("reload to a full page: %s", time.Since(reload).Round(time.Millisecond))
	check("after a reload")
	if j := c.Job(t, blocked.ID); j.Tasks.Queued != 1000 {
		t.Fatalf("blocked job: %+v", j.Tasks)
	}

	// Past the 200 jobs the page loaded: the next page from the server.
	rows := `(() => document.querySelectorAll('[data-test="jobs"] tbody tr').length + "")()`
	for n := 100; n <= 200; n += 50 {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="show-more"]`))); err != nil {
			t.Fatal(err)
		}
		want := strconv.Itoa(n)
		text(ctx, t, `[data-test="jobs"]`, func(string) bool {
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](rows))
			return err == nil && got == want
		}, want+" rows after show more")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-test="load-older"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="jobs"]`, func(string) bool {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](rows))
		return err == nil && got == "250"
	}, "250 rows after loading older jobs from the server")

	// 250 more jobs wait behind the blocked one, so the 200 the page
	// loads hold no running job: the headline and the tabs count the
	// cluster's jobs, and the running tab lists the server's.
	specs := strings.TrimSuffix(strings.Repeat(`{"kind":"noop","partitions":1},`, 250), ",")
	if r := c.Do(t, "POST", "/api/v1/jobs/batch", `{"jobs":[`+specs+`]}`); r.Status != http.StatusAccepted {
		t.Fatalf("a batch of 250: %d %s", r.Status, r.Body)
	}
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`[data-test="jobs"] tbody tr`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="stat-running"] b`, func(s string) bool { return s == "1" }, "1 job running, older than the jobs loaded")
	text(ctx, t, `[data-test="stat-running"] span`, func(s string) bool { return s == "job running" }, "one job, not jobs")
	text(ctx, t, `[data-tab="running"] span`, func(s string) bool { return s == "1" }, "the running tab's count")
	all := strconv.Itoa(jobs + 252)
	text(ctx, t, `[data-tab="all"] span`, func(s string) bool { return s == all }, all+" jobs in all")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-tab="running"]`))); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="jobs"] tbody tr`, func(string) bool {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('[data-test="jobs"] tbody tr')].map((r) => r.dataset.job).join(",")`))
		return err == nil && got == blocked.ID
	}, "the running tab listing the blocked job")

	// A search for the whole id of a job older than those loaded asks the
	// server for it.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-tab="all"]`)), chromedp.SendKeys(chromedp.CSS(`input[name="search"]`), first.ID)); err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="jobs"] tbody tr`, func(string) bool {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('[data-test="jobs"] tbody tr')].map((r) => r.dataset.job + " " + r.dataset.state).join(",")`))
		return err == nil && got == first.ID+" succeeded"
	}, "the searched job, from the server")
}
