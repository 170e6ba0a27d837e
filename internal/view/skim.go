package view

import (
	"bytes"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// skimHead reads the head of a job record (id, state, created and finished
// times) in one pass over its JSON, skipping every other value without
// decoding it. json.Unmarshal into the head's four fields scans a record
// twice (it checks the whole input first) and was a quarter of the CPU of
// a restart with 200,000 finished jobs. ok is false for anything it does
// not expect (a record not written by encoding/json, an escaped key or
// string in the head): the caller then decodes the record whole. It does
// not check the syntax of the values it skips: a record damaged there is
// found when it is read whole.
func skimHead(data []byte) (h head, ok bool) {
	s := skimmer{data: data}
	if !s.byte('{') {
		return h, false
	}
	var seenID, seenState, seenCreated bool
	for {
		key, ok := s.str()
		if !ok || !s.byte(':') {
			return h, false
		}
		switch string(key) {
		case "id":
			v, ok := s.str()
			if !ok {
				return h, false
			}
			h.ID, seenID = string(v), true
		case "state":
			v, ok := s.str()
			if !ok {
				return h, false
			}
			h.State, seenState = job.State(v), true
		case "created_at":
			t, ok := s.time()
			if !ok || t == nil {
				return h, false
			}
			h.CreatedAt, seenCreated = *t, true
		case "finished_at":
			t, ok := s.time()
			if !ok {
				return h, false
			}
			h.FinishedAt = t
		default:
			for _, k := range headKeys {
				if bytes.EqualFold(key, k) {
					return h, false // encoding/json would read it as the head's: not one of ours
				}
			}
			if !s.skip() {
				return h, false
			}
		}
		if s.byte('}') {
			return h, seenID && seenState && seenCreated && s.i == len(s.data)
		}
		if !s.byte(',') {
			return h, false
		}
	}
}

var headKeys = [][]byte{[]byte("id"), []byte("state"), []byte("created_at"), []byte("finished_at")}

// skimmer walks compact JSON as encoding/json writes it (no white space).
type skimmer struct {
	data []byte
	i    int
}

// byte consumes c if it comes next.
func (s *skimmer) byte(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string of plain ASCII with no escapes in it, as the
// record's keys, ids, states and times are.
func (s *skimmer) str() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	rest := s.data[s.i:]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil, false
	}
	for _, c := range rest[:end] {
		if c == '\\' || c < 0x20 || c >= 0x80 { // an escape, a control byte, not ASCII: not one of ours
			return nil, false
		}
	}
	s.i += end + 1
	return rest[:end], true
}

// time reads a time as encoding/json writes it (RFC 3339), or null.
func (s *skimmer) time() (*time.Time, bool) {
	if bytes.HasPrefix(s.data[s.i:], []byte("null")) {
		s.i += 4
		return nil, true
	}
	v, ok := s.str()
	if !ok {
		return nil, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return nil, false
	}
	return &t, true
}

// skip passes over one value of any type. It checks no more of the
// value's syntax than it needs to find its end.
func (s *skimmer) skip() bool {
	if s.i == len(s.data) || bytes.IndexByte([]byte(`"{[tfn-0123456789`), s.data[s.i]) < 0 {
		return false // no value
	}
	depth := 0
	for s.i < len(s.data) {
		switch c := s.data[s.i]; c {
		case '"':
			s.i++
			for {
				j := bytes.IndexAny(s.data[s.i:], `"\`)
				if j < 0 {
					return false
				}
				s.i += j
				if s.data[s.i] == '"' {
					s.i++
					break
				}
				if s.i += 2; s.i > len(s.data) { // an escape and the byte it escapes
					return false
				}
			}
		case '{', '[':
			depth++
			s.i++
		case '}', ']':
			if depth == 0 {
				return true // the end of the enclosing object: a scalar before it
			}
			depth--
			s.i++
		case ',':
			if depth == 0 {
				return true
			}
			s.i++
		default:
			s.i++
		}
		if depth == 0 && (s.data[s.i-1] == '"' || s.data[s.i-1] == '}' || s.data[s.i-1] == ']') {
			return true // a whole string, object or array
		}
	}
	return depth == 0 && s.i == len(s.data)
}
