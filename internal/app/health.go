package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Store health: a server watches that its store takes writes. A full disk
// under --data-dir (filled by anything, not only by JetStream) makes
// submits and uploads answer 503 at once with that reason, and /readyz too;
// once space is back, the embedded JetStream is restarted (a stream whose
// write failed keeps refusing writes until its files are opened anew) and
// the server serves again, with no restart of the process.

const (
	// healthEvery is how often the store is probed with a write while it
	// takes them; healthRetry while it refuses them for a reason other
	// than a full disk (a cluster electing a leader, a server catching up):
	// submits are refused until a probe succeeds, so a refusal outlasts
	// its cause by up to one of these. (A full disk is probed at
	// healthEvery: each refused write is an error in the NATS server's log.)
	healthEvery = 2 * time.Second
	healthRetry = 250 * time.Millisecond
	// minFreeBytes is the free space under which the store counts as full:
	// a new block of a stream is several MiB.
	minFreeBytes = 16 << 20
)

type storeHealth struct {
	mu     sync.Mutex
	reason string // empty while the store takes writes
	// since is when the last spell of refusals began, last when it was
	// last seen (zero: none yet).
	since, last time.Time
}

func (h *storeHealth) set(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if reason != "" {
		now := time.Now()
		if h.reason == "" {
			h.since = now
		}
		h.last = now
	}
	h.reason = reason
}

// trouble returns when the store's last spell of refusals began and when
// it was last seen refusing (zero times: never since the start).
func (h *storeHealth) trouble() (since, last time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since, h.last
}

// Err says why the store cannot take writes now, or nil.
func (h *storeHealth) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reason == "" {
		return nil
	}
	return fmt.Errorf("%s", h.reason)
}

// watchStore probes the store every healthEvery (healthRetry while it
// refuses writes) until ctx ends.
func (s *Server) watchStore(ctx context.Context) {
	// Only what fails after the watch starts counts.
	restarted, full := time.Now(), time.Time{}
	t := time.NewTimer(healthEvery)
	defer t.Stop()
	lastMark := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.checksStore() && time.Since(lastMark) >= checkpointEvery {
			lastMark = time.Now()
			s.checkpoint(ctx, false)
		}
		if s.emb != nil {
			if limit, err := s.emb.RaiseStoreLimit(); err != nil {
				s.log.Debug("could not raise the limit of what the store holds to the disk's free space", "err", err)
			} else if limit > 0 {
				s.log.Info("space was freed on the disk of the data directory; the store may now hold more", "data_dir", s.cfg.DataDir, "limit_mib", limit>>20)
			}
		}
		reason, noSpace, atLimit := s.checkStoreLimit(ctx)
		if noSpace && !atLimit {
			full = time.Now()
		}
		// After a write failed for want of space anywhere (the probe's
		// bucket may be fine while a stream refuses), once space is back:
		// streams that failed a write refuse every later one until reopened.
		if s.emb != nil && !noSpace && (full.After(restarted) || s.emb.NoSpaceSince(restarted)) {
			if s.cfg.ClusterName != "" && s.emb.JetStreamEnabled() {
				// In a cluster, the NATS server stops its own JetStream when
				// its disk fills (the others keep the data); one that did not
				// stop is left as it is.
				restarted = time.Now()
			} else if free, err := natsx.FreeBytes(s.cfg.DataDir); err == nil && free >= minFreeBytes {
				// A server alone, or one of a cluster whose JetStream the
				// NATS server stopped: left stopped, a cluster ran on two
				// servers until an operator came, and one more fault took
				// it down (a chaos run: a server killed then, restarted, found
				// no meta leader for 80 s). The embedded server restarts as a
				// whole (starting only JetStream in-process races inside
				// nats-server, and was seen to leave tasks undelivered), as a
				// process restart would.
				s.log.Warn("disk space is back under the data directory; restarting the embedded NATS server so that its streams take writes again",
					"data_dir", s.cfg.DataDir, "free_mib", free>>20)
				restarted = time.Now()
				if err := s.emb.Restart(); errors.Is(err, natsx.ErrStuck) {
					s.log.Error("the embedded NATS server did not stop to reopen its store after the disk filled; this process cannot go on with it", "err", err, "stacks", s.dumpStacks())
					s.broken <- err
					return
				} else if err != nil {
					s.log.Error("could not restart the embedded NATS server; restart mrcluster", "err", err)
				}
				reason, _ = s.checkStore(ctx)
			}
		}
		s.health.set(reason)
		s.logHealth(ctx, reason, noSpace)
		t.Reset(probeAfter(reason, noSpace))
	}
}

// dumpStacks writes every goroutine's stack into a file of the data
// directory, for a report of what held the embedded NATS server, and
// returns its path (or why it could not).
func (s *Server) dumpStacks() string {
	path := filepath.Join(s.cfg.DataDir, fmt.Sprintf("stuck-nats-%s.txt", time.Now().UTC().Format("20060102T150405Z")))
	f, err := os.Create(path)
	if err != nil {
		return fmt.Sprintf("not written: %v", err)
	}
	defer f.Close()
	if err := pprof.Lookup("goroutine").WriteTo(f, 2); err != nil {
		return fmt.Sprintf("not written: %v", err)
	}
	return path
}

// probeAfter is the wait before the next probe of a store that a probe
// found as reason and noSpace say.
func probeAfter(reason string, noSpace bool) time.Duration {
	if reason == "" || noSpace {
		return healthEvery
	}
	return healthRetry
}

// logHealth logs what a probe of the store found, as s.alarm says.
func (s *Server) logHealth(ctx context.Context, reason string, noSpace bool) {
	if level, msg, ok := s.alarm.note(time.Now(), reason, noSpace); ok {
		if reason == "" {
			s.log.Log(ctx, level, msg)
			return
		}
		s.log.Log(ctx, level, msg, "reason", reason)
	}
}

// alarmAfter is how long the store may refuse writes for a reason other
// than a full disk before it is an error.
const alarmAfter = 30 * time.Second

// writeAlarm says how a change of the store's health is logged. A full
// disk is an error at once: the operator must free space. Any other
// refusal is first a warning: a cluster electing a stream's leader, or a
// server of one that was paused and catches up, refuses writes for a few
// seconds, and takes them again by itself. It is an error once it has
// lasted alarmAfter.
type writeAlarm struct {
	since     time.Time // when the store stopped taking writes; zero while it takes them
	escalated bool
}

// note returns what to log for a probe at now that found reason (""
// when the store takes writes); ok false when nothing is.
func (a *writeAlarm) note(now time.Time, reason string, noSpace bool) (level slog.Level, msg string, ok bool) {
	const refused = "the store cannot take writes: submits and uploads answer 503 until it can"
	switch {
	case reason == "":
		if a.since.IsZero() {
			return 0, "", false
		}
		msg = fmt.Sprintf("the store takes writes again, after %s", now.Sub(a.since).Round(time.Second))
		a.since, a.escalated = time.Time{}, false
		return slog.LevelInfo, msg, true
	case a.since.IsZero():
		a.since = now
		if noSpace {
			a.escalated = true
			return slog.LevelError, refused, true
		}
		return slog.LevelWarn, refused + " (a cluster electing a leader, or a server catching up after a pause, takes writes again within seconds)", true
	case noSpace && !a.escalated, !a.escalated && now.Sub(a.since) >= alarmAfter:
		a.escalated = true
		return slog.LevelError, fmt.Sprintf("the store has not taken writes for %s: submits and uploads answer 503 until it does; look at the reason and at the NATS server's log", now.Sub(a.since).Round(time.Second)), true
	}
	// A new reason within the same spell is not logged again: /readyz
	// shows it. (A full disk's reason names the free KiB, which changes at
	// nearly every probe.)
	return 0, "", false
}

// checkStore returns why the store cannot take a write now ("" when it
// can), and whether that is for want of disk space (or of room within the
// streams' limit: atLimit).
func (s *Server) checkStore(ctx context.Context) (reason string, noSpace bool) {
	reason, noSpace, _ = s.checkStoreLimit(ctx)
	return reason, noSpace
}

func (s *Server) checkStoreLimit(ctx context.Context) (reason string, noSpace, atLimit bool) {
	// The write goes first, even on a disk seen full: its error, if any, is
	// the store's own word (and the NATS server logs it).
	ctx, cancel := context.WithTimeout(ctx, healthEvery)
	defer cancel()
	var room *int64 // for worker processes, which cannot see this disk
	if s.emb != nil {
		if r, err := s.emb.Room(); err == nil {
			room = &r
		}
	}
	perr := s.store.Probe(ctx, s.probeKey, room)
	if s.emb != nil {
		if free, err := natsx.FreeBytes(s.cfg.DataDir); err == nil && free < minFreeBytes {
			return fmt.Sprintf("the disk of the data directory %s is full (%d KiB free): free some space; the server recovers by itself within seconds", s.cfg.DataDir, free>>10), true, false
		}
	}
	switch {
	case perr == nil:
		return "", false, false
	case natsx.IsOverLimit(perr):
		// The streams hold all the disk lets them (natsx's storeLimit):
		// the disk keeps a reserve, so deletions still work. Not a full
		// disk, after which the embedded server restarts once space is
		// back; the limit is raised as space is freed (watchStore).
		return fmt.Sprintf("the store holds all that the disk of the data directory %s has room for (%v): delete datasets or finished jobs (mrcluster delete), or free space on that disk; writes are taken again within seconds", s.cfg.DataDir, perr), true, true
	case natsx.IsOutOfSpace(perr):
		return fmt.Sprintf("the store is out of disk space (%v): free space under the data directory; the server recovers by itself within seconds", perr), true, false
	}
	return fmt.Sprintf("the store does not take writes: %v", perr), false, false
}

// anchorEvery is how often the task queue's anchor is stored again
// (natsx.Store.AnchorTasks), and the ones before it purged. Under load the
// task publishes carry it (natsx's Publish), so that it lands in each new
// block at once: stored every second alone, it left a window after each
// new block in which the store made a new block file whenever the workers
// emptied the queue (588 files for 30,000 one-task jobs at 2,500 a second,
// with as many 256 KB buffers, up to 150 MB of heap at once, and submit
// latency spikes past 100 ms; with the publishes carrying it, 14).
const anchorEvery = time.Second

// anchorTasks keeps the task queue's anchor in its last block until ctx
// ends. A failure is the health probe's to report.
func (s *Server) anchorTasks(ctx context.Context) {
	t := time.NewTicker(anchorEvery)
	defer t.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, anchorEvery)
		if err := s.store.AnchorTasks(actx); err != nil && ctx.Err() == nil {
			s.log.Debug("could not store the task queue's anchor", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reconcileEvery is how often a server looks whether its queue is
// stuck, by default: tasks waiting, no worker busy, the depth unchanged
// since the look before.
const reconcileEvery = 30 * time.Second

// reconcileMax bounds the queue a look reads (one request per task).
const reconcileMax = 10000

// reconcileLease names the lease a server of a cluster holds while it
// reads the queue against the jobs, in the health bucket: one server at a
// time. Every server looks (see reconcileLoop), and two that queued the
// same lost task at once made it run twice, with nothing in its history
// to say why (a chaos run, 2026-12-04: a job whose tasks a full disk had
// lost for 3 minutes, queued again by two servers 0.3 s apart).
const reconcileLease = "lease.reconcile"

// leaseFor is how long a lease holds: past a look's 2 minutes, so that a
// holder that died mid-look leaves it to the others after that.
const leaseFor = 3 * time.Minute

// takeLease takes the lease key of bucket kv for holder at now, unless
// another holds it unexpired (or the store does not answer), and returns
// what gives it back: a deletion at the revision it wrote, which leaves a
// lease another has taken over since.
func takeLease(ctx context.Context, kv store.KV, key, holder string, now time.Time) (release func(), ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	value := []byte(now.Add(leaseFor).UTC().Format(time.RFC3339Nano) + " " + holder)
	rev, err := kv.Create(ctx, key, value)
	if errors.Is(err, store.ErrConflict) {
		e, gerr := kv.Get(ctx, key)
		if gerr != nil {
			return nil, false
		}
		until, _, _ := strings.Cut(string(e.Value), " ")
		if t, perr := time.Parse(time.RFC3339Nano, until); perr == nil && now.Before(t) {
			return nil, false
		}
		rev, err = kv.Update(ctx, key, value, e.Revision)
	}
	if err != nil {
		return nil, false
	}
	return func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = kv.Delete(dctx, key, rev)
	}, true
}

// reconcileLoop queues again the tasks the task queue lost. JetStream
// finds a damaged part of the queue's files only when a consumer reaches
// it, and then drops the messages of that part (a block's rest); nothing
// else would queue them again, and their jobs waited for ever with every
// worker idle (seen: 13 of 40 tasks). A stuck queue is the sign: tasks
// waiting, no worker busy, the same depth two looks apart. Then the queue
// is read against the unfinished jobs (Coordinator.Reconcile). A look that
// queues nothing (a paused or rate-limited kind, no worker at all) makes
// the next wait twice as long, up to an hour. Every server of a cluster
// looks too: a partition test once left a job's two tasks neither queued,
// running nor done for minutes after the last heal, and a server alone
// looks only at its own damage. One server looks at a time (reconcileLease):
// two that queued the same lost task each made it run; it counted once.
func (s *Server) reconcileLoop(ctx context.Context) {
	every := s.cfg.ReconcileEvery
	if every <= 0 {
		every = reconcileEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last, skip, wait := -1, 0, 1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		depth := s.view.QueueDepth()
		idle := !slices.ContainsFunc(s.view.Running(), func(w job.WorkerStatus) bool { return w.Busy })
		stuck := depth > 0 && idle && depth == last
		if !idle || depth == 0 {
			wait, skip = 1, 0 // moving again: look at the usual pace
		}
		last = depth
		if !stuck {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		if depth > reconcileMax {
			s.log.Debug("the task queue looks stuck, but is too long to read against the jobs", "depth", depth)
			continue
		}
		release, ok := takeLease(ctx, s.store.Ports.Health, reconcileLease, s.cfg.ServerName, time.Now())
		if !ok {
			s.log.Debug("the task queue looks stuck; another server of the cluster is reading it against the jobs")
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		n, err := s.coord.Reconcile(rctx, s.view.Undone())
		cancel()
		release()
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("could not check the task queue against the unfinished jobs; a task in a damaged part of its files would not run", "err", err)
		case n == 0:
			wait = min(2*wait, 120)
		default:
			wait = 1
		}
		skip, last = wait-1, -1
	}
}
