package view

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/mrcluster/mrcluster/internal/job"
)

// Entries and ids handed out from blocks stay what they were given, across
// the blocks' bounds, however long the id.
func TestSlabEntriesKeepTheirIDs(t *testing.T) {
	var s slab
	var ids []string
	var ens []*entry
	for i := range 3 * slabEntries {
		id := fmt.Sprintf("kind%d_%026d", i%7, i)
		if i%100 == 0 {
			id = strings.Repeat("k", maxPacked+i%3) // past the bound
		}
		if i%101 == 0 {
			id = ""
		}
		ids = append(ids, id)
		ens = append(ens, s.entry(id, int64(i)))
	}
	seen := map[*entry]bool{}
	for i, en := range ens {
		if en.id != ids[i] || en.created != int64(i) {
			t.Fatalf("entry %d: id %q created %d; want %q %d", i, en.id, en.created, ids[i], i)
		}
		if seen[en] {
			t.Fatalf("entry %d handed out twice", i)
		}
		seen[en] = true
	}
}

func TestCanonicalStates(t *testing.T) {
	for _, s := range []job.State{job.Succeeded, job.Failed, job.Canceled, job.Queued, job.Running, job.Scheduled, "other"} {
		decoded := job.State(strings.Clone(string(s)))
		got := canonical(decoded)
		if got != s {
			t.Fatalf("canonical(%q) = %q", decoded, got)
		}
		if shared := unsafe.StringData(string(got)) == unsafe.StringData(string(decoded)); shared != (s == "other") {
			t.Fatalf("canonical(%q) shares the decoded string: %v", decoded, shared)
		}
	}
}
