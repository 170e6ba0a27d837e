package guest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// pairs reads what drain wrote: length-prefixed keys and values.
func pairs(t *testing.T, b []byte) map[string]string {
	t.Helper()
	got := map[string]string{}
	r := reader{b: b}
	for len(r.b) > 0 {
		k, v := r.bytes(), r.bytes()
		if r.err != nil {
			t.Fatal(r.err)
		}
		if _, ok := got[string(k)]; ok {
			t.Fatalf("key %q handed back twice", k)
		}
		got[string(k)] = string(v)
	}
	return got
}

// keys returns random keys of every length the table reads differently
// (none, up to 8 and up to 16 bytes with masked loads, longer ones), some
// differing only in their last byte or in a zero byte at their end.
func keys(rng *rand.Rand) [][]byte {
	var ks [][]byte
	for n := range 40 {
		for range 40 {
			k := make([]byte, n)
			for i := range k {
				k[i] = "ab\x00z"[rng.IntN(4)]
			}
			ks = append(ks, k)
		}
	}
	return ks
}

// emitted returns k as an emit may get it: alone in its slice, or with
// other bytes after it up to its capacity.
func emitted(rng *rand.Rand, k []byte) []byte {
	if rng.IntN(2) == 0 {
		return bytes.Clone(k)
	}
	b := append(bytes.Clone(k), bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(20))...)
	return b[:len(k)]
}

func TestTheCombinedTableAddsCountsByKey(t *testing.T) {
	kind, combined = &Kind{Combine: SumCombine}, table{sum: true}
	defer func() { kind, combined = nil, table{} }()
	rng := rand.New(rand.NewPCG(3, 4))
	ks := keys(rng)
	want := map[string]int64{}
	for range 50000 {
		k := ks[rng.IntN(len(ks))]
		v := rng.IntN(12)
		want[string(k)] += int64(v)
		addCombined(emitted(rng, k), []byte(strconv.Itoa(v)))
	}
	got := pairs(t, combined.drain(nil))
	if len(got) != len(want) {
		t.Fatalf("%d keys handed back, %d added", len(got), len(want))
	}
	for k, n := range want {
		if got[k] != strconv.FormatInt(n, 10) {
			t.Fatalf("key %q: %q, want %d", k, got[k], n)
		}
	}
	if len(combined.entries) != 0 || combined.size != 0 {
		t.Fatal("the table holds pairs after its drain")
	}
}

func TestTheCombinedTableCallsACombinerOfItsOwn(t *testing.T) {
	// The combiner keeps the largest value, as 8 bytes.
	largest := func(_, a, b []byte) []byte {
		if binary.BigEndian.Uint64(b) > binary.BigEndian.Uint64(a) {
			return append(a[:0], b...)
		}
		return a
	}
	kind, combined = &Kind{Combine: largest}, table{}
	defer func() { kind, combined = nil, table{} }()
	rng := rand.New(rand.NewPCG(5, 6))
	ks := keys(rng)
	want := map[string]uint64{}
	for range 50000 {
		k := ks[rng.IntN(len(ks))]
		v := rng.Uint64()
		if cur, ok := want[string(k)]; !ok || v > cur {
			want[string(k)] = v
		}
		addCombined(emitted(rng, k), binary.BigEndian.AppendUint64(nil, v))
	}
	got := pairs(t, combined.drain(nil))
	if len(got) != len(want) {
		t.Fatalf("%d keys handed back, %d added", len(got), len(want))
	}
	for k, v := range want {
		if g := got[k]; len(g) != 8 || binary.BigEndian.Uint64([]byte(g)) != v {
			t.Fatalf("key %q: %x, want %x", k, g, v)
		}
	}
}

func TestMapReadsEveryRecordAndRefusesATruncatedOne(t *testing.T) {
	var got []Record
	kind = &Kind{Map: func(_ context.Context, rec Record, _ Emit) error {
		rec.Text = bytes.Clone(rec.Text)
		got = append(got, rec)
		return nil
	}}
	defer func() { kind = nil }()
	want := []Record{{File: "a.txt", Line: 1, Text: []byte("first line")}, {File: "a.txt", Line: 2, Text: nil}, {File: "b", Line: 1 << 40, Text: []byte("x")}}
	var in []byte
	var ends []int // where each record ends in in
	for _, r := range want {
		in = appendBytes(in, []byte(r.File))
		in = binary.LittleEndian.AppendUint64(in, uint64(r.Line))
		in = appendBytes(in, r.Text)
		ends = append(ends, len(in))
	}
	if _, err := callMap(in, nil); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d records read, %d sent", len(got), len(want))
	}
	for i := range want {
		if got[i].File != want[i].File || got[i].Line != want[i].Line || !bytes.Equal(got[i].Text, want[i].Text) {
			t.Fatalf("record %d read as %+v, sent %+v", i, got[i], want[i])
		}
	}
	for n := 1; n < len(in); n++ {
		got = nil
		_, err := callMap(in[:n], nil)
		whole := 0
		for _, e := range ends {
			if e <= n {
				whole++
			}
		}
		switch {
		case slices.Contains(ends, n) && err != nil:
			t.Fatalf("%d bytes, %d whole records: %v", n, whole, err)
		case !slices.Contains(ends, n) && !errors.Is(err, errTruncated):
			t.Fatalf("%d bytes, a record cut short: %v, want %v", n, err, errTruncated)
		case len(got) != whole:
			t.Fatalf("%d bytes: %d records read, %d whole", n, len(got), whole)
		}
	}
}
