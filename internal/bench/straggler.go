package bench

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/natsx"
	"github.com/mrcluster/mrcluster/internal/worker"
)

// Straggler runs a wordcount over paths on a cluster of 3 in-process
// workers plus one slow worker, a pool of its own whose map sleeps 5 ms
// every 200 lines (several times slower than the others), and returns the
// job's duration. backupAfter 0 turns backup tasks off.
func Straggler(ctx context.Context, paths []string, size int64, m, r int, backupAfter time.Duration) (time.Duration, []string, error) {
	c, err := StartCluster(ctx, func(cfg *app.Config) {
		cfg.Workers = 3
		cfg.BackupAfter = backupAfter
	})
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	if err := c.Upload(ctx, "corpus", paths); err != nil {
		return 0, nil, err
	}
	nc, err := natsx.Dial(c.srv.NATSURL(), "slow worker", c.srv.NATSToken(), "", slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, nil, err
	}
	defer nc.Close()
	store, err := natsx.Open(ctx, nc)
	if err != nil {
		return 0, nil, err
	}
	slow := kinds.Builtin(1)
	wc, _ := slow.Lookup("wordcount")
	mapRecord := wc.MapRecord
	wc.MapRecord = func(ctx context.Context, rec job.Record, emit job.Emit) error {
		if rec.Line%200 == 0 {
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return mapRecord(ctx, rec, emit)
	}
	slow.Register(wc)
	pool := worker.New(worker.Config{Store: store.Ports, Datasets: &dataset.Store{KV: store.Ports.Datasets, Blocks: store.Ports.Blocks}, Kinds: slow, Concurrency: 1, Name: "slow", Host: "slow-machine",
		Logger: slog.New(slog.DiscardHandler), RetryBackoff: time.Second})
	if err := pool.Start(ctx); err != nil {
		return 0, nil, err
	}
	defer pool.Stop(context.Background())
	start := time.Now()
	if _, _, err := c.WordCount(ctx, "corpus", size, m, r); err != nil {
		return 0, nil, err
	}
	took := time.Since(start)
	var j struct {
		Backups []string `json:"backups"`
	}
	_ = json.Unmarshal([]byte(c.describe(ctx, c.lastJob)), &j)
	return took, j.Backups, nil
}
