package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// Damaged files are never served as truth. A server alone on its data
// directory records, in a file beside the store, each stream's last
// sequence and message count: every checkpointEvery, and at a clean stop.
// At start it compares the store with that record: a stream whose last
// sequence went back (a truncated or rolled-back file), which JetStream
// reports losing messages from (a checksum that did not match), or which,
// after a clean stop, holds fewer or more messages than it held then (of the
// streams only servers write), is damaged, and the server refuses to start
// unless told to go on with what is left. A server of a cluster mends its
// damaged copies from its peers instead (copies.go).
//
// JetStream trusts a stream's index file (index.db) at start and checks a
// message's checksum only when it reads it: bytes flipped in a record
// would be found by the first read, after the server had started and
// served the stream without it. So the index files of the buckets of small
// records (jobs, manifests, kinds, schedules, every bucket on disk) are
// removed before the embedded server starts: it rebuilds them from the
// message files, checking every record, and a damaged record shows as a
// stream that ends early. (A watch that reached a damaged record JetStream
// had not checked waited on it for good: a damaged schedules or kinds
// bucket stopped the server's start with "watch schedules: context
// canceled".) The object stores', the task queue's, the results' and the
// archive's indexes are kept (rebuilding them would read every byte of
// every dataset at each start): damage there is found by JetStream's own
// loss reports, by the last sequences, and as it is read.

// rebuiltStreams are the streams whose index is rebuilt at every start.
var rebuiltStreams = natsx.FileBuckets()

const (
	markFile        = "mrcluster-store.json"
	checkpointEvery = 10 * time.Second
)

type storeMark struct {
	// Clean is true when the server stopped cleanly after writing it.
	Clean   bool                  `json:"clean"`
	At      time.Time             `json:"at"`
	Streams map[string]streamMark `json:"streams"`
}

type streamMark struct {
	LastSeq uint64 `json:"last_seq"`
	Msgs    uint64 `json:"msgs"`
}

// countedStreams are the streams whose message count cannot change while
// the server is stopped: only servers write them, nothing expires in them
// (the jobs bucket's finished records expire once archived).
var countedStreams = map[string]bool{
	natsx.ArchiveStream: true, "KV_" + natsx.DatasetsBucket: true, "OBJ_" + natsx.BlocksBucket: true,
	"KV_" + natsx.KindsBucket: true, "KV_" + natsx.SchedulesBucket: true, "KV_" + natsx.KindStateBucket: true,
}

// named is a stream's name with what it holds (its description in the
// store's table of streams), for a person reading of its damage.
func named(stream string) string {
	if d := natsx.Describe(stream); d != "" {
		return stream + " (" + d + ")"
	}
	return stream
}

// ErrDamagedStore is returned by Start when the store does not hold what
// it held when the server last stopped.
var ErrDamagedStore = errors.New("the store is damaged")

// checksStore reports whether this server keeps a record of its store: an
// embedded server whose streams have one copy.
func (s *Server) checksStore() bool {
	return s.emb != nil && s.cfg.alone()
}

// alone reports whether the server's streams have one copy, on its own disk.
func (c Config) alone() bool { return c.Replicas <= 1 && c.ClusterName == "" }

func (s *Server) markPath() string { return filepath.Join(s.cfg.DataDir, markFile) }

// readMarks reads the store's streams' states now.
func (s *Server) readMarks(ctx context.Context) (map[string]streamMark, error) {
	states, err := s.store.States(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]streamMark{}
	for _, name := range natsx.FileStreams() {
		st := states[name]
		out[name] = streamMark{LastSeq: st.LastSeq, Msgs: st.Msgs}
		if st.LostMsgs > 0 {
			return out, fmt.Errorf("%w: stream %s lost %d messages (%d bytes) that failed their checksums", ErrDamagedStore, named(name), st.LostMsgs, st.LostBytes)
		}
	}
	return out, nil
}

// checkStoreIntegrity compares the store with its record; see above.
func (s *Server) checkStoreIntegrity(ctx context.Context) error {
	if !s.checksStore() {
		return nil
	}
	now, lostErr := s.readMarks(ctx)
	var problems []string
	if lostErr != nil {
		if !errors.Is(lostErr, ErrDamagedStore) {
			return lostErr
		}
		problems = append(problems, strings.TrimPrefix(lostErr.Error(), ErrDamagedStore.Error()+": "))
	}
	data, err := os.ReadFile(s.markPath())
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A new data directory, or one of a version before the record.
	case err != nil:
		return fmt.Errorf("read the store's record %s: %w", s.markPath(), err)
	default:
		var m storeMark
		if err := json.Unmarshal(data, &m); err != nil {
			problems = append(problems, fmt.Sprintf("the store's record %s, which says how far each stream had reached, is unreadable (%v), so the streams could not be checked against it (their own checksums were)", s.markPath(), err))
			break
		}
		names := make([]string, 0, len(m.Streams))
		for n := range m.Streams {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			was, is := m.Streams[name], now[name]
			switch {
			case is.LastSeq < was.LastSeq:
				problems = append(problems, fmt.Sprintf("stream %s ends at message %d, but had reached %d at %s: its files were damaged, truncated or rolled back", named(name), is.LastSeq, was.LastSeq, m.At.Format(time.RFC3339)))
			case m.Clean && countedStreams[name] && is.Msgs != was.Msgs:
				problems = append(problems, fmt.Sprintf("stream %s holds %d messages, but held %d when the server stopped cleanly at %s: its files were damaged", named(name), is.Msgs, was.Msgs, m.At.Format(time.RFC3339)))
			}
		}
	}
	if err := s.damaged(problems); err != nil {
		return err
	}
	return s.writeMark(now, false)
}

// damaged refuses a start with the problems found, or logs them when the
// server is told to go on.
func (s *Server) damaged(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	s.damageSeen = true
	what := strings.Join(problems, "; ")
	if !s.cfg.AcceptDamagedState {
		return fmt.Errorf("%w in %s: %s. Restore the data directory from a backup (a server of a cluster: remove its data directory and let it copy from its peers), or start with --%s to go on with what is left, losing what is listed", ErrDamagedStore, s.cfg.DataDir, what, flags.AcceptDamagedState)
	}
	s.log.Error("the store is damaged; going on with what is left, as --"+flags.AcceptDamagedState+" says: what the streams listed here held past their damage is lost", "data_dir", s.cfg.DataDir, "damage", what)
	return nil
}

// checkReadAtStart looks again for damaged records, once the read model
// has read every job record: JetStream checks its checksums only where it
// recovers a file at its start, and the archive of finished jobs carries
// sums of its own, checked as it is read (store.Jobs.Damaged).
func (s *Server) checkReadAtStart(ctx context.Context) error {
	if s.damageSeen {
		return nil
	}
	if !s.checksStore() {
		return nil // in a cluster, others remove records while this one reads
	}
	if n, jobs := s.store.Ports.Jobs.Damaged(); n > 0 {
		among := ""
		if len(jobs) > 0 {
			among = " (among them jobs " + strings.Join(jobs, ", ") + ")"
		}
		return s.damaged([]string{fmt.Sprintf("stream %s holds %d damaged records of finished jobs (their bytes fail their checksums)%s", named(natsx.ArchiveStream), n, among)})
	}
	_, err := s.readMarks(ctx)
	if !errors.Is(err, ErrDamagedStore) {
		return err
	}
	return s.damaged([]string{strings.TrimPrefix(err.Error(), ErrDamagedStore.Error()+": ")})
}

// writeMark records the streams' states, atomically.
func (s *Server) writeMark(streams map[string]streamMark, clean bool) error {
	data, err := json.Marshal(storeMark{Clean: clean, At: time.Now().UTC(), Streams: streams})
	if err != nil {
		return err
	}
	tmp := s.markPath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write the store's record: %w", err)
	}
	if err := os.Rename(tmp, s.markPath()); err != nil {
		return fmt.Errorf("write the store's record: %w", err)
	}
	return nil
}

// checkpoint records the streams' states. A clean stop records them as
// they are (the NATS server flushes everything as it stops); a running
// server records what it read one checkpoint earlier, which is on disk by
// then whatever the NATS server's flush settings, so that a process killed
// mid-write is never taken for a damaged store.
func (s *Server) checkpoint(ctx context.Context, clean bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	marks, err := s.readMarks(ctx)
	if err != nil {
		s.log.Debug("could not read the store's state for its record", "err", err)
		return
	}
	rec := marks
	if !clean {
		rec, s.pendingMarks = s.pendingMarks, marks
	}
	if rec == nil {
		return
	}
	if err := s.writeMark(rec, clean); err != nil {
		s.log.Warn("could not record the store's state; a damaged store may go unnoticed at the next start", "err", err)
	}
}
