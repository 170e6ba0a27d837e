package worker

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Results that pile up are stored together, but never in a message larger
// than maxResultMessage: NATS refuses one over its max_payload, and the
// tasks behind it would run again for ever.
func TestResultMessagesStaySmall(t *testing.T) {
	f := newFixture(t)
	p := New(Config{Store: f.store, Kinds: f.kinds, Concurrency: 1, Name: "test", Logger: slog.New(slog.DiscardHandler)})
	var batch []finished
	for i := range 100 {
		r := job.TaskResult{Job: "wordcount_x", Partition: i, Phase: job.PhaseReduce, Attempt: 1}
		for range job.PreviewLines {
			r.Preview = append(r.Preview, job.NewPreview([]byte(strings.Repeat("k", 1000)), strings.Repeat("l", 1000)))
		}
		batch = append(batch, finished{result: r})
	}
	p.store(batch)
	got := map[int]bool{}
	messages := 0
	for len(got) < len(batch) {
		err := f.store.Results.Fetch(f.ctx, 100, time.Second, func(d store.Delivery) {
			messages++
			if len(d.Data()) > maxResultMessage {
				t.Errorf("a message of %d bytes; want at most %d", len(d.Data()), maxResultMessage)
			}
			rs, err := store.DecodeResults(d.Data())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				got[r.Partition] = true
			}
			_ = d.Ack()
		})
		if err != nil || f.ctx.Err() != nil {
			t.Fatalf("%d of %d results stored (%v)", len(got), len(batch), err)
		}
	}
	if messages < 2 || messages > 8 {
		t.Fatalf("%d messages for 100 results of about 6 KiB; want them split in a few", messages)
	}
}
