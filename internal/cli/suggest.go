package cli

import (
	"flag"
	"fmt"
	"strings"
)

// commands are the command line's commands, for the suggestion after a
// mistyped one.
var commands = []string{"serve", "worker", "config", "submit", "dataset", "kind", "schedule", "kinds",
	"wait", "rerun", "retry", "output", "jobs", "job", "cancel", "delete", "status", "version", "help"}

// flagAliases are flag names people bring from other tools, and the flag
// of ours that does what they meant.
var flagAliases = map[string]string{
	"dataset": "input", "datasets": "input", "in": "input",
	"maps": "partitions", "mappers": "partitions", "tasks": "partitions",
	"reduces": "reducers", "reducer": "reducers",
	"params": "param", "key": "idempotency-key",
	"url": "server", "addr": "server",
}

// unknownFlag adds to the flag package's error for a flag fs does not
// define the flag the user most likely meant, when one is close.
func unknownFlag(fs *flag.FlagSet, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return err
	}
	name = strings.TrimLeft(name, "-")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	meant := closest(name, names)
	if a, ok := flagAliases[name]; ok && fs.Lookup(a) != nil {
		meant = a
	}
	if meant == "" {
		return fmt.Errorf("%w (the flags are listed above)", err)
	}
	return fmt.Errorf("%w (did you mean --%s?)", err, meant)
}

// closest returns the candidate nearest to s, one a typo away: at most a
// third of its letters wrong, missing, extra or swapped; "" when none is.
func closest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+1
	for _, c := range candidates {
		if d := distance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the optimal string alignment distance between a and b: the
// letters to change, insert or delete, and the neighbours to swap, to make
// one the other.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
