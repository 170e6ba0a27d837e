package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/webui"
)

// The dashboard served over HTTPS (--tls-cert) goes live through a secure
// websocket, and shows a job submitted meanwhile.
func TestDashboardOverTLS(t *testing.T) {
	if !webui.Built() {
		t.Fatal("the dashboard is not built into this test binary: run `make web` (make test does) before go test")
	}
	dir := t.TempDir()
	ca := apitest.NewCA(t, dir)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, cert, key, 1)
	srv := startServer(t, t.TempDir(), "127.0.0.1:0", &gate{release: make(chan struct{})}, func(c *app.Config) { c.TLSCert, c.TLSKey = cert, key })
	defer func() { _ = srv.Stop(context.Background()) }()
	// The test's CA is not the system's: Chromium is told to take the
	// certificate as it is.
	ctx := browser(t, chromedp.Flag("ignore-certificate-errors", true))
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(`[data-test="submit-form"]`))); err != nil {
		t.Fatalf("open the dashboard over https: %v", err)
	}
	text(ctx, t, `[data-test="connection"]`, func(s string) bool { return s == "live" }, "the live connection over wss")
	proto, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.protocol`))
	if err != nil || proto != "https:" {
		t.Fatalf("the page's protocol: %q, %v", proto, err)
	}
	c := client.New(srv.URL(), "")
	c.HTTP = client.HTTPWithRoots(ca.Roots)
	j, err := c.SubmitWithKey(ctx, client.Spec{Kind: "noop", Partitions: 1}, "")
	if err != nil {
		t.Fatal(err)
	}
	text(ctx, t, `[data-test="jobs"]`, func(s string) bool { return strings.Contains(s, j.ID) }, "the job submitted, shown live")
}
