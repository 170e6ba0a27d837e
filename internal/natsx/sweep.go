package natsx

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SweptChunks is what a sweep of an object store removed: the chunks of
// puts that never finished.
type SweptChunks struct {
	Bucket   string
	Objects  int    // chunk subjects purged: one per put cut short
	Messages uint64 // chunks purged
	// Markers counts the infos of deleted objects purged: the library's
	// Delete left one under each name for good (blobs.Delete leaves none
	// since 2026-12-06).
	Markers int
}

// sweptBuckets are the object stores whose objects stay until deleted;
// the shuffle's chunks expire with its stream (7 days).
var sweptBuckets = []string{BlocksBucket, OutputBucket, ModulesBucket}

// SweepChunks purges the chunks no object names whose newest chunk is
// older than olderThan, and the markers of deleted objects, in the object
// stores that keep their objects (dataset blocks, job outputs, kinds'
// modules). A put writes its chunks
// first and then the info naming them: a process killed in between (a
// worker writing a reduce output, a server storing an upload's block)
// leaves chunks that nothing names and nothing else removes. A put under
// way sends a chunk at least every few seconds and then its info at once,
// so an olderThan of minutes or more cannot take a live put's chunks.
//
// Everything is read from each stream's leader (its subjects, every
// object's info, a candidate's newest chunk): a copy that lags could miss
// an info and so destroy a live object. An info that cannot be read stops
// the bucket's sweep before any of its chunks is purged (markers, which
// name nothing live, may have gone); a bucket swept fails alone. What was
// purged is returned with the first error met.
func (s *Store) SweepChunks(ctx context.Context, olderThan time.Duration) ([]SweptChunks, error) {
	var out []SweptChunks
	var first error
	for _, bucket := range sweptBuckets {
		st, ok := s.objStreams[bucket]
		if !ok {
			continue
		}
		swept, err := sweepBucket(ctx, s.JS, st, bucket, olderThan)
		if swept.Objects > 0 || swept.Markers > 0 {
			out = append(out, swept)
		}
		if err != nil && first == nil {
			first = fmt.Errorf("sweep the object store %s: %w", bucket, err)
		}
	}
	return out, first
}

func sweepBucket(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, bucket string, olderThan time.Duration) (SweptChunks, error) {
	swept := SweptChunks{Bucket: bucket}
	name := "OBJ_" + bucket
	metaPrefix, chunkPrefix := "$O."+bucket+".M.", "$O."+bucket+".C."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+bucket+".>"))
	if err != nil {
		return swept, storeErr(err)
	}
	named := map[string]bool{} // chunk subjects a live info names
	var chunks []string
	for subject := range info.State.Subjects {
		switch {
		case strings.HasPrefix(subject, chunkPrefix):
			chunks = append(chunks, subject)
		case strings.HasPrefix(subject, metaPrefix):
			m, found, err := leaderGet(ctx, js, name, map[string]any{"last_by_subj": subject})
			if err != nil {
				return swept, err
			}
			if !found {
				continue // purged since (the object deleted with its chunks)
			}
			var oi jetstream.ObjectInfo
			if err := json.Unmarshal(m.Data, &oi); err != nil {
				// Not an info this code can read: the chunks it may name
				// are not ours to judge.
				return swept, fmt.Errorf("the info on %s does not read: %w", subject, err)
			}
			switch {
			case oi.Deleted:
				// Only this revision: a put of the name since stays.
				if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(m.Seq+1)); err != nil {
					return swept, storeErr(err)
				}
				swept.Markers++
			case oi.NUID != "":
				named[chunkPrefix+oi.NUID] = true
			}
		}
	}
	for _, subject := range chunks {
		if named[subject] {
			continue
		}
		m, found, err := leaderGet(ctx, js, name, map[string]any{"last_by_subj": subject})
		if err != nil {
			return swept, err
		}
		if !found || time.Since(m.Time) < olderThan {
			continue // gone since, or a put that may still be under way
		}
		resp, err := purgeSubject(ctx, js, name, subject)
		if err != nil {
			return swept, err
		}
		swept.Objects++
		swept.Messages += resp
	}
	return swept, nil
}

// purgeSubject purges subject from stream name and returns how many
// messages went.
func purgeSubject(ctx context.Context, js jetstream.JetStream, name, subject string) (uint64, error) {
	data, err := json.Marshal(map[string]any{"filter": subject})
	if err != nil {
		return 0, err
	}
	reply, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+name, data)
	if err != nil {
		return 0, storeErr(fmt.Errorf("purge %s from %s: %w", subject, name, err))
	}
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
		Purged uint64 `json:"purged"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return 0, fmt.Errorf("purge %s from %s: %w", subject, name, err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("purge %s from %s: %s", subject, name, resp.Error.Description)
	}
	return resp.Purged, nil
}
