package natsx

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// levels is a slog handler that keeps what was logged at each level.
type levels struct {
	mu   sync.Mutex
	seen map[slog.Level][]string
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[r.Level] = append(l.seen[r.Level], r.Message)
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

func (l *levels) at(level slog.Level, part string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.seen[level] {
		if strings.Contains(m, part) {
			out = append(out, m)
		}
	}
	return out
}

// nats-server fails to write a work-queue consumer's state after some
// purges of one subject while the consumer has messages out ("error on
// write store state from purge: bad pending entry"; seen when jobs were
// canceled and kinds paused under load, 159 lines in a few minutes), or
// ignores it as older than one written ("old update ignored": 32 lines in
// another run). It writes the state again at the next acknowledgement, and
// in a work queue
// the stream is the state: nothing for an operator to act on, so it goes
// to debug; other warnings stay warnings.
func TestPurgeStateWarningIsDebug(t *testing.T) {
	log := &levels{seen: map[slog.Level][]string{}}
	l := natsLog{log: slog.New(log), noSpaceAt: new(atomic.Int64)}
	l.Warnf("Consumer '%s > %s > %s' error on write store state from purge: %v", "$G", "MR_TASKS", "workers", errors.New("bad pending entry, sequence [1265] out of range"))
	l.Warnf("Consumer '%s > %s > %s' error on write store state from purge: %v", "$G", "MR_TASKS", "workers", errors.New("old update ignored"))
	l.Warnf("Consumer '%s > %s > %s' error on write store state from purge: %v", "$G", "MR_TASKS", "workers", errors.New("no space left on device"))
	l.Warnf("JetStream cluster consumer '%s > %s > %s' has NO quorum, stalled", "$G", "MR_TASKS", "workers")
	if d := log.at(slog.LevelDebug, "from purge"); len(d) != 2 {
		t.Errorf("debug lines of the purge's state: %q, want the bad pending entry's and the old update's", d)
	}
	if w := log.at(slog.LevelWarn, ""); len(w) != 2 || !strings.Contains(w[0], "no space") {
		t.Errorf("warnings: %q, want the full disk's and the quorum's", w)
	}
}
