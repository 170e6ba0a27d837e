package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
)

// oldestJobs answers OldestOfKind with fixed times, by kind.
type oldestJobs map[string]time.Time

func (o oldestJobs) HasKind(kind string) bool { _, ok := o[kind]; return ok }
func (o oldestJobs) OldestOfKind(kind string, before time.Time) (time.Time, bool) {
	t, ok := o[kind]
	if !ok || !t.Before(before) {
		return time.Time{}, false
	}
	return t, true
}

// An earlier version's module goes once no job made before the version
// was replaced is held, and not before; a module another kind uploads, or
// the kind again, stays; a record of an earlier mrcluster (no times)
// counts its versions replaced when its current one came. Before, every
// version's module stayed stored while its kind existed.
func TestEarlierVersionsGoWithTheirLastJobs(t *testing.T) {
	defer func(m time.Duration) { earlierMargin = m }(earlierMargin)
	earlierMargin = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := wasmkind.New(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close(ctx) })
	st := memstore.New(memstore.Config{})
	c := New(st, rt, job.NewRegistry(), slog.New(slog.DiscardHandler))
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(ctx) })

	now := time.Now().UTC()
	hash := func(s string) string { return wasmkind.Hash([]byte(s)) }
	for _, m := range []string{"v1", "v2", "v3", "other", "old1", "old2"} {
		if err := st.Modules.Put(ctx, hash(m), bytes.NewReader([]byte(m))); err != nil {
			t.Fatal(err)
		}
	}
	put := func(u Uploaded) {
		t.Helper()
		data, _ := json.Marshal(u)
		if _, err := st.Kinds.Put(ctx, u.Name, data); err != nil {
			t.Fatal(err)
		}
		c.apply(&store.Entry{Key: u.Name, Value: data})
	}
	// mine: v1 replaced 3 h ago, v2 1 h ago, v3 current. other: uploads
	// the module mine's v1 had. legacy: no times, its current version 2 h
	// old.
	put(Uploaded{Name: "mine", Version: 3, Hash: hash("v3"), UploadedAt: now.Add(-time.Hour),
		Earlier: []string{hash("v1"), hash("v2")}, EarlierUntil: []time.Time{now.Add(-3 * time.Hour), now.Add(-time.Hour)}})
	put(Uploaded{Name: "legacy", Version: 3, Hash: hash("other"), UploadedAt: now.Add(-2 * time.Hour),
		Earlier: []string{hash("old1"), hash("old2")}})
	stored := func(m string) bool {
		t.Helper()
		_, err := st.Modules.Size(ctx, hash(m))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	check := func(when string, kind string, earlier []string, kept, gone []string) {
		t.Helper()
		u, _ := c.Get(kind)
		var want []string
		for _, m := range earlier {
			want = append(want, hash(m))
		}
		if !slices.Equal(u.Earlier, want) || len(u.EarlierUntil) > len(u.Earlier) {
			t.Fatalf("%s: %s's earlier versions %v (until %v); want those of %v", when, kind, u.Earlier, u.EarlierUntil, earlier)
		}
		for _, m := range kept {
			if !stored(m) {
				t.Fatalf("%s: module %s deleted; want it kept", when, m)
			}
		}
		for _, m := range gone {
			if stored(m) {
				t.Fatalf("%s: module %s still stored; want it deleted", when, m)
			}
		}
	}

	// Jobs of both kinds older than every version: nothing goes.
	c.jobs = oldestJobs{"mine": now.Add(-4 * time.Hour), "legacy": now.Add(-4 * time.Hour)}
	c.sweepEarlier()
	check("jobs older than every version", "mine", []string{"v1", "v2"}, []string{"v1", "v2", "v3"}, nil)
	check("jobs older than every version", "legacy", []string{"old1", "old2"}, []string{"old1", "old2", "other"}, nil)

	// mine's oldest job made within the margin after v1 was replaced: it
	// may have pinned v1, which stays.
	c.jobs = oldestJobs{"mine": now.Add(-3*time.Hour + 30*time.Second), "legacy": now.Add(-90 * time.Minute)}
	c.sweepEarlier()
	check("a job within the margin of v1's replacement", "mine", []string{"v1", "v2"}, []string{"v1", "v2"}, nil)
	// legacy's versions count as replaced 2 h ago: a job of 90 minutes
	// ago pinned none of them.
	check("a record without times", "legacy", nil, []string{"other"}, []string{"old1", "old2"})

	// mine's oldest job made after v1's replacement and its margin: v1
	// goes from the record, but its module stays, uploaded by other.
	put(Uploaded{Name: "other", Version: 1, Hash: hash("v1"), UploadedAt: now.Add(-2 * time.Hour)})
	c.jobs = oldestJobs{"mine": now.Add(-2 * time.Hour)}
	c.sweepEarlier()
	check("a job made after v1's replacement", "mine", []string{"v2"}, []string{"v1", "v2", "v3"}, nil)
	if u, _ := c.Get("mine"); !u.EarlierUntil[0].Equal(now.Add(-time.Hour)) {
		t.Fatalf("v2 replaced at %v; want %v", u.EarlierUntil, now.Add(-time.Hour))
	}

	// No job of mine left: v2 goes too; the current version stays.
	c.jobs = oldestJobs{}
	c.sweepEarlier()
	check("no job left", "mine", nil, []string{"v3", "v1"}, []string{"v2"})
}

// A new version lists the one it replaces, and when; a module that was
// current twice counts as replaced the last time; a record of an earlier
// mrcluster gets its versions' times, when its current one came.
func TestANewVersionNotesWhenTheOldOneWasReplaced(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	u := Uploaded{Hash: "c", UploadedAt: at(2), Earlier: []string{"a", "b"}, EarlierUntil: []time.Time{at(1), at(2)}}
	earlier, until := u.replacedBy("d", at(3))
	if !slices.Equal(earlier, []string{"a", "b", "c"}) || !slices.Equal(until, []time.Time{at(1), at(2), at(3)}) {
		t.Fatalf("c replaced by d: %v %v", earlier, until)
	}
	// a uploaded again, then replaced: replaced at the last time.
	again := Uploaded{Hash: "a", UploadedAt: at(4), Earlier: earlier, EarlierUntil: until}
	earlier, until = again.replacedBy("e", at(5))
	if !slices.Equal(earlier, []string{"b", "c", "a"}) || !slices.Equal(until, []time.Time{at(2), at(3), at(5)}) {
		t.Fatalf("a, current again, replaced by e: %v %v", earlier, until)
	}
	// The same module again: nothing replaced.
	if earlier, until = again.replacedBy("a", at(5)); !slices.Equal(earlier, again.Earlier) || !slices.Equal(until, again.EarlierUntil) {
		t.Fatalf("a uploaded again over itself: %v %v", earlier, until)
	}
	legacy := Uploaded{Hash: "c", UploadedAt: at(2), Earlier: []string{"a", "b"}}
	earlier, until = legacy.replacedBy("d", at(3))
	if !slices.Equal(earlier, []string{"a", "b", "c"}) || !slices.Equal(until, []time.Time{at(2), at(2), at(3)}) {
		t.Fatalf("a record without times, c replaced by d: %v %v", earlier, until)
	}
}
