package job

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Values holds each partition's map result, unset until that task is done.
//
// It is kept as runs of equal values, because the job record is copied and
// rewritten as results come in: a job of 10,000 partitions whose tasks
// finish roughly in order is a few runs, so a copy, an encoding or a
// decoding costs little whatever the partition count. It is stored as
// [[value, count], …] with null for partitions not done.
type Values struct {
	runs []run // in partition order, covering [0, Len())
}

type run struct {
	start, n int
	set      bool
	v        int64
}

// NewValues returns n unset values.
func NewValues(n int) Values {
	if n == 0 {
		return Values{}
	}
	return Values{runs: []run{{start: 0, n: n}}}
}

// Len is the number of partitions.
func (v Values) Len() int {
	if len(v.runs) == 0 {
		return 0
	}
	last := v.runs[len(v.runs)-1]
	return last.start + last.n
}

// find returns the index of the run holding partition p.
func (v Values) find(p int) int {
	return sort.Search(len(v.runs), func(i int) bool { return v.runs[i].start+v.runs[i].n > p })
}

// Get returns partition p's value and whether it is set.
func (v Values) Get(p int) (int64, bool) {
	if p < 0 || p >= v.Len() {
		return 0, false
	}
	r := v.runs[v.find(p)]
	return r.v, r.set
}

// Set sets partition p to x if it is not set yet, and reports whether it
// did. The runs are replaced, not changed, so copies made by Clone stay as
// they were.
func (v *Values) Set(p int, x int64) bool {
	if p < 0 || p >= v.Len() {
		return false
	}
	i := v.find(p)
	r := v.runs[i]
	if r.set {
		return false
	}
	parts := make([]run, 0, 3)
	if p > r.start {
		parts = append(parts, run{start: r.start, n: p - r.start})
	}
	parts = append(parts, run{start: p, n: 1, set: true, v: x})
	if end := r.start + r.n; p+1 < end {
		parts = append(parts, run{start: p + 1, n: end - p - 1})
	}
	out := make([]run, 0, len(v.runs)+2)
	out = append(out, v.runs[:i]...)
	for _, q := range parts {
		if k := len(out) - 1; k >= 0 && out[k].set == q.set && out[k].v == q.v {
			out[k].n += q.n
			continue
		}
		out = append(out, q)
	}
	for _, q := range v.runs[i+1:] {
		if k := len(out) - 1; out[k].set == q.set && out[k].v == q.v {
			out[k].n += q.n
			continue
		}
		out = append(out, q)
	}
	v.runs = out
	return true
}

// Clear unsets partition p, if it is set, and reports whether it did. As
// Set, it replaces the runs.
func (v *Values) Clear(p int) bool {
	if _, set := v.Get(p); !set {
		return false
	}
	out := make([]run, 0, len(v.runs)+2)
	add := func(q run) {
		if q.n == 0 {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].set == q.set && out[k].v == q.v {
			out[k].n += q.n
			return
		}
		out = append(out, q)
	}
	for _, r := range v.runs {
		if p < r.start || p >= r.start+r.n {
			add(r)
			continue
		}
		add(run{start: r.start, n: p - r.start, set: r.set, v: r.v})
		add(run{start: p, n: 1})
		add(run{start: p + 1, n: r.start + r.n - p - 1, set: r.set, v: r.v})
	}
	v.runs = out
	return true
}

// Clone returns a copy sharing nothing that Set changes.
func (v Values) Clone() Values {
	return Values{runs: append([]run(nil), v.runs...)}
}

// Done returns the set values, in partition order.
func (v Values) Done() []int64 {
	out := []int64{}
	for _, r := range v.runs {
		if r.set {
			for range r.n {
				out = append(out, r.v)
			}
		}
	}
	return out
}

// Unset returns the partitions not set, in order.
func (v Values) Unset() []int {
	var out []int
	for _, r := range v.runs {
		if !r.set {
			for p := r.start; p < r.start+r.n; p++ {
				out = append(out, p)
			}
		}
	}
	return out
}

// NewlySet returns the partitions set in v but not in prev, in order.
func (v Values) NewlySet(prev Values) []int {
	var out []int
	for _, r := range v.runs {
		if !r.set {
			continue
		}
		for p := r.start; p < r.start+r.n; {
			// Skip, a run of prev at a time, what prev already had.
			if p >= prev.Len() {
				out = append(out, p)
				p++
				continue
			}
			q := prev.runs[prev.find(p)]
			end := min(q.start+q.n, r.start+r.n)
			if !q.set {
				for ; p < end; p++ {
					out = append(out, p)
				}
			}
			p = end
		}
	}
	return out
}

// MarshalJSON encodes v as runs.
func (v Values) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 16*len(v.runs)+2)
	b = append(b, '[')
	for i, r := range v.runs {
		if i > 0 {
			b = append(b, ',')
		}
		if r.set {
			b = fmt.Appendf(b, "[%d,%d]", r.v, r.n)
		} else {
			b = fmt.Appendf(b, "[null,%d]", r.n)
		}
	}
	return append(b, ']'), nil
}

// UnmarshalJSON decodes runs.
func (v *Values) UnmarshalJSON(data []byte) error {
	var raw [][2]*int64
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("partition values: %w", err)
	}
	out := Values{runs: make([]run, 0, len(raw))}
	start := 0
	for _, r := range raw {
		if r[1] == nil || *r[1] < 1 || *r[1] > 1<<24 {
			return fmt.Errorf("partition values: bad run length")
		}
		q := run{start: start, n: int(*r[1])}
		if r[0] != nil {
			q.set, q.v = true, *r[0]
		}
		if k := len(out.runs) - 1; k >= 0 && out.runs[k].set == q.set && out.runs[k].v == q.v {
			out.runs[k].n += q.n
		} else {
			out.runs = append(out.runs, q)
		}
		start += q.n
	}
	*v = out
	return nil
}
