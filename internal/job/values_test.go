package job_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/mrcluster/mrcluster/internal/job"
)

// Values behaves as a plain slice of optional values, through random sets,
// clears, copies and encodings.
func TestValuesAgainstASlice(t *testing.T) {
	t.Parallel()
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := 1 + rng.IntN(60)
		model := make([]*int64, n)
		v := job.NewValues(n)
		for range rng.IntN(3 * n) {
			prev := v.Clone()
			prevModel := append([]*int64(nil), model...)
			p := rng.IntN(n+2) - 1
			x := int64(rng.IntN(3))
			if rng.IntN(4) == 0 { // a lost map output: the partition is to be done again
				want := p >= 0 && p < n && model[p] != nil
				if got := v.Clear(p); got != want {
					t.Fatalf("seed %d: Clear(%d) = %v, want %v", seed, p, got, want)
				}
				if want {
					model[p] = nil
				}
			} else {
				want := p >= 0 && p < n && model[p] == nil
				if got := v.Set(p, x); got != want {
					t.Fatalf("seed %d: Set(%d) = %v, want %v", seed, p, got, want)
				}
				if want {
					model[p] = &x
				}
			}
			var newly []int
			for q := range model {
				if model[q] != nil && prevModel[q] == nil {
					newly = append(newly, q)
				}
			}
			if got := v.NewlySet(prev); !reflect.DeepEqual(got, newly) {
				t.Fatalf("seed %d: NewlySet = %v, want %v", seed, got, newly)
			}
			// The copy did not change.
			for q := range prevModel {
				x, ok := prev.Get(q)
				if ok != (prevModel[q] != nil) || ok && x != *prevModel[q] {
					t.Fatalf("seed %d: a clone changed at %d", seed, q)
				}
			}
		}
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back job.Values
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		var done []int64
		var unset []int
		for q, m := range model {
			x, ok := back.Get(q)
			if ok != (m != nil) || ok && x != *m {
				t.Fatalf("seed %d: %s decoded wrong at %d", seed, data, q)
			}
			if m != nil {
				done = append(done, *m)
			} else {
				unset = append(unset, q)
			}
		}
		if back.Len() != n || !reflect.DeepEqual(back.Done(), append([]int64{}, done...)) || !reflect.DeepEqual(back.Unset(), unset) {
			t.Fatalf("seed %d: Len %d Done %v Unset %v, want %d %v %v", seed, back.Len(), back.Done(), back.Unset(), n, done, unset)
		}
	}
	for _, bad := range []string{`[[1]]`, `[[1,-1]]`, `[[1,0]]`, `[1,2]`, `{"a":1}`} {
		var v job.Values
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
}
