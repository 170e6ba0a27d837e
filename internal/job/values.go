package job

import (
	"encoding/json"
	"fmt"
)

// Values holds each partition's map result, nil until that task is done.
//
// It is stored as runs, [[value, count], …] with null for partitions not
// done, because the job record is rewritten as results come in: a job of
// 10,000 partitions whose tasks finish roughly in order is a few runs, not
// 10,000 numbers to encode and decode at every write.
type Values []*int64

type run struct {
	v *int64
	n int
}

// MarshalJSON encodes v as runs.
func (v Values) MarshalJSON() ([]byte, error) {
	var runs []run
	for _, p := range v {
		if k := len(runs) - 1; k >= 0 && sameValue(runs[k].v, p) {
			runs[k].n++
			continue
		}
		runs = append(runs, run{p, 1})
	}
	b := make([]byte, 0, 16*len(runs)+2)
	b = append(b, '[')
	for i, r := range runs {
		if i > 0 {
			b = append(b, ',')
		}
		if r.v == nil {
			b = fmt.Appendf(b, "[null,%d]", r.n)
		} else {
			b = fmt.Appendf(b, "[%d,%d]", *r.v, r.n)
		}
	}
	return append(b, ']'), nil
}

// UnmarshalJSON decodes runs.
func (v *Values) UnmarshalJSON(data []byte) error {
	var runs [][2]*int64
	if err := json.Unmarshal(data, &runs); err != nil {
		return fmt.Errorf("partition values: %w", err)
	}
	total := 0
	for _, r := range runs {
		if r[1] == nil || *r[1] < 0 || *r[1] > 1<<24 {
			return fmt.Errorf("partition values: bad run length")
		}
		total += int(*r[1])
	}
	out := make(Values, 0, total)
	for _, r := range runs {
		for range *r[1] {
			out = append(out, r[0]) // values are never changed once set, so runs may share them
		}
	}
	*v = out
	return nil
}

func sameValue(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
