package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/logtest"
	"github.com/mrcluster/mrcluster/internal/store"
)

// behindKV answers reads of one key as a server's read of a job that
// another server deleted meanwhile does: its index of the archive names a
// copy the archive no longer holds (store.ErrBehind).
type behindKV struct {
	store.KV
	mu  sync.Mutex
	key string
}

func (k *behindKV) Get(ctx context.Context, key string) (store.Entry, error) {
	k.mu.Lock()
	behind := key == k.key
	k.mu.Unlock()
	if behind {
		return store.Entry{}, fmt.Errorf("job %s: the archive did not find its copies where this server read them: %w", key, store.ErrBehind)
	}
	return k.KV.Get(ctx, key)
}

// Every server of a cluster deletes the jobs past their retention in its
// rounds, so a server's round meets jobs another one deleted since it
// listed them: their records are then not where its index of the archive
// says, until its watch sees the deletion. That is no failure of the
// store: the round goes on with the jobs after it, without a warning (the
// servers of a loopback cluster each warned of it and stopped their round
// there, a few times a minute under a retention of one minute).
func TestRetentionGoesOnPastAJobDeletedElsewhere(t *testing.T) {
	var kv *behindKV
	f := storeFixture(t, func(inner store.KV) store.KV { kv = &behindKV{KV: inner}; return kv })
	var mu sync.Mutex
	var expired []string
	rounds := 0
	deleted := make(chan string, 2)
	logged := &logtest.Levels{}
	f.c = f.coordinator(func(c *Config) {
		c.Retention, c.RetentionEvery = time.Millisecond, 10*time.Millisecond
		c.Expired = func(time.Time) []string {
			mu.Lock()
			defer mu.Unlock()
			rounds++
			return expired
		}
		c.JobDeleted = func(j *job.Job) { deleted <- j.ID }
		c.Logger = slog.New(logged)
	})
	var ids []string
	for range 2 {
		j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		f.report(result(f.take(1)[0], 1))
		f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
		ids = append(ids, j.ID)
	}
	kv.mu.Lock()
	kv.key = ids[0]
	kv.mu.Unlock()
	mu.Lock()
	expired, rounds = ids, 0
	mu.Unlock()
	select {
	case id := <-deleted:
		if id != ids[1] {
			t.Fatalf("deleted %s; want %s, the job after the one not readable", id, ids[1])
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("job %s, listed after one whose record this server cannot read yet, not deleted in 10 s", ids[1])
	}
	// Rounds after it look again, quietly.
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return rounds >= 5
	})
	if _, err := kv.KV.Get(f.ctx, ids[0]); err != nil {
		t.Fatalf("job %s deleted though its record could not be read", ids[0])
	}
	if w := append(logged.At(slog.LevelWarn, ""), logged.At(slog.LevelError, "")...); len(w) > 0 {
		t.Fatalf("warnings logged: %q; want none for a job deleted by another server", w)
	}
}
