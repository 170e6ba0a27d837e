package job

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"time"
)

// lastID is the millisecond and the random bits of the process's last id.
var lastID struct {
	sync.Mutex
	ms     uint64
	random [10]byte
}

// maxBehind is how far, in milliseconds, a time given for a new id may lag
// the last id's and still be taken as the last id's millisecond. Callers
// take the time before the lock, so the ids of a batch made with one time
// would otherwise meet a later millisecond taken meanwhile by another
// goroutine, and count from fresh random bits: not in the order made.
const maxBehind = 1000

// stamp returns the millisecond for an id asked for at ms: the last id's
// when ms lags it by at most maxBehind. The caller holds lastID.
func stamp(ms uint64) uint64 {
	if ms < lastID.ms && lastID.ms-ms <= maxBehind {
		return lastID.ms
	}
	return ms
}

// countUp adds one to the big-endian number in b, reporting false when it
// wrapped around to zero.
func countUp(b *[10]byte) bool {
	for i := len(b) - 1; i >= 0; i-- {
		b[i]++
		if b[i] != 0 {
			return true
		}
	}
	return false
}

// crockford is Crockford's base32 alphabet in lower case: no i, l, o, u, so
// ids read back without confusion, and in ASCII order, so ids sort by time.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// NewID returns a unique job id: the kind, an underscore, then 26 characters
// holding the creation time in milliseconds (48 bits, so ids sort by age)
// and 80 random bits (so two jobs in the same millisecond never collide).
// Within a process the ids of one millisecond count up from the first one's
// random bits, as a monotonic ULID's do, so that they too sort by age: a
// batch's jobs, made in the same millisecond, listed in no order among
// themselves. A time up to a second before the last id's is taken as
// the last id's, so that ids sort in the order they were made (the time
// they hold is then that much later than now).
func NewID(kind string, now time.Time) string {
	var b [16]byte
	lastID.Lock()
	ms := stamp(uint64(now.UnixMilli()))
	binary.BigEndian.PutUint64(b[:8], ms<<16)
	switch {
	case ms == lastID.ms && countUp(&lastID.random):
		copy(b[6:], lastID.random[:])
	case ms >= lastID.ms:
		_, _ = rand.Read(lastID.random[:])
		lastID.ms = ms
		copy(b[6:], lastID.random[:])
	default: // a time before the last id's, given by the caller
		_, _ = rand.Read(b[6:])
	}
	lastID.Unlock()
	return kind + "_" + encodeID(b)
}

// encodeID writes the 128 bits of b as 26 characters of crockford.
func encodeID(b [16]byte) string {
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var s [26]byte
	for i := 25; i >= 0; i-- {
		s[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(s[:])
}

// IDKind returns the kind a job id names ("" when id is not of NewID's
// form).
func IDKind(id string) string {
	i := strings.LastIndexByte(id, '_')
	if i < 0 || len(id)-i-1 != 26 {
		return ""
	}
	return id[:i]
}

// IDTime returns the time of creation encoded in a job id, to the
// millisecond; ok is false when id is not of NewID's form.
func IDTime(id string) (t time.Time, ok bool) {
	i := strings.LastIndexByte(id, '_')
	if i < 0 || len(id)-i-1 != 26 {
		return time.Time{}, false
	}
	var hi, lo uint64
	for _, c := range []byte(id[i+1:]) {
		d := strings.IndexByte(crockford, c)
		if d < 0 {
			return time.Time{}, false
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(d)
	}
	return time.UnixMilli(int64(hi >> 16)), true
}
