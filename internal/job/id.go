package job

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

// crockford is Crockford's base32 alphabet in lower case: no i, l, o, u, so
// ids read back without confusion, and in ASCII order, so ids sort by time.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// NewID returns a unique job id: the kind, an underscore, then 26 characters
// holding the creation time in milliseconds (48 bits, so ids sort by age)
// and 80 random bits (so two jobs in the same millisecond never collide).
func NewID(kind string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var s [26]byte
	for i := 25; i >= 0; i-- {
		s[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return kind + "_" + string(s[:])
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
