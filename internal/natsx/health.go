package natsx

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// IsOutOfSpace reports whether err says the store's disk is full, or that
// JetStream ran out of the storage it may use.
func IsOutOfSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "no space left") || strings.Contains(s, "insufficient storage") ||
		strings.Contains(s, "storage resources exceeded") || strings.Contains(s, "out of storage")
}

// NoSpaceSince reports whether the embedded server said, after t, that a
// write failed for want of disk space.
func (e *Embedded) NoSpaceSince(t time.Time) bool {
	at := e.noSpaceAt.Load()
	return at != 0 && time.Unix(0, at).After(t)
}

// FreeBytes returns the space left to an unprivileged writer on the disk
// holding dir.
func FreeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("read the free space of %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// natsLog hands the embedded NATS server's own warnings and errors to the
// server's log; its notices go to debug (they are chatty at start), its
// traces nowhere.
type natsLog struct {
	log       *slog.Logger
	noSpaceAt *atomic.Int64
	peers     *unreachable
}

// unreachable spaces out the embedded server's reports of another server
// of the cluster it cannot reach. nats-server reports every failed attempt
// of each of its pooled route connections, once a second, at error level,
// for as long as the other server is down: four error lines a second per
// server stopped, on each server that runs (seen while one of three was
// restarted). A person running the cluster needs to know that a server is
// unreachable, not once a second, and not as an error of this server's.
type unreachable struct {
	mu   sync.Mutex
	last map[string]time.Time // by nats-server's error (it names the address)
}

// peerReportEvery is how often a server that stays unreachable is
// reported; a first failed attempt (the server just went) is reported
// unless the same failure was within peerReportAgain (the other pooled
// routes' first attempts).
const (
	peerReportEvery = time.Minute
	peerReportAgain = 5 * time.Second
)

// due reports whether the failure why, of a connection's first attempt or
// a later one, is to be logged at now, and notes it.
func (u *unreachable) due(why string, first bool, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	quiet := peerReportEvery
	if first {
		quiet = peerReportAgain
	}
	if at, ok := u.last[why]; ok && now.Sub(at) < quiet {
		return false
	}
	if u.last == nil || len(u.last) >= 64 {
		u.last = map[string]time.Time{}
	}
	u.last[why] = now
	return true
}

var _ server.Logger = natsLog{}

func (l natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLog) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if _, why, ok := strings.Cut(msg, "error on write store state from purge: "); ok &&
		(strings.HasPrefix(why, "bad pending entry") || strings.HasPrefix(why, "old update ignored")) {
		// A work-queue consumer whose state nats-server did not write
		// after a purge of one subject (a job's tasks dropped at a cancel,
		// a kind's at a pause) while it had others' out, or whose newer
		// state was written first: it is written again at the next
		// acknowledgement, and the stream is the state.
		l.log.Debug(msg)
		return
	}
	if strings.Contains(msg, "TTL state is outdated; attempting to recover using linear scan") {
		// The state of per-message TTLs written at a clean stop; after a
		// crash (SIGKILL, power) nats-server rebuilds it from the stream,
		// which is the state. Nothing for the operator to do.
		l.log.Info(msg + " (expected after the process was killed)")
		return
	}
	if stopStartNoise(msg) {
		l.log.Debug(msg)
		return
	}
	l.log.Warn(msg)
}

// stopStartNoise tells the warnings nats-server logs at every clean stop
// and start of a server of a cluster: its meta snapshot's start and
// length, the snapshots its consumers cannot install once their store
// has closed, and its wait for routes. Six to eight of them at each
// restart (a rolling restart by hand, 2026-12-04) spoke of nothing to act
// on.
func stopStartNoise(msg string) bool {
	return strings.HasPrefix(msg, "Metalayer blocking snapshot") ||
		(strings.HasPrefix(msg, "Failed to install snapshot for ") && strings.HasSuffix(msg, "store is closed")) ||
		msg == "Waiting for routing to be established..."
}

func (l natsLog) Fatalf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if IsOutOfSpace(errors.New(msg)) {
		l.noSpaceAt.Store(time.Now().UnixNano())
	}
	if rest, ok := strings.CutPrefix(msg, routeConnectError); ok {
		attempt, why, _ := strings.Cut(rest, "): ")
		if l.peers.due(why, attempt == "1", time.Now()) {
			l.log.Warn("cannot reach another server of the cluster; retrying every second. Expected while it stops or restarts; if it stays so, start it or check the network and its --cluster-listen",
				"err", why, "attempt", attempt)
		} else {
			l.log.Debug(msg)
		}
		return
	}
	l.log.Error(msg)
}

// routeConnectError begins nats-server's report of a failed connection to
// another server of the cluster ("… (attempt 3): dial tcp …").
const routeConnectError = "Error trying to connect to route (attempt "

func (l natsLog) Debugf(format string, v ...any) {}
func (l natsLog) Tracef(format string, v ...any) {}

// DropIndexes removes the index files of streams in the JetStream store of
// dataDir, so that the server, when it starts, rebuilds them from the
// message files and checks every record's checksum.
func DropIndexes(dataDir string, streams []string) error {
	for _, name := range streams {
		files, err := filepath.Glob(filepath.Join(dataDir, "jetstream", server.JetStreamStoreDir, "*", "streams", name, "msgs", "index.db"))
		if err != nil {
			return err
		}
		for _, f := range files {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", f, err)
			}
		}
	}
	return nil
}

// JetStreamEnabled reports whether the embedded server's JetStream runs.
func (e *Embedded) JetStreamEnabled() bool { return e.srv.Load().JetStreamEnabled() }
