package app_test

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
)

// With one worker held by a task, jobs of priorities 1 to 4 submitted in
// that order (twice) start highest first once it is free, each priority in
// its order; a priority out of 1..4 is a 400 naming the field.
func TestPriorityOrderThroughTheQueue(t *testing.T) {
	t.Parallel()
	hold, release := held(nil)
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers = testKinds(hold), 1 })
	c := b.client().API()
	ctx := apitest.Context(t)
	for _, bad := range []string{`{"kind":"noop","partitions":1,"priority":5}`, `{"kind":"noop","partitions":1,"priority":"high"}`, `{"kind":"noop","partitions":1,"priority":0}`} {
		if r := b.do(t, "POST", "/api/v1/jobs", bad); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "priority must be an integer from 1 (low) to 4 (high)") {
			t.Errorf("%s: %d %s", bad, r.Status, r.Body)
		}
	}

	held := b.submit(t, "hold", 1)
	b.await(t, held.ID, func(j client.Job) bool { return j.Tasks.Running == 1 })
	var ids []string
	prio := map[string]int{}
	order := map[string]int{} // submit order: ids of one millisecond do not sort by it
	for range 2 {
		for p := 1; p <= 4; p++ {
			j, err := c.Submit(ctx, client.Spec{Kind: "noop", Partitions: 1, Priority: p})
			if err != nil {
				t.Fatal(err)
			}
			if j.Priority != p {
				t.Fatalf("job of priority %d shows %d", p, j.Priority)
			}
			order[j.ID] = len(ids)
			ids = append(ids, j.ID)
			prio[j.ID] = p
		}
	}
	close(release)
	type start struct {
		id string
		at int64
	}
	var starts []start
	for _, id := range ids {
		b.await(t, id, terminal)
		tasks, err := c.Tasks(ctx, id)
		if err != nil || len(tasks) != 1 {
			t.Fatalf("tasks of %s: %+v %v", id, tasks, err)
		}
		starts = append(starts, start{id, tasks[0].StartedAt.UnixNano()})
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].at < starts[j].at })
	var prios []int
	for _, s := range starts {
		prios = append(prios, prio[s.id])
	}
	for i := 1; i < len(prios); i++ {
		if prios[i] > prios[i-1] {
			t.Fatalf("priorities started in the order %v; want highest first", prios)
		}
	}
	// Within a priority, the older job first.
	for i := 1; i < len(starts); i++ {
		if prio[starts[i].id] == prio[starts[i-1].id] && order[starts[i].id] < order[starts[i-1].id] {
			t.Fatalf("two jobs of priority %d started newest first", prio[starts[i].id])
		}
	}
}
