package store

import (
	"testing"
	"time"
)

// A copy the archive answers "not found" for is forgotten only once it has
// answered so for forgetMissedAfter; one found meanwhile starts again.
func TestAMissedCopyIsForgottenOnlyAfterAWhile(t *testing.T) {
	var x archiveIndex
	x.add("a", 7)
	x.add("a", 9)
	t0 := time.Now()
	if x.missedCopy("a", 9, t0) || x.missedCopy("a", 9, t0.Add(forgetMissedAfter/2)) {
		t.Fatal("a copy forgotten at its first misses")
	}
	x.foundCopy(9)
	if x.missedCopy("a", 9, t0.Add(forgetMissedAfter+time.Second)) {
		t.Fatal("a copy found again was forgotten at its next miss")
	}
	if !x.missedCopy("a", 9, t0.Add(2*forgetMissedAfter+2*time.Second)) {
		t.Fatal("a copy missed for longer than forgetMissedAfter is still indexed")
	}
	if got := x.seqs("a"); len(got) != 1 || got[0] != 7 {
		t.Fatalf("the copies left: %v; want [7]", got)
	}
	if len(x.missed) != 0 {
		t.Fatalf("misses still noted: %v", x.missed)
	}
}
