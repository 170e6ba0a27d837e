package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/mrcluster/mrcluster/mapreduce"
)

func TestLetterCount(t *testing.T) {
	files := map[string]string{"a": "Été à Paris\nABC abc\n", "b": "Ωω 123 zz"}
	got, err := mapreduce.RunLocal(context.Background(), LetterCount, files, 3, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, s := range files {
		for _, r := range s {
			if unicode.IsLetter(r) {
				counts[string(unicode.ToLower(r))]++
			}
		}
	}
	var want []string
	for k, n := range counts {
		want = append(want, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(want)
	if got != strings.Join(want, "\n")+"\n" {
		t.Fatalf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}
