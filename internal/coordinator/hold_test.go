package coordinator

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// tracked is a result message whose handling the test sees.
type tracked struct {
	data  []byte
	ended chan string
}

func (d *tracked) Key() string             { return "" }
func (d *tracked) Data() []byte            { return d.data }
func (d *tracked) Delivered() int          { return 1 }
func (d *tracked) Priority() int           { return job.DefaultPriority }
func (d *tracked) Seq() uint64             { return 1 }
func (d *tracked) Stored() time.Time       { return time.Time{} }
func (d *tracked) Ack() error              { d.ended <- "acked"; return nil }
func (d *tracked) Nak(time.Duration) error { d.ended <- "given back"; return nil }
func (d *tracked) Term() error             { d.ended <- "dropped"; return nil }
func (d *tracked) InProgress() error       { return nil }
func (d *tracked) Lease() string           { return "" }

var _ store.Delivery = (*tracked)(nil)

// Once a batch of results is handled, the loop that applies them waits for
// the next without holding the last: a quiet server kept the last burst's
// 1,024 result messages, 13 KB each, for as long as it stayed quiet.
func TestApplyLoopLetsGoOfTheMessagesItHandled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := memstore.New(memstore.Config{AckWait: time.Second})
	c := New(Config{Store: s, Kinds: kinds.Builtin(0), MaxAttempts: 2, Logger: slog.New(slog.DiscardHandler)})
	msgs := make(chan store.Delivery)
	loop := make(chan struct{})
	go func() { defer close(loop); c.applyLoop(ctx, msgs) }()
	defer func() { cancel(); <-loop }()

	// A result of a job an hour old that the store does not hold: dropped.
	m, err := store.ResultMessage([]job.TaskResult{{Job: job.NewID("noop", time.Now().Add(-time.Hour)), Attempt: 1, Value: 1}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan string, 1)
	d := &tracked{data: m.Data, ended: ended}
	held := weak.Make(d)
	msgs <- d
	d = nil
	<-ended
	// Between its ack and its return, applyBatch still holds it.
	waitFor(t, func() bool {
		runtime.GC()
		return held.Value() == nil
	})
}

// A store that does not answer fails every job's write at once: one
// warning in warnEvery, counting the failures passed over.
func TestPacerCountsWhatItPassesOver(t *testing.T) {
	var p pacer
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	if others, ok := p.note(t0); !ok || others != 0 {
		t.Fatalf("first failure: warned %v, others %d; want warned, 0", ok, others)
	}
	for i := range 5 {
		if _, ok := p.note(t0.Add(time.Duration(i+1) * time.Second)); ok {
			t.Fatalf("failure %d s after a warning was warned of too", i+1)
		}
	}
	if others, ok := p.note(t0.Add(warnEvery)); !ok || others != 5 {
		t.Fatalf("failure %v after the first: warned %v, others %d; want warned, 5", warnEvery, ok, others)
	}
	if others, ok := p.note(t0.Add(3 * warnEvery)); !ok || others != 0 {
		t.Fatalf("a failure long after: warned %v, others %d; want warned, 0", ok, others)
	}
}

// A person's command is judged on the stored record, not on the one a
// server holds: another server, holding a job as it last read it
// (queued), is asked to retry and to cancel it once it has succeeded
// elsewhere, and answers as for a succeeded job.
func TestCommandsJudgeTheStoredRecord(t *testing.T) {
	f := newFixture(t)
	other := New(Config{Store: f.store, Datasets: f.ds, Kinds: kinds.Builtin(0), MaxAttempts: 2, Logger: slog.New(slog.DiscardHandler)})
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if held, err := other.update(f.ctx, j.ID, func(*job.Job) bool { return false }); err != nil || held.State != job.Queued {
		t.Fatalf("the other server's read: %+v, %v", held, err)
	}
	f.report(result(f.take(1)[0], 1))
	f.await(j.ID, func(j *job.Job) bool { return j.State == job.Succeeded })
	if _, err := other.Retry(f.ctx, j.ID); job.ErrorCode(err) != job.EConflict || !strings.Contains(err.Error(), "succeeded") {
		t.Fatalf("retry of the succeeded job on the other server: %v; want a conflict naming it succeeded", err)
	}
	if _, err := other.Cancel(f.ctx, j.ID); job.ErrorCode(err) != job.EConflict || !strings.Contains(err.Error(), "succeeded") {
		t.Fatalf("cancel of the succeeded job on the other server: %v; want a conflict naming it succeeded", err)
	}
}
