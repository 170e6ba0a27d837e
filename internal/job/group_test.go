package job

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The groups of a batch are made with one time, taken before the ids: a
// later millisecond taken meanwhile by another goroutine does not put the
// batch's later groups before its earlier ones (TestCancelOfManyJobsOfGroups
// failed on that once in CI).
func TestIDsMadeWithALaggingTimeSortInTheOrderMade(t *testing.T) {
	now := time.Now()
	first := NewGroupID("echo", now)
	other := NewID("echo", now.Add(3*time.Millisecond)) // another goroutine's
	second := NewGroupID("echo", now)
	plain := NewID("echo", now)
	if !(first < other && other < second && second < plain) {
		t.Fatalf("ids out of the order made: %s, %s, group %s, %s", first, other, second, plain)
	}
	if !(MemberID(first, MaxGroup) < MemberID(second, 1)) {
		t.Fatalf("the members of the first group do not sort before the second's: %s, %s", MemberID(first, MaxGroup), MemberID(second, 1))
	}
	old := now.Add(-time.Hour)
	if at, ok := IDTime(NewGroupID("echo", old)); !ok || at.UnixMilli() != old.UnixMilli() {
		t.Fatalf("a group id of an hour ago says %v", at)
	}
}

// timeOf reports whether an id's time at is that of an id made at now: its
// millisecond, or up to maxBehind later when an id of a later time was
// made before it (stamp).
func timeOf(at, now time.Time) bool {
	d := at.UnixMilli() - now.UnixMilli()
	return d >= 0 && d <= maxBehind
}

func TestGroupIDsNameTheirGroupAndNeverAPlainJob(t *testing.T) {
	now := time.Now()
	seen := map[string]bool{}
	for range 50 {
		before := NewID("noop", now)
		g := NewGroupID("noop", now)
		after := NewID("noop", now)
		if !(before < g && g < after) {
			t.Fatalf("ids out of order: %s, group %s, %s", before, g, after)
		}
		if IsMember(g) || IsMember(before) {
			t.Fatalf("a plain id taken for a member's: %s or %s", g, before)
		}
		if gt, ok := IDTime(g); !ok || !timeOf(gt, now) {
			t.Fatalf("group id %s has time %v, want %v", g, gt, now)
		}
		for _, n := range []int{1, 2, 31, 32, MaxGroup, 1023} {
			m := MemberID(g, n)
			if seen[m] {
				t.Fatalf("member id %s given twice", m)
			}
			seen[m] = true
			back, k, ok := GroupOf(m)
			if !ok || back != g || k != n {
				t.Fatalf("GroupOf(%s) = %s, %d, %v; want %s, %d", m, back, k, ok, g, n)
			}
			if IDKind(m) != "noop" || !IsMember(m) {
				t.Fatalf("member id %s: kind %q, member %v", m, IDKind(m), IsMember(m))
			}
			if mt, ok := IDTime(m); !ok || !timeOf(mt, now) {
				t.Fatalf("member id %s has time %v, want %v", m, mt, now)
			}
		}
	}
	if _, _, ok := GroupOf(NewID("noop", now)); ok {
		t.Fatal("a plain job id read as a member's")
	}
	if _, _, ok := GroupOf("noop_xyz"); ok {
		t.Fatal("a malformed id read as a member's")
	}
}

func TestAGroupEndsWhenEveryMemberHas(t *testing.T) {
	now := time.Now().UTC()
	specs := []Spec{{Kind: "noop", Partitions: 1, Params: []byte(`{"a":1}`)}, {Kind: "noop", Partitions: 1}, {Kind: "noop", Partitions: 1}}
	g := NewGroup(NewGroupID("noop", now), specs, now)
	g.MaxAttempts = 3
	tasks := g.Tasks()
	if len(tasks) != 3 || tasks[0].Member != MemberID(g.ID, 1) || string(tasks[0].Params) != `{"a":1}` || tasks[2].Member != MemberID(g.ID, 3) {
		t.Fatalf("tasks of a group: %+v", tasks)
	}
	if !g.StartMember(2, now) || g.MemberJob(2).State != Running || g.MemberJob(1).State != Queued {
		t.Fatalf("member 2 not running after its start: %v, %v", g.MemberJob(2).State, g.MemberJob(1).State)
	}
	if !g.Apply(TaskResult{Job: g.ID, Partition: 0, Attempt: 1, Value: 7, StartedAt: now, FinishedAt: now}, SumReduce) {
		t.Fatal("a member's result not applied")
	}
	long := strings.Repeat("x", 2*MaxMemberError)
	if !g.Apply(TaskResult{Job: g.ID, Partition: 1, Attempt: 3, Failures: 3, Worker: "w1", Error: long, StartedAt: now, FinishedAt: now}, SumReduce) {
		t.Fatal("a member's failure not applied")
	}
	if g.State.Terminal() {
		t.Fatalf("group %s with a member unfinished", g.State)
	}
	if g.Apply(TaskResult{Job: g.ID, Partition: 0, Attempt: 2, Value: 8, StartedAt: now, FinishedAt: now}, SumReduce) {
		t.Fatal("a second result of a member counted")
	}
	if err := g.CancelMember(3, now); err != nil {
		t.Fatal(err)
	}
	if err := g.CancelMember(3, now); ErrorCode(err) != EConflict {
		t.Fatalf("cancel of a canceled member: %v", err)
	}
	if g.State != Succeeded || g.FinishedAt == nil {
		t.Fatalf("group %s once every member ended", g.State)
	}
	m1, m2, m3 := g.MemberJob(1), g.MemberJob(2), g.MemberJob(3)
	if m1.State != Succeeded || m1.Result == nil || m1.Result.Sum != 7 || m1.Done != 1 || string(m1.Params) != `{"a":1}` || m1.Partitions != 1 || m1.Group != g.ID {
		t.Fatalf("member 1: %+v", m1)
	}
	if m2.State != Failed || !strings.Contains(m2.Error, "attempt 3 of 3") || len(m2.Error) > MaxMemberError+200 || m2.Failed != 1 {
		t.Fatalf("member 2: %s, %q", m2.State, m2.Error)
	}
	if m3.State != Canceled || m3.FinishedAt == nil {
		t.Fatalf("member 3: %+v", m3)
	}
	c := g.Clone()
	c.Members[0].State = Failed
	if g.Members[0].State != Succeeded {
		t.Fatal("a clone's members share the record's")
	}
}

// The first tasks of a group's jobs go in bundles of up to MaxBundle, each
// read back as the tasks it holds; a task that ran before, one of a job of
// its own and one in a kind's lane stay messages of their own.
func TestBundlesHoldTheFirstTasksOfAGroup(t *testing.T) {
	var tasks []Task
	for i := range MaxBundle + 6 {
		tasks = append(tasks, Task{Job: "g", Kind: "noop", Partition: i, Partitions: MaxBundle + 10, Member: MemberID("noop_81m96xe0qhs2zttkrtys995400", i+1),
			Params: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`), Epoch: 1, Priority: 2})
	}
	retried := tasks[0]
	retried.Partition, retried.Runs, retried.Member = MaxBundle+6, 1, "other"
	own := Task{Job: "j", Kind: "noop", Partitions: 1}
	laned := tasks[1]
	laned.Partition, laned.Lane, laned.Member = MaxBundle+7, "kind-noop", "laned"
	all := append(slices.Clone(tasks), retried, own, laned)
	b := Bundle(all)
	if len(b) != 5 || len(b[0].More) != MaxBundle-1 || len(b[1].More) != 5 || len(b[2].More)+len(b[3].More)+len(b[4].More) != 0 {
		t.Fatalf("%d messages (%d, %d more); want a bundle of %d, one of 6, and three tasks alone", len(b), len(b[0].More), len(b[1].More), MaxBundle)
	}
	var back []Task
	for _, m := range b {
		back = append(back, m.Bundled()...)
	}
	if !reflect.DeepEqual(back, all) {
		t.Fatalf("the bundles read back as\n%+v\nwant\n%+v", back, all)
	}
}
