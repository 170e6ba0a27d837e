package mr

import (
	"bytes"
	"io"
	"testing"

	"github.com/mrcluster/mrcluster/internal/job"
)

// A task's progress says nothing until set, then the fraction set,
// clipped to 0..1; bytes read through a counted reader move their share
// (a reduce's merge: its second half) in steps, and reach its end with
// the last byte.
func TestProgress(t *testing.T) {
	var p job.Progress
	if _, ok := p.Load(); ok {
		t.Fatal("a task's progress says something before it was set")
	}
	for _, c := range []struct{ set, want float64 }{{0, 0}, {0.25, 0.25}, {-1, 0}, {7, 1}} {
		p.Set(c.set)
		if f, ok := p.Load(); !ok || f != c.want {
			t.Errorf("set %v: loaded %v, %v; want %v", c.set, f, ok, c.want)
		}
	}
	var none *job.Progress
	none.Set(0.5) // a task run without one sets nothing, and does not fail

	data := bytes.Repeat([]byte("x"), 4*progressEvery)
	rp := &readProgress{p: &p, total: int64(len(data)), base: 0.5, span: 0.5}
	p.Set(0.5)
	r := counted{bytes.NewReader(data), rp}
	buf := make([]byte, progressEvery/2)
	var seen []float64
	for {
		n, err := r.Read(buf)
		f, _ := p.Load()
		if n > 0 && (len(seen) == 0 || seen[len(seen)-1] != f) {
			seen = append(seen, f)
		}
		if err == io.EOF {
			break
		}
	}
	if len(seen) < 3 || seen[len(seen)-1] != 1 {
		t.Fatalf("progress through the merge: %v; want steps from 0.5 to 1", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] || seen[i] < 0.5 {
			t.Fatalf("progress through the merge: %v; want it rising from 0.5", seen)
		}
	}
}
