package app

import (
	"context"
	"time"
)

// chunkSweepEvery is Config.ChunkSweepEvery's default.
const chunkSweepEvery = time.Hour

// sweepChunksLoop sweeps the object stores that keep their objects
// (dataset blocks, job outputs, kinds' modules) for the chunks of puts a
// crash cut short (a worker killed while it wrote a reduce output, a
// server while it stored an upload's block): nothing names those, nothing
// else removes them, and they would hold their space for good. Each
// sweep, every ChunkSweepEvery (the first one as long after the start),
// takes the chunks no object names whose newest is older than that: a put
// under way writes a chunk every few seconds at most. Every server of a
// cluster sweeps (a purge is the same from any of them); a store that
// refuses writes is left alone until it takes them again.
func (s *Server) sweepChunksLoop(ctx context.Context) {
	every := s.cfg.ChunkSweepEvery
	if every <= 0 {
		every = chunkSweepEvery
	}
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.health.Err() == nil {
			s.sweepChunks(ctx, every)
		}
		t.Reset(every)
	}
}

// sweepChunks runs one sweep, within a deadline of its own.
func (s *Server) sweepChunks(ctx context.Context, olderThan time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	swept, err := s.store.SweepChunks(ctx, olderThan)
	for _, sw := range swept {
		if sw.Objects > 0 {
			s.log.Info("removed the chunks of objects whose writes never finished (a process stopped in the middle of one)", "bucket", sw.Bucket, "objects", sw.Objects, "chunks", sw.Messages)
		}
		if sw.Markers > 0 {
			s.log.Info("removed the markers that deleted objects left in the store (an earlier version left one per object)", "bucket", sw.Bucket, "markers", sw.Markers)
		}
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("the sweep of the object stores for the chunks of unfinished writes stopped; it runs again later", "err", err)
	}
}
