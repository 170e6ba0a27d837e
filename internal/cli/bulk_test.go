package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
)

// A bulk submit to a cluster that takes fewer unfinished jobs than a batch
// holds sends smaller batches, and every job goes in: against a real
// server with --max-unfinished-jobs 300, batches of 1,000 are refused as
// too large (413), then 500, then 250 go in, waiting for room (429) as the
// workers finish jobs.
func TestBulkSubmitSendsSmallerBatchesToASmallCluster(t *testing.T) {
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.SubmitRate, cfg.MaxUnfinishedJobs = 0, 300
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Stop(sctx)
	}()
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

// When a later part of a split batch fails, the jobs of the parts before
// it are printed and counted, and the error names the spec of the file
// that was refused, counted across the parts.
func TestSplitBatchNamesTheRefusedSpec(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	srv := batchServer(t, func(jobs []map[string]any) (int, string) {
		mu.Lock()
		sizes = append(sizes, len(jobs))
		mu.Unlock()
		if len(jobs) > 300 {
			return http.StatusRequestEntityTooLarge, fmt.Sprintf(`{"error":{"code":"too_large","message":"this batch has %d jobs, more than the 300 that may be unfinished at once (--max-unfinished-jobs): it could never be admitted"}}`, len(jobs))
		}
		return refuseBadKind(jobs)
	})
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
	mu.Lock()
	defer mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "spec 651 (line 651)") || !strings.Contains(err.Error(), "525 specs before its batch were submitted") {
		t.Fatalf("error %v; want spec 651 named, 525 submitted (batches sent: %v)", err, sizes)
	}
	if n := len(strings.Fields(out.String())); n != 525 {
		t.Fatalf("%d ids printed, want the 525 of the parts that went in (batches sent: %v)", n, sizes)
	}
	if fmt.Sprint(sizes) != "[700 350 175 175 175 175]" {
		t.Fatalf("batches sent: %v; want [700 350 175 175 175 175]", sizes)
	}
}
