package natsx

import (
	"errors"
	"fmt"
	"io/fs"
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

// IsOverLimit reports whether err says the embedded server's streams
// hold all they may (storeLimit), a refusal that deleting data mends.
func IsOverLimit(err error) bool {
	return err != nil && strings.Contains(err.Error(), "insufficient resources")
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

// The embedded server's limit on what its streams hold follows the disk.
// Left unset, nats-server allows three quarters of the space free when it
// starts, for good: a server started on a nearly full disk refused every
// write ("insufficient resources") after space was freed, until a restart
// (by hand, 2026-12-04: 70 of 100 MB taken by another file at the start,
// the file removed, uploads refused with 78 MB free). Without a limit, the
// streams would fill the disk to its last byte, and deleting a dataset or
// a job, which writes markers, would then fail too (seen: every delete
// timed out on a disk the streams had filled). So the limit is what the
// streams hold plus the space free, less a reserve (storeReserve), set at
// each start and raised (RaiseStoreLimit) as space is freed; it is never
// lowered while the server runs (nats-server refuses that), which another
// file filling the disk does not need: that is a full disk, which the
// server recovers from (app's Store health).

// storeReserve is the disk space the streams leave free on a disk of
// total bytes: a fiftieth of it, at least 32 MiB and at most 1 GiB. It
// depends on the disk alone, so that a limit reached by the streams'
// own writes is not raised again (a share of what is free would be,
// every time, until the disk was full).
func storeReserve(total int64) int64 { return min(max(total/50, 32<<20), 1<<30) }

// storeLimit returns the limit of the streams of a store on the disk of
// dir, which already hold used bytes.
func storeLimit(dir string, used int64) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("read the free space of %s: %w", dir, err)
	}
	free, total := int64(st.Bavail)*int64(st.Bsize), int64(st.Blocks)*int64(st.Bsize)
	// Never under what is held (the server must start with it) nor 1 MiB.
	return max(used+free-storeReserve(total), used, 1<<20), nil
}

// dirSize returns the bytes of the files under dir (none when dir does
// not exist yet).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// raiseStoreMargin is how much more room than its limit the streams must
// be able to have before the limit is raised: a reload of the embedded
// server's configuration for every freed MiB would be noise.
const raiseStoreMargin = 16 << 20

// RaiseStoreLimit raises the limit of the embedded server's streams when
// they are near it (within a tenth of it, or 64 MiB) and the disk has room
// for more than it allows (space freed since its start); see storeLimit.
// It returns the limit raised to, 0 when unchanged. (Far from the limit,
// nothing is reloaded: a reload re-applies the server's accounts.)
func (e *Embedded) RaiseStoreLimit() (int64, error) {
	srv := e.srv.Load()
	info, err := srv.Jsz(nil)
	if err != nil {
		return 0, err
	}
	used, current := int64(info.Store), e.storeMax.Load()
	if used < current-max(4*raiseStoreMargin, current/10) {
		return 0, nil // far from the limit: nothing to reload for
	}
	limit, err := storeLimit(filepath.Dir(e.opts.StoreDir), used)
	if err != nil || limit < current+raiseStoreMargin {
		return 0, err
	}
	// The running server holds e.opts, which is not written again while
	// it runs: it reloads a copy.
	opts := e.opts.Clone()
	opts.JetStreamMaxStore = limit
	if err := srv.ReloadOptions(opts); err != nil {
		return 0, fmt.Errorf("raise the store's limit to %d bytes: %w", limit, err)
	}
	e.storeMax.Store(limit)
	return limit, nil
}

// Room returns the bytes the embedded server's streams can still take:
// what their limit leaves, or what the disk has beyond the reserve, if
// less. The disk can have less than the limit leaves: JetStream counts a
// deleted message out of what its streams hold at once, but keeps its
// bytes in the stream's files until it compacts them (the chunks of an
// object whose put was refused half-way, beside others' live messages).
func (e *Embedded) Room() (int64, error) {
	srv := e.srv.Load()
	if srv == nil {
		return 0, errors.New("the embedded NATS server is not running")
	}
	info, err := srv.Jsz(nil)
	if err != nil {
		return 0, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(e.opts.StoreDir), &st); err != nil {
		return 0, fmt.Errorf("read the free space of %s: %w", filepath.Dir(e.opts.StoreDir), err)
	}
	free, total := int64(st.Bavail)*int64(st.Bsize), int64(st.Blocks)*int64(st.Bsize)
	room := free - storeReserve(total)
	if limit := e.storeMax.Load(); limit > 0 {
		room = min(room, limit-int64(info.Store))
	}
	return room, nil
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
