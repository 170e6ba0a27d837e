package job

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// The first final result of a task in an epoch counts, later copies of it
// do not; attempts that are not final never count as superseded; a job
// that reads data counts the run whose output its record commits.
func TestSuperseded(t *testing.T) {
	final := func(p, attempt, epoch int, worker string) TaskResult {
		return TaskResult{Partition: p, Attempt: attempt, Epoch: epoch, Worker: worker}
	}
	lost := final(0, 1, 0, "a")
	lost.Outcome = OutcomeLost
	failed := final(1, 1, 0, "a")
	failed.Error = "boom"
	backup := final(2, 2, 0, "c")
	backup.Backup = true
	mapOnly := &Job{}
	rs := []TaskResult{
		lost,
		final(0, 2, 0, "b"), // counts
		final(0, 1, 0, "c"), // a delivery repeated after a crash
		failed,              // the job failed on it
		final(1, 1, 1, "b"), // the retry's epoch: counts
		backup,              // the backup won
		final(2, 1, 0, "a"), // the original lost its race
		final(3, 1, 0, "a"), // once
	}
	want := []bool{false, false, true, false, false, false, true, false}
	if got := Superseded(mapOnly, rs); !slices.Equal(got, want) {
		t.Errorf("map-only job: superseded %v, want %v", got, want)
	}

	data := &Job{MapCommits: []string{"m0b", ""}, ReduceCommits: []string{"r0a"}}
	at := func(phase Phase, p int, commit, worker string) TaskResult {
		r := final(p, 1, 0, worker)
		r.Phase, r.Commit = phase, commit
		return r
	}
	rs = []TaskResult{
		at(PhaseMap, 0, "m0a", "a"),    // its output lost, made again by b
		at(PhaseMap, 0, "m0b", "b"),    // committed
		at(PhaseMap, 1, "m1a", "a"),    // nothing committed (the job ended): the first counts
		at(PhaseMap, 1, "m1b", "b"),    // and the second does not
		at(PhaseReduce, 0, "r0b", "b"), // applied first, yet not the committed one
		at(PhaseReduce, 0, "r0a", "a"), // committed
	}
	want = []bool{true, false, false, true, true, false}
	if got := Superseded(data, rs); !slices.Equal(got, want) {
		t.Errorf("data job: superseded %v, want %v", got, want)
	}
}

// A lost run recorded by two workers (the second died under the task in
// turn) is shown once; lost runs of other attempts, tasks or epochs stay.
func TestRepeatedLostRunsAreShownOnce(t *testing.T) {
	lost := func(partition, attempt, epoch int) TaskResult {
		return TaskResult{Partition: partition, Attempt: attempt, Epoch: epoch, Outcome: OutcomeLost, Phase: PhaseMap}
	}
	rs := []TaskResult{lost(0, 1, 0), lost(0, 1, 0), lost(0, 2, 0), lost(1, 1, 0), lost(0, 1, 1),
		{Partition: 0, Attempt: 3, Phase: PhaseMap, Error: "poisoned"}, {Partition: 0, Attempt: 3, Phase: PhaseMap, Error: "poisoned"}}
	got := DropRepeated(rs)
	want := []TaskResult{rs[0], rs[2], rs[3], rs[4], rs[5], rs[6]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if len(rs) != 7 || !reflect.DeepEqual(rs[1], lost(0, 1, 0)) {
		t.Fatal("the history given was changed")
	}
}

// An interrupted or a failed run's record stored twice (when it was made,
// and with the final result), or a final result sent twice, is shown once; another run's of the same
// attempt number (another worker, or another time) stays.
func TestRepeatedInterruptedRunsAreShownOnce(t *testing.T) {
	at := time.Date(2026, 12, 4, 4, 0, 0, 0, time.UTC)
	interrupted := func(worker string, finished time.Time) TaskResult {
		return TaskResult{Partition: 0, Attempt: 1, Phase: PhaseMap, Outcome: OutcomeInterrupted, Worker: worker, FinishedAt: finished}
	}
	failed := TaskResult{Partition: 0, Attempt: 2, Phase: PhaseMap, Outcome: OutcomeFailed, Worker: "a.0", FinishedAt: at, Error: "flaky"}
	// A final result sent again when the store did not acknowledge it,
	// which it had stored all the same.
	done := TaskResult{Partition: 0, Attempt: 3, Phase: PhaseMap, Worker: "a.1", FinishedAt: at.Add(time.Minute), Value: 1}
	other := done
	other.Worker = "b.1" // another run of the same attempt number (a copy of the task)
	rs := []TaskResult{interrupted("a.0", at), interrupted("a.0", at), interrupted("b.0", at), interrupted("a.0", at.Add(time.Second)), failed, failed, done, done, other}
	got := DropRepeated(rs)
	want := []TaskResult{rs[0], rs[2], rs[3], rs[4], rs[6], rs[8]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// A lost run that ended after all (its worker paused past its lease, then
// resumed) says so; a lost run not heard of again, and one whose attempt
// number a later copy of the task repeated, keep the reason they had.
func TestALostRunThatEndedAfterAllSaysSo(t *testing.T) {
	at := time.Date(2026, 12, 4, 6, 40, 0, 0, time.UTC)
	lost := func(partition, attempt int, noted time.Time) TaskResult {
		return TaskResult{Partition: partition, Attempt: attempt, Phase: PhaseMap, Outcome: OutcomeLost, StartedAt: noted, FinishedAt: noted, Error: "no end heard"}
	}
	ran := func(partition, attempt int, worker string, started time.Time) TaskResult {
		return TaskResult{Partition: partition, Attempt: attempt, Phase: PhaseMap, Worker: worker, StartedAt: started, FinishedAt: started.Add(time.Minute)}
	}
	rs := []TaskResult{
		lost(1, 1, at.Add(40*time.Second)), ran(1, 1, "a.0", at), ran(1, 2, "b.1", at.Add(40*time.Second)), // paused, resumed, ended
		lost(2, 1, at.Add(40*time.Second)), ran(2, 2, "b.0", at.Add(40*time.Second)), // lost for good
		lost(3, 2, at.Add(40*time.Second)), ran(3, 2, "a.1", at.Add(50*time.Second)), // another copy's attempt 2
	}
	ExplainLost(rs)
	for i, want := range []string{LostButEnded, "", "", "no end heard", "", "no end heard", ""} {
		if rs[i].Error != want {
			t.Errorf("record %d (task %d, attempt %d, %s): %q, want %q", i, rs[i].Partition, rs[i].Attempt, rs[i].Outcome, rs[i].Error, want)
		}
	}
}

// Tasks queued again go on from their history: the attempt after the last
// one recorded in their epoch, their failed attempts and their runs lost
// in a row still counted.
func TestTasksQueuedAgainGoOnFromTheirHistory(t *testing.T) {
	tasks := []Task{{Partition: 0, Epoch: 1}, {Partition: 1, Epoch: 1}, {Partition: 2, Epoch: 1}, {Partition: 3, Epoch: 1}}
	rs := []TaskResult{
		{Partition: 0, Epoch: 1, Attempt: 1, Outcome: OutcomeFailed, Failures: 1, Worker: "a.0"},
		{Partition: 0, Epoch: 1, Attempt: 2, Outcome: OutcomeLost, Failures: 1},
		{Partition: 0, Epoch: 1, Attempt: 3, Outcome: OutcomeFailed, Failures: 2, Worker: "a.0"},
		{Partition: 1, Epoch: 0, Attempt: 4, Outcome: OutcomeFailed, Failures: 3, Worker: "a.0"}, // an earlier epoch's
		{Partition: 1, Epoch: 1, Attempt: 1, Outcome: OutcomeInterrupted, Worker: "a.0"},
		// Lost twice in a row after a failure (one record stored twice).
		{Partition: 3, Epoch: 1, Attempt: 1, Outcome: OutcomeFailed, Failures: 1, Worker: "a.0"},
		{Partition: 3, Epoch: 1, Attempt: 2, Outcome: OutcomeLost, Failures: 1},
		{Partition: 3, Epoch: 1, Attempt: 3, Outcome: OutcomeLost, Failures: 1},
		{Partition: 3, Epoch: 1, Attempt: 2, Outcome: OutcomeLost, Failures: 1},
	}
	GoOn(tasks, rs)
	want := []Task{{Partition: 0, Epoch: 1, Runs: 3, Failures: 2}, {Partition: 1, Epoch: 1, Runs: 1}, {Partition: 2, Epoch: 1},
		{Partition: 3, Epoch: 1, Runs: 3, Failures: 1, Lost: 2}}
	if !reflect.DeepEqual(tasks, want) {
		t.Fatalf("got %+v\nwant %+v", tasks, want)
	}
}
