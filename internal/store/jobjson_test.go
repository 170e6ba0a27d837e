package store

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// The written-out encodings of a job record, a task message and a message
// of task results are encoding/json's, byte for byte, for values with
// every field filled at random (strings that need escaping, zero and nil
// values, times in other zones): a field added to job.Job, job.Task or
// job.TaskResult (or to the types they hold) and not to the encoder fails
// here.
func TestJobEncodingIsEncodingJSONs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		var j job.Job
		fill(reflect.ValueOf(&j).Elem(), r)
		want, werr := json.Marshal(&j)
		got, gerr := marshalJob(&j)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("record %d: error %v, encoding/json's %v", i, gerr, werr)
		}
		if string(got) != string(want) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
	for i := range 3000 {
		var rs []job.TaskResult
		fill(reflect.ValueOf(&rs).Elem(), r)
		want, werr := json.Marshal(rs)
		got, gerr := marshalResults(rs)
		if (werr != nil) != (gerr != nil) || string(got) != string(want) {
			t.Fatalf("results %d:\n got %s, %v\nwant %s, %v", i, got, gerr, want, werr)
		}
		var task job.Task
		fill(reflect.ValueOf(&task).Elem(), r)
		want, werr = json.Marshal(task)
		got, gerr = marshalTask(&task)
		if (werr != nil) != (gerr != nil) || string(got) != string(want) {
			t.Fatalf("task %d:\n got %s, %v\nwant %s, %v", i, got, gerr, want, werr)
		}
	}
	// And the record of a real small job through its life.
	j := job.New("noop_01jz0000000000000000000000", job.Spec{Kind: "noop", Partitions: 3}, time.Now())
	for _, rec := range []*job.Job{j, func() *job.Job { c := j.Clone(); c.Values.Set(1, 7); c.Done = 1; return c }()} {
		want, _ := json.Marshal(rec)
		if got, err := marshalJob(rec); err != nil || string(got) != string(want) {
			t.Fatalf("got %s, %v\nwant %s", got, err, want)
		}
	}
}

var (
	timeType   = reflect.TypeFor[time.Time]()
	valuesType = reflect.TypeFor[job.Values]()
	rawType    = reflect.TypeFor[json.RawMessage]()
	zones      = []*time.Location{time.UTC, time.Local, time.FixedZone("", -7*3600-30*60), time.FixedZone("X", 5*3600)}
	strs       = []string{"", "noop", "noop_01jz0000000000000000000000", `a"b\c`, "<tag>&amp;", "line\nnext\ttab\x01", "é ü 中", "bad \xff utf8", "\u2028\u2029", "\x7f"}
	raws       = []string{`{"n":1}`, `{ "s" : "<b>", "x" : [1, 2.5e3, null] }`, `[]`, `"str"`}
)

// fill sets every exported field reachable from v to random values.
func fill(v reflect.Value, r *rand.Rand) {
	switch {
	case v.Type() == timeType:
		if r.IntN(8) > 0 {
			v.Set(reflect.ValueOf(time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2))).In(zones[r.IntN(len(zones))])))
		}
		return
	case v.Type() == valuesType:
		n := r.IntN(20)
		vals := job.NewValues(n)
		for p := range n {
			if r.IntN(3) > 0 {
				vals.Set(p, r.Int64N(5)-2)
			}
		}
		v.Set(reflect.ValueOf(vals))
		return
	case v.Type() == rawType:
		if r.IntN(2) == 0 {
			v.Set(reflect.ValueOf(json.RawMessage(raws[r.IntN(len(raws))])))
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(strs[r.IntN(len(strs))])
	case reflect.Int, reflect.Int64, reflect.Int32:
		if r.IntN(3) > 0 {
			v.SetInt(r.Int64N(2000) - 1000)
		}
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Pointer:
		if r.IntN(2) == 0 {
			v.Set(reflect.New(v.Type().Elem()))
			fill(v.Elem(), r)
		}
	case reflect.Slice:
		switch n := r.IntN(4); {
		case n == 0:
		case v.Type().Elem().Kind() == reflect.Uint8:
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			v.SetBytes(b)
		default:
			s := reflect.MakeSlice(v.Type(), n-1, n-1) // empty, not nil, at times
			for i := range n - 1 {
				fill(s.Index(i), r)
			}
			v.Set(s)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), r)
			}
		}
	default:
		panic("fill: no case for " + v.Type().String())
	}
}
