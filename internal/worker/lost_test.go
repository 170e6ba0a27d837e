package worker

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mr"
)

// A reduce of a job of many maps that finds them all lost names a bounded
// number in its result, which must fit in one message, and fewer in its
// message; the others are found in the next round.
func TestLostMapIsBounded(t *testing.T) {
	t.Parallel()
	const maps = 5000
	task := job.Task{Job: "wc_x", Phase: job.PhaseReduce, Maps: make([]string, maps)}
	lost := make([]int, maps)
	for i := range maps {
		task.Maps[i], lost[i] = fmt.Sprintf("c%05d", i), i
	}
	var r job.TaskResult
	again, ok := lostMap(&r, task, &mr.InputError{Index: 0, Lost: lost, Err: errors.New("missing")})
	if !ok || r.LostMap != 1 || r.LostCommit != "c00000" || len(r.MoreLost) != maxLostReported {
		t.Fatalf("lost map %d (%s), %d more; want 1 and %d more", r.LostMap, r.LostCommit, len(r.MoreLost), maxLostReported)
	}
	if r.MoreLost[0] != (job.LostOutput{Map: 2, Commit: "c00001"}) {
		t.Fatalf("the first of the others: %+v", r.MoreLost[0])
	}
	if want := fmt.Sprintf("map tasks 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and %d more, whose outputs are lost, run again", maxLostReported+1-maxLostNamed); again != want {
		t.Fatalf("says %q, want %q", again, want)
	}
	var one job.TaskResult
	if again, _ := lostMap(&one, task, &mr.InputError{Index: 7, Lost: []int{7}, Err: errors.New("missing")}); again != "the map task runs again" || one.LostMap != 8 || len(one.MoreLost) != 0 {
		t.Fatalf("one lost: %q, %+v", again, one)
	}
	if _, ok := lostMap(&job.TaskResult{}, job.Task{Phase: job.PhaseMap}, &mr.InputError{}); ok {
		t.Fatal("a map task's input error taken for lost map outputs")
	}
}
