package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/logtest"
	"github.com/mrcluster/mrcluster/internal/store"
)

// failingFetches is a task queue whose fetches fail while fails is above
// zero, each failure counting one down: a cluster electing its queue's
// leader after a server died.
type failingFetches struct {
	store.Stream
	fails *atomic.Int32
}

func (q failingFetches) failed() error {
	if q.fails.Add(-1) >= 0 {
		return errors.New("nats: no responders available for request")
	}
	return nil
}

func (q failingFetches) Fetch(ctx context.Context, max int, wait time.Duration, fn func(store.Delivery)) error {
	if err := q.failed(); err != nil {
		return err
	}
	return q.Stream.Fetch(ctx, max, wait, fn)
}

func (q failingFetches) FetchFrom(ctx context.Context, priority, max int, fn func(store.Delivery)) error {
	if err := q.failed(); err != nil {
		return err
	}
	return q.Stream.FetchFrom(ctx, priority, max, fn)
}

// Fetches that fail for a moment (a cluster electing its queue's leader
// takes seconds) are retried without a warning; failing longer, a pool
// warns once, and says so when it fetches again. Each failed fetch was a
// warning: a surviving server's pool logged seven in the five seconds of
// an election after a server of a loopback cluster was SIGKILLed.
func TestFetchesFailingForAMomentAreNoWarning(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		warnAfter time.Duration
		warns     bool
	}{{time.Hour, false}, {time.Nanosecond, true}} {
		f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
		var fails atomic.Int32
		fails.Store(4)
		f.store.Tasks = failingFetches{Stream: f.store.Tasks, fails: &fails}
		logged := &logtest.Levels{}
		p := f.pool(1, func(cfg *Config) { cfg.failingWarnAfter, cfg.Logger = c.warnAfter, slog.New(logged) })
		f.queue(task("k_1", 0, 1))
		if rs := f.results(1); len(rs) != 1 || rs[0].Error != "" || rs[0].Value != 1 {
			t.Fatalf("warn after %v: results %+v; want the task run once the fetches work", c.warnAfter, rs)
		}
		if fails.Load() > 0 {
			t.Fatalf("warn after %v: %d failures left; the task ran without them", c.warnAfter, fails.Load())
		}
		if c.warns {
			// Said by the pool that warned, at its next fetch that works.
			for deadline := time.Now().Add(10 * time.Second); len(logged.At(slog.LevelInfo, "fetching tasks again")) == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("fetches failing for more than %v, then working: no note of fetching again in 10 s", c.warnAfter)
				}
			}
		}
		// Stopped, the pool has logged all it will of the failures.
		ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
		err := p.Stop(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		switch warnings := len(logged.At(slog.LevelWarn, "cannot fetch tasks")); {
		case !c.warns && (warnings != 0 || len(logged.At(slog.LevelInfo, "fetching tasks again")) != 0):
			t.Fatalf("fetches failing for less than %v: %d warnings; want none, and no note of fetching again", c.warnAfter, warnings)
		case c.warns && (warnings == 0 || warnings > fetchers):
			t.Fatalf("fetches failing for more than %v: %d warnings; want one per fetcher at most (%d)", c.warnAfter, warnings, fetchers)
		}
	}
}
