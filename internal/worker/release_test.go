package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// A pool at its start gives back the task a worker of this host whose
// process is gone was running, and claims its status: only a busy one, of
// this host and process id namespace, written within a third of the ack
// wait (its lease cannot have run out since), of a process that is not
// running; never one of another host or namespace, a live process, a
// status older than that, or an idle worker.
func TestDeadRunsOfThisHostAreGivenBackAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := memstore.New(memstore.Config{AckWait: 10 * time.Minute})
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := gone.Process.Pid
	keys := []string{"dead", "elsewhere", "live", "stale", "container", "idle"}
	for _, k := range keys {
		if err := s.Tasks.Publish(ctx, store.Message{Key: k, Data: []byte(k)})[0]; err != nil {
			t.Fatal(err)
		}
	}
	leases := map[string]string{}
	for len(leases) < len(keys) {
		if err := s.Tasks.Fetch(ctx, len(keys), time.Second, func(d store.Delivery) { leases[d.Key()] = d.Lease() }); err != nil {
			t.Fatal(err)
		}
	}
	ns, now := pidNamespace(), time.Now().UTC()
	started := now.Add(-time.Hour)
	for _, k := range keys {
		st := job.WorkerStatus{Key: k, Pool: "old", Host: "here", PID: dead, PIDNS: ns, Busy: true, JobID: "nap_1", Attempt: 1,
			Lease: leases[k], StartedAt: started, TaskStartedAt: &started, LastSeen: now.Add(-2 * time.Second)}
		switch k {
		case "elsewhere":
			st.Host = "there"
		case "live":
			st.PID = os.Getppid()
		case "stale":
			st.LastSeen = now.Add(-5 * time.Minute) // past a third of the ack wait
		case "container":
			st.PIDNS = "pid:[1]"
		case "idle":
			st.Busy = false
		}
		b, _ := json.Marshal(st)
		if _, err := s.Workers.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	p := New(Config{Store: s, Datasets: &dataset.Store{KV: s.Datasets, Blocks: s.Blocks}, Kinds: job.NewRegistry(),
		Concurrency: 1, Name: "new", Host: "here", Logger: slog.New(slog.DiscardHandler)})
	p.ackWait = 10 * time.Minute // as Start reads it from the queue
	p.releaseDeadRuns(ctx)

	var released []string
	for _, r := range p.Released() {
		released = append(released, r.Key)
	}
	if !slices.Equal(released, []string{"dead"}) {
		t.Fatalf("gave back the runs of %v; want only the dead process's", released)
	}
	var again []string
	if err := s.Tasks.Fetch(ctx, len(keys), 500*time.Millisecond, func(d store.Delivery) { again = append(again, d.Key()) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, []string{"dead"}) {
		t.Fatalf("delivered again %v; want the dead process's task alone", again)
	}
	left, err := s.Workers.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(left)
	if want := []string{"container", "elsewhere", "idle", "live", "stale"}; !slices.Equal(left, want) {
		t.Fatalf("statuses left %v; want all but the claimed one, %v", left, want)
	}
}
