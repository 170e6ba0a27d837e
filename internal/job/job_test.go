package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mrcluster/mrcluster/internal/job"
)

func TestApplyCountsEachPartitionOnce(t *testing.T) {
	t.Parallel()
	now := time.Now()
	j := job.New("noop_x", job.Spec{Kind: "noop", Partitions: 3}, now)
	res := func(p int, v int64) job.TaskResult {
		return job.TaskResult{Job: j.ID, Partition: p, Value: v, StartedAt: now, FinishedAt: now}
	}
	if !j.Apply(res(1, 7), job.SumReduce) {
		t.Fatal("first result of partition 1 not applied")
	}
	if j.State != job.Running || j.StartedAt == nil {
		t.Fatalf("state after first result = %s, want running with a start time", j.State)
	}
	if j.Apply(res(1, 100), job.SumReduce) {
		t.Fatal("a duplicate result of partition 1 was applied")
	}
	if j.Apply(res(3, 1), job.SumReduce) || j.Apply(res(-1, 1), job.SumReduce) {
		t.Fatal("a result for a partition out of range was applied")
	}
	j.Apply(res(2, 5), job.SumReduce)
	j.Apply(res(0, 3), job.SumReduce)
	if j.State != job.Succeeded || j.Result == nil {
		t.Fatalf("state = %s, result = %v; want succeeded with a result", j.State, j.Result)
	}
	if got := j.Result.Values; len(got) != 3 || got[0] != 3 || got[1] != 7 || got[2] != 5 || j.Result.Sum != 15 {
		t.Fatalf("result = %+v, want values [3 7 5] in partition order and sum 15", j.Result)
	}
	if j.Apply(res(0, 1), job.SumReduce) {
		t.Fatal("a result applied to a finished job")
	}
}

func TestApplyFailureFailsJob(t *testing.T) {
	t.Parallel()
	j := job.New("short_x", job.Spec{Kind: "short", Partitions: 2}, time.Now())
	j.Apply(job.TaskResult{Partition: 1, Worker: "w.0", Attempt: 1, Error: "disk full"}, job.SumReduce)
	if j.State != job.Failed || j.Failed != 1 {
		t.Fatalf("state = %s failed = %d, want failed 1", j.State, j.Failed)
	}
	for _, want := range []string{"partition 1", "w.0", "disk full"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("error %q does not mention %q", j.Error, want)
		}
	}
	if err := j.Cancel(time.Now()); job.ErrorCode(err) != job.EConflict {
		t.Fatalf("cancel of a failed job: %v, want a conflict", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	r := job.NewRegistry(job.Kind{Name: "short"}, job.Kind{Name: "long"}, job.Kind{Name: "count", MapRecord: func(context.Context, job.Record, job.Emit) error { return nil }})
	for _, tc := range []struct {
		spec job.Spec
		want string // "" for valid
	}{
		{job.Spec{Kind: "short", Partitions: 1}, ""},
		{job.Spec{Kind: "long", Partitions: 10}, ""},
		{job.Spec{Kind: "short", Partitions: 0}, "from 1 to 10"},
		{job.Spec{Kind: "short", Partitions: -3}, "from 1 to 10"},
		{job.Spec{Kind: "short", Partitions: 11}, "from 1 to 10"},
		{job.Spec{Kind: "medium", Partitions: 1}, "known kinds: count, long, short"},
		{job.Spec{Kind: "count", Partitions: 10, Input: []string{"books"}, Reducers: 1024}, ""},
		// 10,000 maps of 1,024 reducers would write 10 million shuffle runs.
		{job.Spec{Kind: "count", Partitions: 10000, Input: []string{"books"}, Reducers: 101}, "partitions × reducers is 10000 × 101 = 1010000, at most 1000000"},
		{job.Spec{Kind: "count", Partitions: 10000, Input: []string{"books"}, Reducers: 100}, ""},
		{job.Spec{Partitions: 1}, "kind is required"},
		{job.Spec{Kind: "short", Partitions: 1, Params: []byte(`[1]`)}, "params must be a JSON object"},
		{job.Spec{Kind: "short", Partitions: 1, Params: []byte(`{"a":1}`)}, ""},
	} {
		max := 10
		if tc.spec.Kind == "count" {
			max = 10000
		}
		err := r.Validate(tc.spec, max)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || job.ErrorCode(err) != job.EInvalid):
			t.Errorf("%+v: error %v, want an invalid error containing %q", tc.spec, err, tc.want)
		}
	}
}

func TestNewIDUniqueAndOrdered(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	now := time.Now()
	prev := ""
	for i := range 10000 {
		id := job.NewID("short", now.Add(time.Duration(i/100)*time.Millisecond))
		if !strings.HasPrefix(id, "short_") || len(id) != len("short_")+26 {
			t.Fatalf("id %q: want short_ and 26 characters", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if i%100 == 0 && id < prev {
			t.Fatalf("id %q of a later millisecond sorts before %q", id, prev)
		}
		prev = id
	}
}

// Ids made in one millisecond sort in the order they were made (a batch's
// jobs list in it); an id of an hour before keeps that time.
func TestIDsOfOneMillisecondSortByAge(t *testing.T) {
	now := time.Now()
	prev := job.NewID("noop", now)
	for range 1000 {
		id := job.NewID("noop", now)
		if id <= prev {
			t.Fatalf("id %s made after %s in the same millisecond sorts before it", id, prev)
		}
		prev = id
	}
	old := now.Add(-time.Hour)
	if at, ok := job.IDTime(job.NewID("noop", old)); !ok || at.UnixMilli() != old.UnixMilli() {
		t.Fatalf("an id of an hour ago says %v", at)
	}
	// Its own time, or a later one taken by an id made before it.
	if at, _ := job.IDTime(job.NewID("noop", now)); at.UnixMilli() < now.UnixMilli() || at.Sub(now) > time.Second {
		t.Fatalf("an id made after one of an hour ago says %v, want %v", at, now)
	}
}

func TestErrorCode(t *testing.T) {
	t.Parallel()
	if job.ErrorCode(nil) != "" || job.ErrorCode(errors.New("x")) != job.EInternal {
		t.Fatal("codes of nil and plain errors")
	}
	if got := job.ErrorMessage(errors.New("secret path /x")); got != "internal error" {
		t.Fatalf("message of an internal error = %q", got)
	}
}

// TestCloneSharesNothingApplyChanges: a clone's Apply must not change the
// original, which other goroutines may be reading.
func TestCloneSharesNothingApplyChanges(t *testing.T) {
	j := &job.Job{ID: "wordcount_x", Partitions: 2, Reducers: 1, Phase: job.PhaseMap, Values: job.NewValues(2),
		MapCommits: make([]string, 2), Counters: &job.Counters{}, State: job.Running}
	c := j.Clone()
	c.Apply(job.TaskResult{Partition: 0, Commit: "aa", Counters: &job.Counters{InputBytes: 5}}, job.SumReduce)
	c.Backups = append(c.Backups, "map/1")
	if j.MapCommits[0] != "" || j.Counters.InputBytes != 0 || j.Done != 0 || len(j.Backups) != 0 {
		t.Fatalf("the original changed: %+v", j)
	}
	if c.MapCommits[0] != "aa" || c.Counters.InputBytes != 5 {
		t.Fatalf("the clone did not change: %+v", c)
	}
}

// TestHistoryRecordsEachState: a data job's history is queued, running,
// reduce, succeeded, in order and at the times of the results.
func TestHistoryRecordsEachState(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	j := job.New("wordcount_x", job.Spec{Kind: "wordcount", Partitions: 1}, t0)
	j.Phase, j.Reducers, j.MapCommits = job.PhaseMap, 1, make([]string, 1)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	j.Apply(job.TaskResult{Partition: 0, Commit: "m", StartedAt: at(1), FinishedAt: at(2)}, job.SumReduce)
	j.Apply(job.TaskResult{Phase: job.PhaseReduce, Partition: 0, Commit: "r", StartedAt: at(3), FinishedAt: at(4)}, job.SumReduce)
	want := []job.Step{{State: "queued", At: t0}, {State: "running", At: at(1)}, {State: "reduce", At: at(2)}, {State: "succeeded", At: at(4)}}
	if fmt.Sprint(j.History) != fmt.Sprint(want) {
		t.Fatalf("history %v, want %v", j.History, want)
	}
}

// A record's task log holds each attempt once, and at most job.MaxTaskLog:
// the oldest attempts that were not a task's last word make room.
func TestTaskLogIsBounded(t *testing.T) {
	j := &job.Job{ID: "noop_x", LogInRecord: true}
	var rs []job.TaskResult
	for a := 1; a <= job.MaxTaskLog+5; a++ {
		rs = append(rs, job.TaskResult{Job: j.ID, Attempt: a, Outcome: job.OutcomeLost})
	}
	final := job.TaskResult{Job: j.ID, Attempt: job.MaxTaskLog + 6}
	if !j.Log(append(rs, final)) || j.Log(rs[len(rs)-3:]) {
		t.Fatal("Log reported no change for new attempts, or one for attempts it holds")
	}
	if len(j.TaskLog) != job.MaxTaskLog || j.TaskLog[len(j.TaskLog)-1].Attempt != final.Attempt || j.TaskLog[0].Attempt != 7 {
		t.Fatalf("log of %d attempts, first %d, last %+v; want %d, the oldest lost ones gone and the final one kept",
			len(j.TaskLog), j.TaskLog[0].Attempt, j.TaskLog[len(j.TaskLog)-1], job.MaxTaskLog)
	}
}

// An error of any size fits a result: it is cut, on a character, saying
// how much went.
func TestClipError(t *testing.T) {
	if got := job.ClipError("short"); got != "short" {
		t.Fatalf("a short error: %q", got)
	}
	long := strings.Repeat("é", job.MaxErrorBytes) // 2 bytes each
	got := job.ClipError(long)
	if len(got) > job.MaxErrorBytes+40 || !utf8.ValidString(got) || !strings.HasSuffix(got, "… (4096 more bytes)") {
		t.Fatalf("a long error cut to %d bytes, valid %v, ending %q", len(got), utf8.ValidString(got), got[len(got)-30:])
	}
}

// A result of another job is never applied: results of several small jobs
// travel in one message.
func TestApplyRefusesAnotherJobsResult(t *testing.T) {
	now := time.Now()
	sum := func(vs []int64) job.Result { return job.Result{Values: vs, Sum: vs[0]} }
	j := job.New("noop_a", job.Spec{Kind: "noop", Partitions: 1}, now)
	if j.Apply(job.TaskResult{Job: "noop_b", Partition: 0, Value: 5, StartedAt: now, FinishedAt: now}, sum) {
		t.Fatal("applied a result of job noop_b to job noop_a")
	}
	if !j.Apply(job.TaskResult{Job: "noop_a", Partition: 0, Value: 5, StartedAt: now, FinishedAt: now}, sum) || j.Done != 1 {
		t.Fatalf("its own result: done %d", j.Done)
	}
}

func TestQuote(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"abc", `"abc"`},
		{strings.Repeat("a", 64), `"` + strings.Repeat("a", 64) + `"`},
		{strings.Repeat("a", 70), `"` + strings.Repeat("a", 64) + `"… (70 bytes)`},
		// Cut at a character's start, never inside it.
		{"a" + strings.Repeat("é", 40), `"a` + strings.Repeat("é", 31) + `"… (81 bytes)`},
		{"\x00\"", `"\x00\""`},
	} {
		if got := job.Quote(c.in); got != c.want {
			t.Errorf("Quote(%.20q…) = %s; want %s", c.in, got, c.want)
		}
	}
}

func TestNewPreview(t *testing.T) {
	short := job.NewPreview([]byte("a"), "a 1")
	if string(short.Key) != "a" || short.Line != "a 1" {
		t.Fatalf("%+v; want the line and key as they are", short)
	}
	long := job.NewPreview([]byte(strings.Repeat("é", 1000)), strings.Repeat("é", 1000)+" 2")
	want := strings.Repeat("é", job.PreviewBytes/2) + "… (1762 more bytes)"
	if long.Line != want || len(long.Key) != job.PreviewBytes {
		t.Fatalf("line %q (key %d bytes); want %q, key %d bytes", long.Line, len(long.Key), want, job.PreviewBytes)
	}
}

// A store that refuses a message as too large will refuse it again: the
// error says so (413), not "try again shortly" (503).
func TestUnavailableTooLarge(t *testing.T) {
	err := job.Unavailable("job store", errors.New("store job x: nats: maximum payload exceeded"))
	if job.ErrorCode(err) != job.ETooLarge || !strings.Contains(job.ErrorMessage(err), "larger than one message may be") || strings.Contains(job.ErrorMessage(err), "try again") {
		t.Fatalf("%v (%s): want too large, without try again", job.ErrorMessage(err), job.ErrorCode(err))
	}
	if err := job.Unavailable("job store", errors.New("context deadline exceeded")); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a timeout: %s; want unavailable", job.ErrorCode(err))
	}
}

// A reduce that found several map outputs lost sends the job back to its
// map phase for all of them at once; a loss against an output made again
// since is stale, and the maps that run again do not count their input a
// second time, nor the bytes of their output each reducer reads.
func TestReopenRunsEveryLostMapAgain(t *testing.T) {
	t.Parallel()
	now := time.Now()
	j := job.New("wc_x", job.Spec{Kind: "wc", Partitions: 4}, now)
	j.Reducers, j.Phase = 2, job.PhaseMap
	j.MapCommits = make([]string, 4)
	mapDone := func(p int, commit string) bool {
		return j.Apply(job.TaskResult{Job: j.ID, Partition: p, Commit: commit, StartedAt: now, FinishedAt: now,
			Counters: &job.Counters{InputBytes: 10, InputRecords: 1}, PartBytes: []int64{3, 7}}, job.SumReduce)
	}
	for p := range 4 {
		mapDone(p, fmt.Sprintf("c%d", p))
	}
	if j.Phase != job.PhaseReduce || j.Counters.InputBytes != 40 || !slices.Equal(j.ReduceInputBytes, []int64{12, 28}) {
		t.Fatalf("after the maps: phase %s, counters %+v, reducers' input %v", j.Phase, j.Counters, j.ReduceInputBytes)
	}
	if mapDone(2, "again") || !slices.Equal(j.ReduceInputBytes, []int64{12, 28}) {
		t.Fatalf("a second result of map 2 changed the reducers' input: %v", j.ReduceInputBytes)
	}
	lost := job.TaskResult{Job: j.ID, Phase: job.PhaseReduce, Partition: 1, Error: "missing", Unretried: true, FinishedAt: now,
		LostMap: 2, LostCommit: "c1", MoreLost: []job.LostOutput{{Map: 4, Commit: "c3"}, {Map: 1, Commit: "old"}}}
	if !j.Apply(lost, job.SumReduce) {
		t.Fatal("the loss was not applied")
	}
	if j.Phase != job.PhaseMap || j.Reopened != 2 || j.Done != 2 || j.MapCommits[1] != "" || j.MapCommits[3] != "" || j.MapCommits[0] != "c0" {
		t.Fatalf("after the loss of maps 1 and 3 (and a stale one of 0): phase %s, reopened %d, done %d, commits %q", j.Phase, j.Reopened, j.Done, j.MapCommits)
	}
	if j.Apply(lost, job.SumReduce) {
		t.Fatal("the same loss applied twice")
	}
	mapDone(1, "n1")
	mapDone(3, "n3")
	if j.Phase != job.PhaseReduce || j.Counters.InputBytes != 40 || j.Counters.InputRecords != 4 || !slices.Equal(j.ReduceInputBytes, []int64{12, 28}) {
		t.Fatalf("after the maps ran again: phase %s, counters %+v, reducers' input %v (counted twice?)", j.Phase, j.Counters, j.ReduceInputBytes)
	}
	// Losses past max(MaxReopened, partitions) fail the job.
	all := job.TaskResult{Job: j.ID, Phase: job.PhaseReduce, Partition: 0, Error: "missing", Unretried: true, FinishedAt: now,
		LostMap: 1, LostCommit: "c0", MoreLost: []job.LostOutput{{Map: 2, Commit: "n1"}, {Map: 3, Commit: "c2"}}}
	if !j.Apply(all, job.SumReduce) || j.State != job.Failed || !strings.Contains(j.Error, "made again 2 times") {
		t.Fatalf("a third loss of 3 outputs: state %s, error %q", j.State, j.Error)
	}
}

// A map task of a job whose files are in an object lists its files when
// they are few, and names the list when they are many: the task stays a
// small message whatever the files, and Input cuts the same split from
// the list as the task would have carried.
func TestMapTaskOfManyFilesNamesTheList(t *testing.T) {
	t.Parallel()
	files := make([]job.InputFile, 7000)
	for i := range files {
		files[i] = job.InputFile{Name: fmt.Sprintf("f%05d.txt", i), Dataset: "lots", File: fmt.Sprintf("f%05d.txt", i),
			Upload: "01abcdefghjkmnpqrstvwxyz01", Size: 24, BlockSize: 1 << 20, Lines: []int64{2}}
	}
	for _, m := range []int{1, 5, 10} {
		j := job.New("wc_x", job.Spec{Kind: "wc", Partitions: m}, time.Now())
		j.Reducers, j.Phase, j.FilesRef = 2, job.PhaseMap, "wc_x/input-files"
		tasks := j.TasksOf(files)
		if len(tasks) != m {
			t.Fatalf("%d tasks, want %d", len(tasks), m)
		}
		inline := len(files)/m <= job.MaxTaskFiles
		for _, task := range tasks {
			data, err := json.Marshal(task)
			if err != nil {
				t.Fatal(err)
			}
			if inline != (task.FilesRef == "") || inline != (len(task.Files) > 0) {
				t.Fatalf("m=%d: task %d lists %d files and names %q", m, task.Partition, len(task.Files), task.FilesRef)
			}
			if !inline && len(data) > 4<<10 {
				t.Fatalf("m=%d: a task naming the list is %d bytes", m, len(data))
			}
			// A worker that does not know FilesRef reads the task's own
			// split: it must fail, not read nothing.
			if !inline && (len(task.Split) == 0 || task.Split[0].File >= 0) {
				t.Fatalf("m=%d: a task naming the list carries split %v, which an earlier worker would read as empty", m, task.Split)
			}
			own, split, err := task.Input(files)
			if err != nil {
				t.Fatal(err)
			}
			if inline && (!reflect.DeepEqual(own, task.Files) || !reflect.DeepEqual(split, task.Split)) {
				t.Fatalf("m=%d: Input cut another split than the task carries", m)
			}
			var n int64
			for _, p := range split {
				n += p.End - p.Start
			}
			if want := int64(24 * len(files) / m); n != want || len(own) != len(files)/m {
				t.Fatalf("m=%d task %d: %d files, %d bytes; want %d files, %d bytes", m, task.Partition, len(own), n, len(files)/m, want)
			}
		}
	}
	bad := job.Task{Job: "wc_x", Partitions: 2, Partition: 2}
	if _, _, err := bad.Input(files); err == nil {
		t.Fatal("a task past its job's splits cut one")
	}
}

// A data job without a partition count gets a split per 64 MiB of input,
// at least one per worker, within the bounds.
func TestDefaultPartitions(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		bytes                         int64
		workers, reducers, most, want int
	}{
		{3 * mib, 4, 1, 10000, 4},        // small input: one per worker
		{0, 4, 1, 10000, 1},              // empty input: one
		{2, 4, 1, 10000, 2},              // no split under a byte
		{1 << 30, 4, 4, 10000, 16},       // 1 GiB: 16 splits of 64 MiB
		{1<<30 + 1, 4, 4, 10000, 17},     // rounded up
		{100 << 30, 4, 1, 1000, 1000},    // within --max-partitions
		{100 << 30, 4, 1024, 10000, 976}, // within the shuffle's bound: 976 × 1,024 ≤ 1,000,000
		{64 * mib, 0, 1, 10000, 1},       // no worker yet
	} {
		if got := job.DefaultPartitions(c.bytes, c.workers, c.reducers, c.most); got != c.want {
			t.Errorf("DefaultPartitions(%d bytes, %d workers, %d reducers, at most %d) = %d; want %d", c.bytes, c.workers, c.reducers, c.most, got, c.want)
		}
	}
}
