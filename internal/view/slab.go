package view

import (
	"slices"
	"strings"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/mapx"
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
	ids     mapx.Strings
}

const slabEntries = 256 // entries per block: 12 KiB

// entry returns a new entry for job id.
func (s *slab) entry(id string, created int64) *entry {
	if len(s.entries) == 0 {
		s.entries = make([]entry, slabEntries)
	}
	en := &s.entries[0]
	s.entries = s.entries[1:]
	*en = entry{id: s.ids.Pack(id), created: created}
	return en
}

// stateCode is an entry's state, a byte: a string would take 16 bytes of
// every job's entry, and the string decoded from a record would be an
// allocation of its own that the entry keeps. Codes are handed out per
// view, the known states first.
type stateCode uint8

const (
	// codeNone is a new entry's state until its record's is set: not a
	// state of the queue (a new entry that looked queued, when its first
	// record was already finished, counted as leaving the queue's order
	// without being in it, and after 1,024 such jobs the order's trim
	// panicked and took the server down).
	codeNone stateCode = iota
	codeQueued
	codeRunning
	codeSucceeded
	codeFailed
	codeCanceled
	codeScheduled
	codeOverflow = stateCode(255) // past 255 distinct states, which a store never holds
)

// knownStates are the first codes' states, in order.
var knownStates = []job.State{"", job.Queued, job.Running, job.Succeeded, job.Failed, job.Canceled, job.Scheduled}

// unknownState stands for the states past codeOverflow.
const unknownState = job.State("unknown")

// stateCodes maps states to codes and back. Those a newer server may
// write, which this one does not know, get codes as they are met.
type stateCodes struct{ states []job.State }

// code returns state's code, making one for a state not met before. The
// view's lock must be held for writing.
func (c *stateCodes) code(state job.State) stateCode {
	if k, ok := c.lookup(state); ok {
		return k
	}
	if c.states == nil {
		c.states = slices.Clone(knownStates)
	}
	if len(c.states) >= int(codeOverflow) {
		return codeOverflow
	}
	c.states = append(c.states, job.State(strings.Clone(string(state))))
	return stateCode(len(c.states) - 1)
}

// lookup returns state's code, if it has one.
func (c *stateCodes) lookup(state job.State) (stateCode, bool) {
	states := c.states
	if states == nil {
		states = knownStates
	}
	for i, s := range states {
		if s == state {
			return stateCode(i), true
		}
	}
	return 0, false
}

// state returns the state of code k.
func (c *stateCodes) state(k stateCode) job.State {
	states := c.states
	if states == nil {
		states = knownStates
	}
	if int(k) < len(states) {
		return states[k]
	}
	return unknownState
}

func (k stateCode) terminal() bool {
	return k == codeSucceeded || k == codeFailed || k == codeCanceled
}
