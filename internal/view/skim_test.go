package view

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// skimRecords are records as the store holds them, with what could trip a
// skimmer: keys of the head inside nested values (params, history, the
// task log), quotes, escapes and brackets inside strings, an unfinished
// job, an error message.
func skimRecords(t testing.TB) [][]byte {
	now := time.Date(2026, 12, 1, 14, 33, 7, 590181718, time.UTC)
	later := now.Add(1500 * time.Millisecond)
	one, two := job.NewValues(1), job.NewValues(2)
	one.Set(0, 1)
	two.Set(1, 2)
	jobs := []*job.Job{
		{ID: "noop_01", Kind: "noop", Partitions: 1, State: job.Succeeded, Values: one, Done: 1, Phase: job.PhaseMap,
			History:     []job.Step{{State: "queued", At: now}, {State: "succeeded", At: later}},
			LogInRecord: true, TaskLog: []job.TaskResult{{Job: "noop_01", Attempt: 1, Worker: "w\"1", Value: 1, StartedAt: now, FinishedAt: later}},
			Result: &job.Result{Values: []int64{1}, Sum: 1}, CreatedAt: now, StartedAt: &now, FinishedAt: &later},
		{ID: "grep_02", Kind: "grep", Partitions: 3, State: job.Failed, Phase: job.PhaseReduce,
			Params: json.RawMessage(`{"state":"queued","id":"x","created_at":"2000-01-01T00:00:00Z","p":"}]\\\"{[","n":[1,{"a":null}],"t":true}`),
			Error:  "map 2: \"boom\" {at [line 3]} \\ \u00e9\n", CreatedAt: now, FinishedAt: &later},
		{ID: "short_03", Kind: "short", Partitions: 2, State: job.Running, CreatedAt: now, StartedAt: &now, Values: two},
		{ID: "noop_04", Kind: "noop", Partitions: 1, State: job.Canceled, CreatedAt: now}, // canceled before it started: no finished time
	}
	var out [][]byte
	for _, j := range jobs {
		data, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// The skim reads the same head as json.Unmarshal, or says it cannot.
func TestSkimReadsTheHeadAsJSONDoes(t *testing.T) {
	for _, data := range skimRecords(t) {
		var want head
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		got, ok := skimHead(data)
		if !ok {
			t.Errorf("skim of a record encoding/json wrote failed: %s", data)
			continue
		}
		if got.ID != want.ID || got.State != want.State || !got.CreatedAt.Equal(want.CreatedAt) ||
			(got.FinishedAt == nil) != (want.FinishedAt == nil) || (got.FinishedAt != nil && !got.FinishedAt.Equal(*want.FinishedAt)) {
			t.Errorf("skim read %+v, json %+v, of %s", got, want, data)
		}
	}
	for _, bad := range []string{``, `{`, `{"id":"a"`, `{"id":"a","state":"failed"}`, `{"id":"a","state":"failed","created_at":"yesterday"}`,
		`{"id":"a\"b","state":"failed","created_at":"2026-12-01T00:00:00Z"}`, `{"id":"a","state":"failed","created_at":"2026-12-01T00:00:00Z"} x`,
		`{"id":"a","x":"unterminated,"state":"failed","created_at":"2026-12-01T00:00:00Z"}`, `[1,2]`} {
		if h, ok := skimHead([]byte(bad)); ok {
			t.Errorf("skim of %q answered %+v: want it to give up", bad, h)
		}
	}
}

// Any input: the skim never panics, and what it answers for JSON is what
// json.Unmarshal reads. (It does not check the syntax of the values it
// skips: a damaged record may be skimmed, and fails when read whole.)
func FuzzSkimHead(f *testing.F) {
	for _, data := range skimRecords(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := skimHead(data)
		var want head
		if !ok || json.Unmarshal(data, &want) != nil {
			return
		}
		if got.ID != want.ID || got.State != want.State || !got.CreatedAt.Equal(want.CreatedAt) || (got.FinishedAt == nil) != (want.FinishedAt == nil) {
			t.Fatalf("skim read %+v, json %+v, of %q", got, want, data)
		}
	})
}

func BenchmarkSkim(b *testing.B) {
	data := skimRecords(b)[0]
	b.Run("skim", func(b *testing.B) {
		for b.Loop() {
			if _, ok := skimHead(data); !ok {
				b.Fatal("skim failed")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			var h head
			if err := json.Unmarshal(data, &h); err != nil {
				b.Fatal(err)
			}
		}
	})
}
