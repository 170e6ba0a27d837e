package natsx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// The task queue's anchor is one message that no lane delivers and no
// count includes, and with it a queue that its workers keep empty does not
// make a new block file for every task.
func TestAnchorKeepsTheTaskQueuesLastBlock(t *testing.T) {
	dir := t.TempDir()
	nc := embedded(t, dir, "anchor-test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// One task at a time, each taken and acked before the next: the
	// queue is empty after every ack.
	cycle := func(n int) {
		t.Helper()
		for i := range n {
			if err := s.Ports.Tasks.Publish(ctx, store.Message{Key: fmt.Sprintf("noop_%d", i), Data: []byte(`{}`)})[0]; err != nil {
				t.Fatal(err)
			}
			got := 0
			for got == 0 {
				if err := s.Ports.Tasks.Fetch(ctx, 1, time.Second, func(d store.Delivery) {
					if d.Key() != fmt.Sprintf("noop_%d", i) {
						t.Errorf("delivered %q, want task %d", d.Key(), i)
					}
					got++
					if err := d.Ack(); err != nil {
						t.Error(err)
					}
				}); err != nil {
					t.Fatal(err)
				}
			}
			// The ack is processed before the next publish, as when
			// workers keep up with the submits.
			for {
				info, err := s.Ports.Tasks.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.Leased == 0 {
					break
				}
			}
		}
	}
	blocks := filepath.Join(dir, "jetstream", "jetstream", "$G", "streams", TasksStream, "msgs")
	newest := func() int {
		t.Helper()
		files, err := os.ReadDir(blocks)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range files {
			if i, err := strconv.Atoi(strings.TrimSuffix(f.Name(), ".blk")); err == nil && strings.HasSuffix(f.Name(), ".blk") {
				n = max(n, i)
			}
		}
		return n
	}
	// Without the anchor, the store's behaviour this works around (a
	// newer nats-server may not have it: then there is nothing to see).
	tasks := s.Ports.Tasks.(*stream)
	tasks.anchored = false
	before := newest()
	cycle(50)
	without := newest() - before
	t.Logf("50 tasks through an empty queue without the anchor: %d new block files", without)

	// The publishes carry it: the first one, and one at most every
	// anchorAfter.
	tasks.anchored = true
	before = newest()
	cycle(50)
	if with := newest() - before; with > 2 {
		t.Fatalf("50 tasks through a queue whose publishes carry its anchor made %d new block files (without it: %d)", with, without)
	}
	// Stored on its own (every second, and the older ones purged).
	tasks.anchored = false
	for range 3 {
		if err := s.AnchorTasks(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before = newest()
	cycle(50)
	if with := newest() - before; with > 2 {
		t.Fatalf("50 tasks through a queue with its anchor made %d new block files (without it: %d)", with, without)
	}
	// One anchor is left, the older ones purged; no lane counts it.
	msgs, err := s.Tasks.Info(ctx, jetstream.WithSubjectFilter(TaskAnchorSubject))
	if err != nil {
		t.Fatal(err)
	}
	if n := msgs.State.Subjects[TaskAnchorSubject]; n != 1 {
		t.Fatalf("%d anchors in the task queue, want 1", n)
	}
	info, err := s.Ports.Tasks.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Waiting != 0 || info.Leased != 0 {
		t.Fatalf("the anchor counts as a task: %+v", info)
	}
	// Purging a job's tasks leaves it.
	if err := s.Ports.Tasks.Purge(ctx, "anchor"); err != nil {
		t.Fatal(err)
	}
	if msgs, err = s.Tasks.Info(ctx, jetstream.WithSubjectFilter(TaskAnchorSubject)); err != nil || msgs.State.Subjects[TaskAnchorSubject] != 1 {
		t.Fatalf("a job's purge took the anchor: %v %+v", err, msgs.State.Subjects)
	}
}
