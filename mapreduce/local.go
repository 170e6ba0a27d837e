package mapreduce

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// RunLocal runs one job of kind k over files (name → content) on a cluster
// of its own, started in this process on loopback ports with a temporary
// data directory and stopped at the end, and returns the job's output. It
// is for tests of a kind and for trying one out.
func RunLocal(ctx context.Context, k Kind, files map[string]string, maps, reducers int, params map[string]any) (string, error) {
	dir, err := os.MkdirTemp("", "mrcluster-local")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.Kinds = kinds.Builtin(1)
	cfg.Kinds.Register(k.Kind())
	cfg.Logger = nil
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer func() { _ = srv.Stop(context.WithoutCancel(ctx)) }()
	c := client.New(srv.URL(), "")
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := c.PutFile(ctx, "input", n, strings.NewReader(files[n]), int64(len(files[n]))); err != nil {
			return "", err
		}
	}
	j, err := c.Submit(ctx, client.Spec{Kind: k.Name, Input: []string{"input"}, Partitions: maps, Reducers: reducers, Params: params})
	if err != nil {
		return "", err
	}
	if j, err = c.Wait(ctx, j.ID, nil); err != nil {
		return "", err
	}
	if j.State != client.Succeeded {
		return "", fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
	}
	var out strings.Builder
	err = c.Output(ctx, j.ID, &out)
	return out.String(), err
}
