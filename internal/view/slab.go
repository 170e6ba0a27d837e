package view

import (
	"strings"
	"unsafe"

	"github.com/mrcluster/mrcluster/internal/job"
)

// slab hands out the entries the view keeps for every job, and their id
// strings, from blocks of many. Allocated one by one amid a burst's
// garbage (the records being decoded, the messages being read), the few
// bytes each job keeps for as long as it is stored shared pages with that
// garbage, and a page with one of them live cannot be handed back once the
// burst is over. Packed, they fill pages of their own. (Measured, the
// fragmentation left by a burst of 200,000 jobs moved within the noise:
// most of it is JetStream's.)
type slab struct {
	entries []entry
	ids     []byte
}

const (
	slabEntries = 256      // entries per block: 16 KiB
	slabBytes   = 16 << 10 // bytes of ids per block
	maxPacked   = 256      // a longer id gets a string of its own
)

// entry returns a new entry for job id.
func (s *slab) entry(id string, created int64) *entry {
	if len(s.entries) == 0 {
		s.entries = make([]entry, slabEntries)
	}
	en := &s.entries[0]
	s.entries = s.entries[1:]
	*en = entry{id: s.pack(id), created: created}
	return en
}

// pack returns a copy of id in the current block of ids. The bytes of a
// block are written once, as an id is appended, and never again: the
// strings made of them stay what they are.
func (s *slab) pack(id string) string {
	if len(id) == 0 || len(id) > maxPacked {
		return strings.Clone(id)
	}
	if cap(s.ids)-len(s.ids) < len(id) {
		s.ids = make([]byte, 0, slabBytes)
	}
	off := len(s.ids)
	s.ids = append(s.ids, id...)
	return unsafe.String(&s.ids[off], len(id))
}

// canonical returns the constant equal to state: the string decoded from
// a record is an allocation of its own, which an entry would keep.
func canonical(state job.State) job.State {
	for _, s := range [...]job.State{job.Succeeded, job.Failed, job.Canceled, job.Queued, job.Running, job.Scheduled} {
		if state == s {
			return s
		}
	}
	return state
}
