package app_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
)

// A server of a new cluster started while the other servers of its
// --routes are down gives up after ClusterWait, saying that a new
// cluster's first start needs every server of --routes (nats-server elects
// no first leader among servers with empty logs, so a majority of a new
// cluster waits for good), not only a majority.
func TestNewClusterSaysItNeedsEveryServer(t *testing.T) {
	var routes []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, "nats://"+l.Addr().String())
		l.Close()
	}
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.ClusterName, cfg.ServerName = "fresh", "s0"
	cfg.ClusterListen = strings.TrimPrefix(routes[0], "nats://")
	cfg.Routes = routes
	cfg.ClusterWait = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := app.Start(ctx, cfg)
	if err == nil {
		_ = srv.Stop(ctx)
		t.Fatal("a server of a new cluster started with the other two down; want an error")
	}
	want := "every server of --routes at a new cluster's very first start"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "did not form within 2s") {
		t.Fatalf("start failed with\n%v\nwant it to say %q", err, want)
	}
	t.Log(err)
}
