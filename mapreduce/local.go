package mapreduce

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

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
	cfg.Kinds.Register(k.internal())
	cfg.Logger = nil
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer srv.Close(context.WithoutCancel(ctx))
	base := srv.URL()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := call(ctx, "PUT", base+"/api/v1/datasets/input/files/"+n, files[n], nil); err != nil {
			return "", err
		}
	}
	spec, _ := json.Marshal(map[string]any{"kind": k.Name, "input": []string{"input"}, "partitions": maps, "reducers": reducers, "params": params})
	var j struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Error string `json:"error"`
	}
	if err := call(ctx, "POST", base+"/api/v1/jobs", string(spec), &j); err != nil {
		return "", err
	}
	for tick := time.NewTicker(20 * time.Millisecond); j.State != "succeeded"; {
		switch j.State {
		case "failed", "canceled":
			return "", fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
		if err := call(ctx, "GET", base+"/api/v1/jobs/"+j.ID, "", &j); err != nil {
			return "", err
		}
	}
	var out strings.Builder
	err = call(ctx, "GET", base+"/api/v1/jobs/"+j.ID+"/output", "", &out)
	return out.String(), err
}

// call sends a request; out, when set, is a *strings.Builder for the body
// or a value to decode JSON into.
func call(ctx context.Context, method, url, body string, out any) error {
	var rd io.Reader
	if body != "" || method == "PUT" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *strings.Builder:
		o.Write(data)
		return nil
	default:
		return json.Unmarshal(data, out)
	}
}
