package natsx

import (
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/logtest"
)

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
	log := &logtest.Levels{}
	l := natsLog{log: slog.New(log), noSpaceAt: new(atomic.Int64)}
	l.Warnf("Consumer '%s > %s > %s' error on write store state from purge: %v", "$G", "MR_TASKS", "workers", errors.New("bad pending entry, sequence [1265] out of range"))
	l.Warnf("Consumer '%s > %s > %s' error on write store state from purge: %v", "$G", "MR_TASKS", "workers", errors.New("old update ignored"))
	l.Warnf("Consumer '%s > %s > %s' error on write store state from purge: %v", "$G", "MR_TASKS", "workers", errors.New("no space left on device"))
	l.Warnf("JetStream cluster consumer '%s > %s > %s' has NO quorum, stalled", "$G", "MR_TASKS", "workers")
	// After a SIGKILL, every bucket with message TTLs says this at start
	// (seen in a server's log after each kill): information, not a warning.
	l.Warnf("Filestore [%s] TTL state is outdated; attempting to recover using linear scan (seq %d to %d)", "KV_mr_jobs", 1, 556)
	// At every clean stop and start of a server of a cluster.
	l.Warnf("Metalayer blocking snapshot starting")
	l.Warnf("Metalayer blocking snapshot took %.3fs (streams: %d, consumers: %d, compacted: %s)", 0.004, 16, 17, "5.38 KB")
	l.Warnf("Failed to install snapshot for '%s > %s > %s' [%s]: %v", "$G", "MR_TASKS", "workers", "C-R3F-Bo4Fqcyd", errors.New("store is closed"))
	l.Warnf("Waiting for routing to be established...")
	if d := log.At(slog.LevelDebug, ""); len(d) != 6 {
		t.Errorf("debug lines: %q, want the purge's two and the stop's and start's four", d)
	}
	if i := log.At(slog.LevelInfo, "TTL state is outdated"); len(i) != 1 {
		t.Errorf("info lines of the TTL state's rebuild: %q, want one", i)
	}
	if d := log.At(slog.LevelDebug, "from purge"); len(d) != 2 {
		t.Errorf("debug lines of the purge's state: %q, want the bad pending entry's and the old update's", d)
	}
	if w := log.At(slog.LevelWarn, ""); len(w) != 2 || !strings.Contains(w[0], "no space") {
		t.Errorf("warnings: %q, want the full disk's and the quorum's", w)
	}
}

// nats-server reports each failed attempt to reach another server of the
// cluster, once a second per pooled route, at error level: a server
// stopped for a restart made every other one log four errors a second. It
// is a warning, said once a minute per failure for as long as it lasts.
func TestUnreachablePeerIsAWarningOnceAMinute(t *testing.T) {
	log := &logtest.Levels{}
	l := natsLog{log: slog.New(log), noSpaceAt: new(atomic.Int64), peers: new(unreachable)}
	refused := errors.New("dial tcp 127.0.0.1:16221: connect: connection refused")
	for attempt := 1; attempt <= 10; attempt++ {
		for range 4 { // the pooled routes
			l.Errorf("Error trying to connect to route (attempt %v): %v", attempt, refused)
		}
	}
	l.Errorf("Error trying to connect to route (attempt %v): %v", 1, errors.New("dial tcp 127.0.0.1:16222: i/o timeout"))
	l.Errorf("Error processing raft append entries")
	if e := log.At(slog.LevelError, ""); len(e) != 1 || !strings.Contains(e[0], "raft") {
		t.Errorf("errors: %q, want only the one that is not a route's", e)
	}
	w := log.At(slog.LevelWarn, "cannot reach another server")
	if len(w) != 2 {
		t.Fatalf("warnings: %q, want one per unreachable address", w)
	}
	if d := log.At(slog.LevelDebug, "Error trying to connect to route"); len(d) != 39 {
		t.Errorf("%d attempts at debug, want the 39 not reported", len(d))
	}
	// A minute later the same failure is said again; and a server gone
	// again (a connection's first attempt) after 5 s.
	back := func(d time.Duration) {
		l.peers.mu.Lock()
		for k := range l.peers.last {
			l.peers.last[k] = l.peers.last[k].Add(-d)
		}
		l.peers.mu.Unlock()
	}
	back(peerReportEvery)
	l.Errorf("Error trying to connect to route (attempt %v): %v", 61, refused)
	if w := log.At(slog.LevelWarn, "cannot reach another server"); len(w) != 3 {
		t.Errorf("warnings after a minute: %d, want 3", len(w))
	}
	back(peerReportAgain)
	l.Errorf("Error trying to connect to route (attempt %v): %v", 62, refused)
	l.Errorf("Error trying to connect to route (attempt %v): %v", 1, refused)
	l.Errorf("Error trying to connect to route (attempt %v): %v", 1, refused)
	if w := log.At(slog.LevelWarn, "cannot reach another server"); len(w) != 4 {
		t.Errorf("warnings after the server went again: %d, want 4", len(w))
	}
}
