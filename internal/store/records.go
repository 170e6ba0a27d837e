package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// WatchTimeout bounds how long the start of a watch is tried again: a
// store of a cluster electing a stream's leader refuses it for seconds
// ("JetStream system temporarily unavailable"), and a worker process that
// started in such a moment exited, where it could wait (seen in make chaos).
const WatchTimeout = time.Minute

// StartWatch starts watch (a KV's or the jobs' Watch, bound to run), trying
// again for up to WatchTimeout, or until ctx ends, while the store refuses it.
func StartWatch(ctx, run context.Context, watch func(context.Context) (Watcher, error)) (Watcher, error) {
	var w Watcher
	var last error
	err := Retry(ctx, WatchTimeout, func(context.Context) (err error) {
		w, err = watch(run)
		last = err
		return err
	})
	if err != nil && last != nil && !errors.Is(err, last) {
		// ctx ended while waiting: the store's refusal says more.
		err = fmt.Errorf("%w; the store's last answer: %w", err, last)
	}
	return w, err
}

// Follow reads every entry of kv into apply, then keeps applying its
// changes in a goroutine (counted in wg) until run ends; it returns once
// the stored entries are read, or when ctx ends first.
func Follow(ctx, run context.Context, kv KV, wg *sync.WaitGroup, apply func(*Entry)) error {
	w, err := StartWatch(ctx, run, kv.Watch)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	wg.Go(func() {
		defer w.Stop()
		for {
			select {
			case <-run.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					close(ready)
					continue
				}
				apply(e)
			}
		}
	})
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// UpdateJSON changes the JSON record of key with a compare-and-set,
// reading it again after a conflict. fn gets the record (its zero value
// when there is none: found false) and reports whether to write it. It
// returns the record as written (or as found, unchanged) and its revision.
func UpdateJSON[T any](ctx context.Context, kv KV, key string, fn func(v *T, found bool) (bool, error)) (T, uint64, error) {
	for range 100 {
		var v T
		e, err := kv.Get(ctx, key)
		found := err == nil
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return v, 0, err
		default:
			if err := json.Unmarshal(e.Value, &v); err != nil {
				return v, 0, fmt.Errorf("read the record %q: %w", key, err)
			}
		}
		write, err := fn(&v, found)
		if err != nil || !write {
			return v, e.Revision, err
		}
		data, err := json.Marshal(v)
		if err != nil {
			return v, 0, err
		}
		var rev uint64
		if found {
			rev, err = kv.Update(ctx, key, data, e.Revision)
		} else {
			rev, err = kv.Create(ctx, key, data)
		}
		if errors.Is(err, ErrConflict) {
			continue // another writer got there first: read again
		}
		return v, rev, err
	}
	var v T
	return v, 0, fmt.Errorf("the record %q keeps changing under this write: %w", key, ErrConflict)
}
