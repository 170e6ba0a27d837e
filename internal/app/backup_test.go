package app_test

import (
	"context"
	"iter"
	"slices"
	"strconv"
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

// A hot key's reducer, which reads many times the others' bytes and takes
// as much longer, gets no backup copy: a copy would read as much and take
// as long (the task is large, not its worker slow). The job's resource
// shows each reducer's input, the hot one far above the rest.
func TestAHotKeysReducerGetsNoBackupCopy(t *testing.T) {
	var hotRuns atomic.Int32
	hot := job.Kind{
		Name: "hotkey", Description: "every line under one key, beside a count per line number",
		MapRecord: func(ctx context.Context, rec job.Record, emit job.Emit) error {
			emit([]byte("hot"), rec.Text)
			emit([]byte("line"+strconv.FormatInt(rec.Line%64, 10)), []byte("1"))
			return nil
		},
		ReduceKey: func(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error) {
			n := 0
			for range values {
				n++
			}
			// Every key takes a moment (16 or so a reducer), the hot key
			// as long as many: its reducer runs several times the
			// others' time, well within its input's multiple of theirs.
			d := 5 * time.Millisecond
			if string(key) == "hot" {
				hotRuns.Add(1)
				d = 400 * time.Millisecond
			}
			if err := pause(ctx, d); err != nil {
				return nil, err
			}
			return []byte(strconv.Itoa(n)), nil
		},
	}
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(hot)
		c.BackupAfter = 200 * time.Millisecond
	})
	b.upload(t, "books", gutenberg(t))
	j, _ := b.run(t, client.Spec{Kind: "hotkey", Input: []string{"books"}, Partitions: 4, Reducers: 4})
	t.Logf("reduce_input_bytes %v", j.ReduceInputBytes)
	in := slices.Clone(j.ReduceInputBytes)
	if len(in) != 4 {
		t.Fatalf("reduce_input_bytes %v; want one per reducer", in)
	}
	slices.Sort(in)
	if in[3] < 10*in[1] || in[0] <= 0 {
		t.Fatalf("reduce_input_bytes %v; want the hot key's reducer at 10 times the median or more, none empty", j.ReduceInputBytes)
	}
	if len(j.Backups) != 0 || hotRuns.Load() != 1 {
		t.Fatalf("backups %v, the hot key reduced %d times; want no copy, once", j.Backups, hotRuns.Load())
	}
}
