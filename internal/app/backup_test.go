package app_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// TestBackupTasksBeatAStraggler runs a wordcount whose map of one file
// hangs on its first run, as on a sick machine: near the end of the map
// phase a backup copy runs on another worker, wins, and the hung copy is
// told to stop. The output is still exactly the sequential count.
func TestBackupTasksBeatAStraggler(t *testing.T) {
	var hung, stopped atomic.Int32
	wc := kinds.Data()[0]
	stall := job.Kind{
		Name: "stall", Description: "wordcount whose first map of slow.txt hangs until stopped",
		MapRecord: func(ctx context.Context, rec job.Record, emit job.Emit) error {
			if rec.File == "slow.txt" && rec.Line == 1 && hung.CompareAndSwap(0, 1) {
				<-ctx.Done()
				stopped.Add(1)
				return ctx.Err()
			}
			return wc.Map(ctx, rec, emit)
		},
		Combine: wc.Combine, ReduceKey: wc.Reduce,
	}
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(stall)
		c.BackupAfter = 200 * time.Millisecond
		c.AckWait = time.Minute // the hung copy is never redelivered: only a backup can finish it
	})
	docs := []kinds.Doc{
		{Name: "a.txt", Data: []byte("one two\nthree\n")}, {Name: "b.txt", Data: []byte("two three\n")},
		{Name: "c.txt", Data: []byte("four\n")}, {Name: "slow.txt", Data: []byte("one one\nfive\n")},
	}
	b.upload(t, "s", docs)
	j, got := b.run(t, client.Spec{Kind: "stall", Input: []string{"s"}, Partitions: 4, Reducers: 2})
	if want := kinds.SeqWordCount(docs); got != want {
		t.Fatalf("output with a backup differs: %s", diff(got, want))
	}
	if len(j.Backups) != 1 || !strings.HasPrefix(j.Backups[0], "map/") {
		t.Fatalf("backups = %v, want one map task", j.Backups)
	}
	// The hung copy was stopped (its context canceled), not left running.
	b.client().AwaitIdleWorkers(t, 4)
	if stopped.Load() != 1 {
		t.Fatalf("the hung copy saw %d stops, want 1", stopped.Load())
	}
	var tasks struct {
		Tasks []job.TaskResult `json:"tasks"`
	}
	b.do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "").JSON(t, &tasks)
	backups := 0
	for _, r := range tasks.Tasks {
		if r.Backup {
			backups++
		}
	}
	if backups != 1 {
		t.Fatalf("%d backup attempts in the task history, want 1: %+v", backups, tasks.Tasks)
	}
}
