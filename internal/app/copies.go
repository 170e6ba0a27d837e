package app

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/mrcluster/mrcluster/internal/natsx"
)

// A server of a cluster mends its damaged copies of the streams of small
// records. Bytes flipped in one server's copy of the job archive were
// served as missing: once that server led the stream (a leader is read
// from), 18 of 1,029 finished jobs answered 404 on every server, while the
// other two copies held them (2026-12-04, by hand). JetStream trusts a
// stream's index file at start and checks a record's checksum only as it
// reads it, and nothing copies a damaged record again from the other
// servers.
//
// So a server of a cluster removes the index files of these streams (its
// buckets on disk and the archive) before its embedded server starts, as a
// server alone does for its buckets: JetStream rebuilds them from the message files and cuts a file
// at its first record that fails its checksum. A cut in a stream's last
// file is mended by JetStream itself, which copies what the copy lacks at
// its end from the leader. A cut in an earlier file leaves a hole: the copy
// holds fewer messages than the leader's, beyond those it has yet to copy.
// Once caught up, the server compares each of its copies with the
// leader's; a copy with a hole, in three looks, is set aside (moved, not
// deleted, into the data directory's damaged-TIME) and the embedded
// server restarted without it: JetStream copies the whole stream again
// from the others. Only while another server leads the stream and every
// other copy is current: a server whose copy is the best left keeps it,
// and says so. The jobs bucket is rebuilt but not compared: each copy
// expires its finished records by itself (per-message TTLs), so a copy
// may hold fewer of them than the leader's for a moment with nothing
// damaged. Damage in the other streams (the task queue, results, objects)
// is found as they are read, as on a server alone.
var clusterChecked = append(slices.Clone(rebuiltStreams), natsx.ArchiveStream)

// compared are the streams of clusterChecked whose copies are compared
// with their leader's.
var compared = []string{"KV_" + natsx.DatasetsBucket, natsx.ArchiveStream}

// mendCopies sets aside this server's copies of compared streams that miss
// messages the stream's leader holds, and copies them again; see above.
func (s *Server) mendCopies(ctx context.Context) error {
	short := s.shortCopies(ctx)
	if len(short) == 0 {
		return nil
	}
	names := make([]string, 0, len(short))
	for n := range short {
		names = append(names, n)
	}
	sort.Strings(names)
	var mend []string
	for _, name := range names {
		if why := s.othersCurrent(ctx, name); why != "" {
			s.log.Error("this server's copy of a stream misses messages that the cluster holds (its files were damaged: records failed their checksums), and cannot be copied again now; restart this server once the other servers are up and current",
				"stream", name, "missing", short[name], "why", why)
			continue
		}
		mend = append(mend, name)
	}
	if len(mend) == 0 {
		return nil
	}
	dir := filepath.Join(s.cfg.DataDir, "damaged-"+time.Now().UTC().Format("20060102T150405"))
	for _, name := range mend {
		s.log.Warn("this server's copy of a stream misses messages that the other servers hold: its files were damaged (records failed their checksums); setting the copy aside and copying the stream again from the other servers",
			"stream", name, "missing", short[name], "set_aside_in", dir)
	}
	if err := s.emb.RestartWithout(mend, dir); err != nil {
		return fmt.Errorf("restart the embedded NATS server without its damaged copies of %v: %w", mend, err)
	}
	store, err := s.setup(ctx)
	if err != nil {
		return err
	}
	old := s.store
	s.store = store
	old.Close()
	if again := s.shortCopies(ctx); len(again) > 0 {
		s.log.Error("this server's copies of streams still miss messages after they were copied again from the other servers; stop it, remove its data directory and start it again to copy everything from the others",
			"missing", again)
		return nil
	}
	s.log.Info("this server's damaged copies were copied again from the other servers", "streams", mend, "set_aside_in", dir)
	return nil
}

// shortCopies returns how many messages each of this server's copies of
// the compared streams misses, of those that miss some: a copy whose
// count falls short of the leader's by more than the messages it has yet
// to copy (the leader's sequences past its own last), in three looks in a row (a
// deletion may reach this copy a moment before the leader's), by the
// fewest of the three. The looks are 200 ms apart; a healthy copy is
// judged at the first.
func (s *Server) shortCopies(ctx context.Context) map[string]uint64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	short := map[string]uint64{} // the fewest missing, in the looks so far
	looks := map[string]int{}    // looks in a row that found some missing
	judged := map[string]bool{}
	for ctx.Err() == nil && len(judged) < len(compared) {
		local, err := s.emb.LocalCopies(compared)
		if err != nil {
			s.log.Debug("could not read this server's copies of the streams", "err", err)
			return nil
		}
		for _, name := range compared {
			mine, ok := local[name]
			if judged[name] {
				continue
			}
			if !ok { // no copy here (a cluster of more servers than copies)
				judged[name] = true
				continue
			}
			lead, _, err := s.store.Leader(ctx, name)
			if err != nil || mine.LastSeq > lead.LastSeq {
				continue // look again
			}
			yet := lead.LastSeq - mine.LastSeq
			if mine.Msgs+yet >= lead.Msgs {
				judged[name] = true
				delete(short, name)
				continue
			}
			missing := lead.Msgs - mine.Msgs - yet
			if looks[name] == 0 || missing < short[name] {
				short[name] = missing
			}
			if looks[name]++; looks[name] == 3 {
				judged[name] = true
			}
		}
		if len(judged) == len(compared) {
			break // a healthy start waits no look more
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	for name := range short {
		if looks[name] < 3 {
			delete(short, name)
		}
	}
	return short
}

// othersCurrent says why this server's copy of a stream may not be copied
// again from the others now ("" when it may): another server must lead it
// and every other copy be current.
func (s *Server) othersCurrent(ctx context.Context, name string) string {
	_, c, err := s.store.Leader(ctx, name)
	switch {
	case err != nil:
		return err.Error()
	case c == nil || c.Leader == "" || c.Leader == s.emb.Name():
		return "no other server leads the stream"
	}
	for _, r := range c.Replicas {
		if r.Name != s.emb.Name() && !r.Current {
			return fmt.Sprintf("the copy of server %s is not current", r.Name)
		}
	}
	return ""
}
