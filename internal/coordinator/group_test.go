package coordinator

import (
	"context"
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

// keyedSpecs returns one-task noop specs with keys keys[i] ("": none).
func keyedSpecs(keys ...string) []job.Spec {
	specs := noopSpecs(len(keys))
	for i, k := range keys {
		specs[i].IdempotencyKey, specs[i].Fingerprint = k, "noop "+k
	}
	return specs
}

// Single submits with Idempotency-Keys are gathered as those without:
// each key is claimed for its own job, a member of the group, and the
// same request again is answered that job. A gather that meets a key
// held by an earlier submit (a retry's) goes alone, its own claims freed.
func TestGatheredKeyedSubmitsClaimEachKeyForItsJob(t *testing.T) {
	f := groupsFixture(t)
	specs := keyedSpecs("k1", "", "k3")
	jobs, errs, alone := f.c.gatheredKeyed(f.ctx, specs)
	if alone || errors.Join(errs...) != nil {
		t.Fatalf("gathered keyed submits: alone %v, errors %v", alone, errs)
	}
	group, _, _ := job.GroupOf(jobs[0].ID)
	for i, j := range jobs {
		if g, n, ok := job.GroupOf(j.ID); !ok || g != group || n != i+1 {
			t.Fatalf("job %d of the gather is %s; want member %d of %s", i, j.ID, i+1, group)
		}
	}
	for _, i := range []int{0, 2} {
		again, err := f.c.Submit(f.ctx, specs[i])
		if err != nil || again.ID != jobs[i].ID || !again.Replayed {
			t.Fatalf("submit %d sent again with its key: %+v %v; want %s, replayed", i, again, err, jobs[i].ID)
		}
	}
	// k3 is held (by the job above): the gather goes alone, k4 freed.
	_, _, alone = f.c.gatheredKeyed(f.ctx, keyedSpecs("k4", "k3"))
	if !alone {
		t.Fatal("a gather meeting a key held by an earlier submit was stored")
	}
	if _, err := f.store.Idempotency.Get(f.ctx, idempotencyKey("k4")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the key a gather sent alone claimed: %v; want it freed", err)
	}
	// A withdraw of one job of the group (a retry that met its key marked
	// withdrawing) takes it alone, not the group's others.
	if err := f.c.withdrawAll(f.ctx, []string{jobs[1].ID}); err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		if _, _, err := f.c.Get(f.ctx, j.ID); (i == 1) != (job.ErrorCode(err) == job.ENotFound) {
			t.Fatalf("job %d of the group after a withdraw of job 1 alone: %v", i, err)
		}
	}
}

// A gather of keyed submits whose store fails goes whole, as a batch,
// when no retry was answered meanwhile: no record, no task, keys freed;
// a retry then makes the job.
func TestAFailedGatheredKeyedSubmitIsWithdrawnWhole(t *testing.T) {
	f := groupsFixture(t)
	lost := *f.store
	records := &answeringKV{KV: f.store.Jobs.KV} // no retry
	lost.Jobs = &store.Jobs{KV: records}
	gc := f.coordinator(func(c *Config) { c.Store, c.GroupBatches = &lost, true })
	specs := keyedSpecs("k1", "k2", "")
	jobs, errs, alone := gc.gatheredKeyed(f.ctx, specs)
	for i, err := range errs {
		if alone || job.ErrorCode(err) != job.EUnavailable || jobs[i] != nil {
			t.Fatalf("submit %d of a gather whose record's answer was lost: %v %v (alone %v); want %s", i, jobs[i], err, alone, job.EUnavailable)
		}
	}
	if err := gc.Stop(f.ctx); err != nil { // waits for the withdraw
		t.Fatal(err)
	}
	if len(records.created) != 1 {
		t.Fatalf("records created: %v; want the group's", records.created)
	}
	if _, _, err := f.store.Jobs.Get(f.ctx, records.created[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the record of a failed gather's group: %v; want it withdrawn", err)
	}
	if n := f.queued(); n != 0 {
		t.Fatalf("%d tasks queued after the failed gather was withdrawn", n)
	}
	for _, k := range []string{"k1", "k2"} {
		if _, err := f.store.Idempotency.Get(f.ctx, idempotencyKey(k)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("key %s after its gather was withdrawn: %v; want it freed", k, err)
		}
	}
	retried, err := f.c.Submit(f.ctx, specs[0])
	if err != nil || retried.Replayed {
		t.Fatalf("the retry of a withdrawn gathered submit: %+v %v; want a new job", retried, err)
	}
}

// answeringKV stores a create and, before it loses the answer, has hook
// run: a client's retry answered meanwhile.
type answeringKV struct {
	store.KV
	hook    func()
	created []string // the keys created
}

func (k *answeringKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if _, err := k.KV.Create(ctx, key, value); err != nil {
		return 0, err
	}
	k.created = append(k.created, key)
	if h := k.hook; h != nil {
		k.hook = nil
		h()
	}
	return 0, errCut
}

// A gather of keyed submits whose store fails after its group's record
// was stored, one of whose clients' retry was answered its job meanwhile:
// the group stays, that job with it; the others are withdrawn alone.
func TestAGatheredJobAnsweredToARetryStaysWhenItsSubmitFails(t *testing.T) {
	releaseWait = 5 * time.Millisecond
	t.Cleanup(func() { releaseWait = time.Second })
	f := groupsFixture(t)
	specs := keyedSpecs("k1", "k2", "k3")
	var answered *job.Job
	records := &answeringKV{KV: f.store.Jobs.KV}
	records.hook = func() {
		var err error
		if answered, err = f.c.Submit(f.ctx, specs[1]); err != nil {
			t.Errorf("the retry of k2: %v", err)
		}
	}
	failing := *f.store
	failing.Jobs = &store.Jobs{KV: records}
	gc := f.coordinator(func(c *Config) { c.Store, c.GroupBatches = &failing, true })
	jobs, errs, _ := gc.gatheredKeyed(f.ctx, specs)
	if answered == nil || errs[1] != nil || jobs[1] == nil || jobs[1].ID != answered.ID {
		t.Fatalf("the submit whose retry was answered: %+v %v; want %+v", jobs[1], errs[1], answered)
	}
	if errs[0] == nil || errs[2] == nil {
		t.Fatalf("the other submits of the failed gather: %v", errs)
	}
	if err := gc.Stop(f.ctx); err != nil { // waits for the withdraws
		t.Fatal(err)
	}
	group, _, _ := job.GroupOf(answered.ID)
	g, _, err := f.store.Jobs.Get(f.ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Members[0].Deleted || g.Members[1].Deleted || !g.Members[2].Deleted {
		t.Fatalf("members after the failed gather: %+v; want the first and third withdrawn, the answered one kept", g.Members)
	}
	if j, _, err := f.c.Get(f.ctx, answered.ID); err != nil || j.State.Terminal() {
		t.Fatalf("the job a retry was answered: %+v %v", j, err)
	}
	if n := f.queued(); n != 1 {
		t.Fatalf("%d tasks queued; want the bundle of the group's tasks", n)
	}
}
