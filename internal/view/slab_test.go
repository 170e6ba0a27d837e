package view

import (
	"fmt"
	"slices"
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
			id = strings.Repeat("k", 300+i%3) // longer than mapx.Strings packs
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

// An entry's state is a byte: the known states and those met later keep
// their names, and the entry stays within 48 bytes (with 200,000 jobs
// stored, every 8 bytes more is 1.6 MB in every server).
func TestStateCodes(t *testing.T) {
	var c stateCodes
	for _, s := range append(slices.Clone(job.States), "paused-by-a-newer-version") {
		k := c.code(job.State(strings.Clone(string(s))))
		if got := c.state(k); got != s {
			t.Fatalf("state %q: code %d names %q", s, k, got)
		}
		if k.terminal() != s.Terminal() {
			t.Fatalf("state %q: terminal %v", s, k.terminal())
		}
	}
	if k, ok := c.lookup("never-seen"); ok {
		t.Fatalf("a state never met has code %d", k)
	}
	for i := range 300 {
		c.code(job.State(fmt.Sprint("s", i)))
	}
	if k := c.code("one-more"); k != codeOverflow || c.state(k) != unknownState {
		t.Fatalf("past 255 states: code %d, %q", k, c.state(k))
	}
	if size := unsafe.Sizeof(entry{}); size > 48 {
		t.Fatalf("an entry takes %d bytes; keep it within 48", size)
	}
}
