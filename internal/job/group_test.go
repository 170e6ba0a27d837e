package job

import (
	"strings"
	"testing"
	"time"
)

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
		if gt, ok := IDTime(g); !ok || gt.UnixMilli() != now.UnixMilli() {
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
			if mt, ok := IDTime(m); !ok || mt.UnixMilli() != now.UnixMilli() {
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
