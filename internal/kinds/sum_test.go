package kinds

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestSumHelpers(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{"1", "2", "3"},
		{"-5", "7", "2"},
		{"+4", "4", "8"},
		{"9223372036854775806", "1", "9223372036854775807"},
		{"0", "x", "0"},
		{"", "3", "3"},
	} {
		if got := string(SumCombine(nil, []byte(c.a), []byte(c.b))); got != c.want {
			t.Errorf("SumCombine(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
	vals := func(vs ...string) func(func([]byte) bool) {
		return func(yield func([]byte) bool) {
			for _, v := range vs {
				if !yield([]byte(v)) {
					return
				}
			}
		}
	}
	got, err := SumReduce(context.Background(), []byte("k"), vals("10", "-3", "1000000000000000000"))
	if err != nil || string(got) != "1000000000000000007" {
		t.Fatalf("SumReduce = %q, %v", got, err)
	}
	if _, err := SumReduce(context.Background(), []byte("whale"), vals("1", "one")); err == nil || !strings.Contains(err.Error(), `"one"`) || !strings.Contains(err.Error(), "whale") {
		t.Fatalf("SumReduce of a word: %v; want an error naming the value and the key", err)
	}
	if !slices.Equal(SumCombine(nil, []byte("12"), []byte("30")), []byte("42")) {
		t.Fatal("SumCombine of two counts")
	}
}
