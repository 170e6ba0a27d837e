package coordinator

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A batch of groups whose server died midway (the tasks of both its groups
// queued, the first group's record stored, its key left pending) is made
// whole by the client's retry once that submit is surely over: the jobs
// of the group stored are answered from it, those of the group never
// stored are stored each under its id, with tasks of their own (the
// group's are dropped when met: it has no record), and a second retry is
// answered the same jobs.
func TestARetryCompletesABatchOfGroupsWhoseServerDiedMidway(t *testing.T) {
	f := storeFixture(t, func(kv store.KV) store.KV { return kv })
	f.c = f.coordinator(func(c *Config) { c.GroupBatches = true })
	specs := make([]job.Spec, job.MaxGroup+10)
	for i := range specs {
		specs[i] = job.Spec{Kind: "noop", Partitions: 1, Fingerprint: fmt.Sprint(i)}
	}
	at := time.Now().Add(-SubmitTimeout - completeAfter - 5*time.Second)
	claim := &keyClaim{key: "batch\x00k", fingerprint: fingerprint(specs)}
	claim.ids = make([]string, len(specs))
	groups, _ := makeGroups(specs, f.c.groupSpecs(specs), at, claim.ids)
	if len(groups) != 2 {
		t.Fatalf("%d groups of %d jobs, want 2", len(groups), len(specs))
	}
	for i, g := range groups {
		if _, err := f.c.publishTasks(f.ctx, g); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			g.Enqueued = true
			if _, err := f.store.Jobs.Create(f.ctx, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(claim.key), claim.value(false)); err != nil {
		t.Fatal(err)
	}
	queued := f.queued()
	for range 2 {
		got, err := f.c.SubmitBatch(f.ctx, specs, "k")
		if err != nil || len(got) != len(specs) {
			t.Fatalf("the retry: %v, %d jobs", err, len(got))
		}
		for i, j := range got {
			if j.ID != claim.ids[i] || !j.Replayed {
				t.Fatalf("job %d answered %s (replayed %v), want %s", i, j.ID, j.Replayed, claim.ids[i])
			}
			stored, _, err := f.c.Get(f.ctx, j.ID)
			if err != nil || stored.ID != j.ID {
				t.Fatalf("job %d of the completed batch: %+v %v", i, stored, err)
			}
			if own := stored.Group == ""; own != (i >= job.MaxGroup) {
				t.Fatalf("job %d is stored on its own: %v; want only those of the group never stored", i, own)
			}
		}
	}
	if n := f.queued(); n != queued+10 {
		t.Fatalf("%d tasks queued after the retry, %d before: want the 10 of the jobs stored on their own", n, queued)
	}
}

// A batch of groups whose server died withdrawing it (its key marked
// withdrawing, its groups stored) is withdrawn by the client's retry,
// groups and all, before the retry's own jobs are stored: no job of the
// first stays.
func TestAWithdrawnBatchTakesItsGroups(t *testing.T) {
	f := groupsFixture(t)
	specs := noopSpecs(20)
	claim := &keyClaim{key: "batch\x00w", fingerprint: fingerprint(specs)}
	claim.ids = make([]string, len(specs))
	groups, _ := makeGroups(specs, f.c.groupSpecs(specs), time.Now(), claim.ids)
	for _, g := range groups {
		if _, err := f.c.publishTasks(f.ctx, g); err != nil {
			t.Fatal(err)
		}
		g.Enqueued = true
		if _, err := f.store.Jobs.Create(f.ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(claim.key), append(claim.value(false), keyWithdrawing...)); err != nil {
		t.Fatal(err)
	}
	got, err := f.c.SubmitBatch(f.ctx, specs, "w")
	if err != nil || len(got) != len(specs) || got[0].ID == claim.ids[0] || got[0].Replayed {
		t.Fatalf("the retry of a withdrawn batch: %v, %+v", err, got)
	}
	for _, g := range groups {
		if _, _, err := f.store.Jobs.Get(f.ctx, g.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the group %s of the withdrawn batch: %v; want it gone", g.ID, err)
		}
	}
	if _, _, err := f.c.Get(f.ctx, claim.ids[0]); job.ErrorCode(err) != job.ENotFound {
		t.Fatalf("a job of the withdrawn batch: %v; want not found", err)
	}
}

// The first tasks of a group's jobs are queued in bundles, and the look for
// tasks lost from the queue reads every task of a bundle: none of the
// group's is taken for lost and queued again.
func TestTheLookForLostTasksReadsBundles(t *testing.T) {
	f := groupsFixture(t)
	specs := noopSpecs(5)
	jobs, err := f.c.SubmitBatch(f.ctx, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	group, _, ok := job.GroupOf(jobs[0].ID)
	if !ok {
		t.Fatalf("job %s is not of a group", jobs[0].ID)
	}
	if n := f.queued(); n != 1 {
		t.Fatalf("%d task messages for a group of 5; want one bundle", n)
	}
	queuedAgain, err := f.c.Reconcile(f.ctx, map[string]int{group: 5})
	if err != nil {
		t.Fatal(err)
	}
	if queuedAgain != 0 {
		t.Fatalf("the look queued %d tasks of the group again; want none, its bundle holds them all", queuedAgain)
	}
}

// groupsFixture is a coordinator on the store that stores batches in
// groups.
func groupsFixture(t *testing.T) *fixture {
	f := storeFixture(t, func(kv store.KV) store.KV { return kv })
	f.c = f.coordinator(func(c *Config) { c.GroupBatches = true })
	return f
}

// noopSpecs returns n specs of one-task noop jobs.
func noopSpecs(n int) []job.Spec {
	specs := make([]job.Spec, n)
	for i := range specs {
		specs[i] = job.Spec{Kind: "noop", Partitions: 1}
	}
	return specs
}
