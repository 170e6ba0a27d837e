// Package catalog keeps the kinds uploaded as WebAssembly modules: their
// records (mr_kinds: name → version, module hash, params) and their
// modules (mr_modules, by content hash). Every server watches the records;
// every server and worker loads a module from the store by the hash its
// task pinned, compiles it once and runs it per task.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
)

// Uploaded is the record of an uploaded kind.
type Uploaded struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Params      []job.Param `json:"params,omitempty"`
	Version     int         `json:"version"`
	Hash        string      `json:"hash"`
	Size        int64       `json:"size"`
	UploadedAt  time.Time   `json:"uploaded_at"`
	// Earlier lists the hashes of earlier versions, oldest first, and
	// EarlierUntil when each was replaced: a version's module stays stored
	// while a job made before then (and a margin, earlierMargin) is held,
	// for the jobs that pinned it, and goes after (sweepEarlier). A record
	// of an earlier mrcluster has no times: its versions count as replaced
	// at UploadedAt.
	Earlier      []string    `json:"earlier,omitempty"`
	EarlierUntil []time.Time `json:"earlier_until,omitempty"`
}

// earlierUntil returns when earlier version i was replaced (UploadedAt
// when the record does not say: no earlier version was replaced later).
func (u Uploaded) earlierUntil(i int) time.Time {
	// The times, when some are missing, are those of the newest versions.
	if j := i - (len(u.Earlier) - len(u.EarlierUntil)); j >= 0 && j < len(u.EarlierUntil) {
		return u.EarlierUntil[j]
	}
	return u.UploadedAt
}

// replacedBy returns the earlier versions of u once module hash replaces
// it at time at: each with the time it was replaced (those of a record
// without times: when u's version came), u's own last, at at (a module
// current twice was last replaced then).
func (u Uploaded) replacedBy(hash string, at time.Time) ([]string, []time.Time) {
	if u.Hash == hash {
		return u.Earlier, u.EarlierUntil
	}
	var earlier []string
	var until []time.Time
	for i, h := range u.Earlier {
		if h != u.Hash {
			earlier, until = append(earlier, h), append(until, u.earlierUntil(i))
		}
	}
	return append(earlier, u.Hash), append(until, at)
}

// Kind is the registry's form of an uploaded kind: what the coordinator
// and the submit's checks read. Its tasks run the module, through
// Modules.TaskKind.
func (u Uploaded) Kind() job.Kind {
	return job.Kind{Name: u.Name, Description: u.Description, Params: u.Params, ReadsData: true, Module: u.Hash,
		Reduce: job.SumReduce, ReduceKey: job.FirstValue}
}

// Modules loads modules by hash and runs their tasks: what a worker needs.
type Modules struct {
	Blobs   store.Blobs
	Runtime *wasmkind.Runtime
}

// mendModule says how a damaged module is mended: an upload of the same
// bytes writes the object again under its hash.
const mendModule = "upload the same .wasm file again (mrcluster kind put NAME FILE.wasm, under any name), which replaces the store's damaged copy"

// Load returns the compiled module of hash.
func (m *Modules) Load(ctx context.Context, hash string) (*wasmkind.Module, error) {
	if mod, ok := m.Runtime.Cached(hash); ok {
		return mod, nil
	}
	wasm, err := m.Blobs.GetBytes(ctx, hash)
	if errors.Is(err, store.ErrDamaged) {
		return nil, fmt.Errorf("read module %s from the store: %w; %s", short(hash), err, mendModule)
	}
	if err != nil {
		return nil, fmt.Errorf("read module %s from the store: %w", short(hash), err)
	}
	if wasmkind.Hash(wasm) != hash {
		return nil, fmt.Errorf("module %s read from the store does not match its hash: the store's copy is %w; %s", short(hash), store.ErrDamaged, mendModule)
	}
	return m.Runtime.Compile(ctx, wasm)
}

// TaskKind returns the kind task t runs: its pinned module's, on an
// instance of its own that release frees.
func (m *Modules) TaskKind(ctx context.Context, t job.Task) (job.Kind, func(), error) {
	for attempt := 1; ; attempt++ {
		mod, err := m.Load(ctx, t.Module)
		if err != nil {
			return job.Kind{}, nil, err
		}
		k, release, err := mod.Kind(ctx, t.Kind, t.Params)
		if errors.Is(err, wasmkind.ErrEvicted) && attempt < 3 {
			continue // freed between the load and now: Load compiles it again
		}
		return k, release, err
	}
}

func short(hash string) string { return hash[:min(12, len(hash))] }

// Catalog is a server's view of the uploaded kinds.
type Catalog struct {
	Modules
	kv      store.KV
	state   store.KV
	tasks   store.Stream
	builtin *job.Registry
	log     *slog.Logger

	mu    sync.RWMutex
	kinds map[string]Uploaded
	// states holds the kinds' states (built in or uploaded): paused,
	// limits; a kind without one is active and unbounded.
	states map[string]KindState

	// retired holds the modules of deleted kinds (hash → the kinds that
	// uploaded it) kept for their jobs, which write their outputs through
	// them, until no job of those kinds is left (KeepModulesFor); swept
	// after a kick.
	retired map[string]map[string]bool
	jobs    Jobs
	kick    chan struct{}

	run  context.Context // the catalog's life, for its loops
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New returns a catalog; Start fills it.
func New(st *store.Store, rt *wasmkind.Runtime, builtin *job.Registry, log *slog.Logger) *Catalog {
	return &Catalog{Modules: Modules{Blobs: st.Modules, Runtime: rt}, kv: st.Kinds, state: st.KindState, tasks: st.Tasks, builtin: builtin, log: log,
		kinds: map[string]Uploaded{}, states: map[string]KindState{}, retired: map[string]map[string]bool{}, kick: make(chan struct{}, 1)}
}

// KindState is a kind's state record (mr_kind_state).
type KindState struct {
	Paused bool      `json:"paused"`
	Since  time.Time `json:"since"`
	// Concurrency bounds the kind's tasks running at once in the whole
	// cluster (0: no bound), Rate those started per second or minute
	// ("100/s", "10/m"; "": no bound); with either, its tasks have a lane
	// of their own.
	Concurrency int    `json:"concurrency,omitempty"`
	Rate        string `json:"rate,omitempty"`
}

// Start reads the records (uploaded kinds, kinds' states) and follows
// their changes; it returns once the stored ones are read.
func (c *Catalog) Start(ctx context.Context) error {
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.run, c.stop = run, cancel
	if err := store.Follow(ctx, run, c.kv, &c.wg, c.apply); err != nil {
		_ = c.Stop(ctx)
		return fmt.Errorf("watch uploaded kinds: %w", err)
	}
	if err := store.Follow(ctx, run, c.state, &c.wg, c.applyState); err != nil {
		_ = c.Stop(ctx)
		return fmt.Errorf("watch kinds' states: %w", err)
	}
	return nil
}

func (c *Catalog) applyState(e *store.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st KindState
	if !e.Deleted {
		if err := json.Unmarshal(e.Value, &st); err != nil {
			c.log.Warn("skipping an unreadable kind's state", "kind", e.Key, "err", err)
			return
		}
	}
	if st == (KindState{}) {
		delete(c.states, e.Key)
	} else {
		c.states[e.Key] = st
	}
}

// State returns kind name's state.
func (c *Catalog) State(name string) KindState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.states[name]
}

// Paused reports whether kind name is paused.
func (c *Catalog) Paused(name string) bool { return c.State(name).Paused }

// LaneOf names the lane of the task queue kind name's tasks go to: its
// own when it has a concurrency limit, else "".
func (c *Catalog) LaneOf(name string) string {
	if st := c.State(name); st.Concurrency > 0 || st.Rate != "" {
		return name
	}
	return ""
}

// SetLimit bounds kind name's tasks running at once in the whole cluster
// (0: no bound) and started per second or minute (rate "N/s", "N/m"; "":
// no bound). Its lane of the queue is made first; then every server moves
// the kind's waiting tasks to it (or back to the priority lanes).
func (c *Catalog) SetLimit(ctx context.Context, name string, concurrency int, rate string) error {
	if concurrency > 0 || rate != "" || c.LaneOf(name) != "" {
		if err := c.tasks.SetLane(ctx, name, concurrency, rate); err != nil {
			return job.Unavailable("task queue", err)
		}
	}
	return c.putState(ctx, name, func(st *KindState) { st.Concurrency, st.Rate = concurrency, rate })
}

// putState changes kind name's state record with a compare-and-set.
func (c *Catalog) putState(ctx context.Context, name string, fn func(*KindState)) error {
	st, rev, err := store.UpdateJSON(ctx, c.state, name, func(st *KindState, _ bool) (bool, error) {
		fn(st)
		return true, nil
	})
	if err != nil {
		return job.Unavailable("kind state store", err)
	}
	data, _ := json.Marshal(st)
	c.applyState(&store.Entry{Key: name, Value: data, Revision: rev})
	return nil
}

// SetPaused pauses or resumes kind name, which the caller checked exists:
// every server sees it, and takes the waiting tasks of the kind's jobs out
// of the queue, or puts them back.
func (c *Catalog) SetPaused(ctx context.Context, name string, paused bool) error {
	// Read from the store, not from this server's copy: another server
	// may have changed it a moment ago, unseen here yet.
	return c.putState(ctx, name, func(st *KindState) {
		if st.Paused != paused {
			st.Paused, st.Since = paused, time.Now().UTC()
		}
		if !paused {
			st.Since = time.Time{}
		}
	})
}

// Stop stops following the records. It waits for the watch to end until
// ctx is done: a watch's end asks its NATS server to delete its consumer,
// which waits for an answer that a server gone does not give.
func (c *Catalog) Stop(ctx context.Context) error {
	if c.stop == nil {
		return nil
	}
	c.stop()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the watch of the kinds' records did not end in time (its NATS server does not answer): %w", ctx.Err())
	}
}

func (c *Catalog) apply(e *store.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.Deleted {
		delete(c.kinds, e.Key)
		return
	}
	var u Uploaded
	if err := json.Unmarshal(e.Value, &u); err != nil {
		c.log.Warn("skipping an unreadable uploaded kind's record", "kind", e.Key, "err", err)
		return
	}
	if cur, ok := c.kinds[u.Name]; !ok || cur.Version <= u.Version {
		c.kinds[u.Name] = u
	}
}

// Lookup returns the uploaded kind named name.
func (c *Catalog) Lookup(name string) (job.Kind, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	u, ok := c.kinds[name]
	if !ok {
		return job.Kind{}, false
	}
	return u.Kind(), true
}

// Kinds returns the uploaded kinds in the registry's form.
func (c *Catalog) Kinds() []job.Kind {
	var out []job.Kind
	for _, u := range c.List() {
		out = append(out, u.Kind())
	}
	return out
}

// List returns the uploaded kinds' records, by name.
func (c *Catalog) List() []Uploaded {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Uploaded, 0, len(c.kinds))
	for _, u := range c.kinds {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the record of uploaded kind name.
func (c *Catalog) Get(name string) (Uploaded, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	u, ok := c.kinds[name]
	return u, ok
}

// Put stores wasm as the next version of kind name (a name the caller
// validated), once it compiles and answers as a kind; the same bytes again
// are the same version.
func (c *Catalog) Put(ctx context.Context, name, description string, wasm []byte) (Uploaded, error) {
	if _, ok := c.builtin.Lookup(name); ok {
		return Uploaded{}, job.Errorf(job.EConflict, "kind %q is built in; upload yours under another name", name)
	}
	mod, err := c.Runtime.Compile(ctx, wasm)
	if err != nil {
		return Uploaded{}, job.Errorf(job.EInvalid, "module for kind %q refused: %v", name, err)
	}
	if err := c.Blobs.Put(ctx, mod.Hash, bytes.NewReader(wasm)); err != nil {
		return Uploaded{}, job.Unavailable("module store", err)
	}
	if description == "" {
		description = mod.Info.Description
	}
	for {
		u := Uploaded{Name: name, Description: description, Params: mod.Info.Params, Version: 1, Hash: mod.Hash,
			Size: int64(len(wasm)), UploadedAt: time.Now().UTC()}
		e, err := c.kv.Get(ctx, name)
		var rev uint64
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return Uploaded{}, job.Unavailable("kind store", err)
		default:
			var cur Uploaded
			if err := json.Unmarshal(e.Value, &cur); err != nil {
				return Uploaded{}, fmt.Errorf("read kind %q: %w", name, err)
			}
			if cur.Hash == mod.Hash && cur.Description == description {
				return cur, nil
			}
			u.Version, rev = cur.Version+1, e.Revision
			u.Earlier, u.EarlierUntil = cur.replacedBy(mod.Hash, u.UploadedAt)
		}
		data, _ := json.Marshal(u)
		if rev == 0 {
			_, err = c.kv.Create(ctx, name, data)
		} else {
			_, err = c.kv.Update(ctx, name, data, rev)
		}
		if errors.Is(err, store.ErrConflict) {
			continue // another upload of the same name won: version after it
		}
		if err != nil {
			return Uploaded{}, job.Unavailable("kind store", err)
		}
		c.apply(&store.Entry{Key: name, Value: data})
		// An earlier version's module uploaded again may have been
		// swept by another server between the put above and this
		// record (sweepEarlier): stored again.
		if _, err := c.Blobs.Size(ctx, mod.Hash); errors.Is(err, store.ErrNotFound) {
			if err := c.Blobs.Put(ctx, mod.Hash, bytes.NewReader(wasm)); err != nil {
				return Uploaded{}, job.Unavailable("module store", err)
			}
		}
		return u, nil
	}
}

// Delete removes kind name and its modules. The caller checks that no
// unfinished job uses it.
func (c *Catalog) Delete(ctx context.Context, name string) error {
	if _, ok := c.builtin.Lookup(name); ok {
		return job.Errorf(job.EConflict, "kind %q is built in and cannot be deleted", name)
	}
	u, ok := c.Get(name)
	if !ok {
		return job.Errorf(job.ENotFound, "kind %q not found; GET /api/v1/kinds lists them", name)
	}
	if err := c.kv.Delete(ctx, name, 0); err != nil {
		return job.Unavailable("kind store", err)
	}
	c.apply(&store.Entry{Key: name, Deleted: true})
	if c.State(name) != (KindState{}) {
		// A kind uploaded again under the name starts unpaused, unbounded.
		if err := c.state.Delete(ctx, name, 0); err != nil {
			c.log.Warn("could not clear a deleted kind's paused state", "kind", name, "err", err)
		} else {
			c.applyState(&store.Entry{Key: name, Deleted: true})
		}
	}
	kept := c.jobs != nil && c.jobs.HasKind(name)
	for _, h := range append(slices.Clone(u.Earlier), u.Hash) {
		if c.usedElsewhere(name, h) {
			continue
		}
		if kept {
			c.retire(h, name) // its jobs' outputs are written through it
			continue
		}
		_ = c.drop(ctx, name, h)
	}
	if kept {
		c.log.Info("kind deleted; its modules stay stored while jobs of it do, for their outputs, and go with the last of them", "kind", name, "modules", len(u.Earlier)+1)
	}
	return nil
}

// drop deletes the module of hash, which no kind uploads.
func (c *Catalog) drop(ctx context.Context, kind, hash string) error {
	c.Runtime.Drop(ctx, hash)
	if err := c.Blobs.Delete(ctx, hash); err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("could not delete a module no kind needs any more; it stays stored for now", "kind", kind, "module", short(hash), "err", err)
		return err
	}
	return nil
}

// Jobs is what the catalog asks of the jobs held (the read model).
type Jobs interface {
	// HasKind reports whether a job of kind is held.
	HasKind(kind string) bool
	// OldestOfKind returns when the oldest job of kind held was made,
	// looking at jobs made before before only (found false: none).
	OldestOfKind(kind string, before time.Time) (made time.Time, found bool)
}

// KeepModulesFor makes modules stay stored while jobs need them: a
// deleted kind's while jobs reports jobs of the kind, an earlier
// version's while it reports jobs made before the version was replaced
// (sweepEarlier). Their outputs are written through the module, and a
// retry runs its version.
func (c *Catalog) KeepModulesFor(jobs Jobs) {
	c.jobs = jobs
	c.wg.Go(c.sweepLoop)
}

// JobDeleted notes that job j was deleted: its module goes if no kind
// uploads it and no job of j's kind is left.
func (c *Catalog) JobDeleted(j *job.Job) {
	if j.Module == "" {
		return
	}
	c.retire(j.Module, j.Kind)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// retire notes that module hash may be needed by jobs of kind.
func (c *Catalog) retire(hash, kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retired[hash] == nil {
		c.retired[hash] = map[string]bool{}
	}
	c.retired[hash][kind] = true
}

// sweepSettle is how long a sweep waits after a deletion, for the read
// model to see it (and the others of a batch of deletions).
const sweepSettle = time.Second

// sweepLoop deletes the retired modules no job needs any more, a moment
// after each deletion of a job, and every minute.
func (c *Catalog) sweepLoop() {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-c.run.Done():
			return
		case <-tick.C:
		case <-c.kick:
			select {
			case <-c.run.Done():
				return
			case <-time.After(sweepSettle):
			}
		}
		c.sweep()
	}
}

// sweep deletes the retired modules that no kind uploads (again) and no
// job of the kinds that uploaded them needs, then the earlier versions'
// modules no job needs.
func (c *Catalog) sweep() {
	defer c.sweepEarlier()
	c.mu.Lock()
	due := map[string][]string{}
	for h, kinds := range c.retired {
		for k := range kinds {
			due[h] = append(due[h], k)
		}
	}
	c.mu.Unlock()
	for h, kinds := range due {
		if !c.usedElsewhere("", h) {
			if slices.ContainsFunc(kinds, c.jobs.HasKind) {
				continue
			}
			ctx, cancel := context.WithTimeout(c.run, 10*time.Second)
			err := c.drop(ctx, kinds[0], h)
			cancel()
			if err != nil {
				continue // the next sweep tries again
			}
			c.log.Info("deleted the module of a deleted kind, its last job gone", "kinds", kinds, "module", short(h))
		}
		c.mu.Lock()
		// Only the kinds looked at: another retired it meanwhile.
		for _, k := range kinds {
			delete(c.retired[h], k)
		}
		if len(c.retired[h]) == 0 {
			delete(c.retired, h)
		}
		c.mu.Unlock()
	}
}

// earlierMargin is how long after an earlier version was replaced a job
// made may still have pinned it: a job pins the version its server's
// catalog held at its submit, and the servers' clocks differ, their
// catalogs learn of an upload a moment apart, and a submit takes seconds
// at most. A version is also kept that long after it was replaced, so
// that the submits under way then are held by the read model when its
// jobs are looked for.
var earlierMargin = time.Minute

// sweepEarlier deletes the modules of earlier versions of uploaded kinds
// that no job needs: no job of the kind made before the version was
// replaced (and earlierMargin) is held. Until 2026-12-07 every version's
// module stayed stored while its kind existed: a kind uploaded at each
// build of its code (3.5 MB for a Go module) grew the store, and every
// compiled copy, without end.
func (c *Catalog) sweepEarlier() {
	now := time.Now()
	for _, u := range c.List() {
		if len(u.Earlier) == 0 {
			continue
		}
		var latest time.Time
		old := false // a version replaced more than the margin ago
		for i, h := range u.Earlier {
			t := u.earlierUntil(i)
			if t.After(latest) {
				latest = t
			}
			old = old || h != u.Hash && now.After(t.Add(earlierMargin))
		}
		if !old {
			continue // no walk of the jobs
		}
		oldest, found := c.jobs.OldestOfKind(u.Name, latest.Add(earlierMargin))
		// A version replaced after latest (an upload since the record
		// was read) is younger than the margin: not unneeded.
		unneeded := func(replaced time.Time) bool {
			until := replaced.Add(earlierMargin)
			return now.After(until) && (!found || !oldest.Before(until))
		}
		for i, h := range u.Earlier {
			if h != u.Hash && unneeded(u.earlierUntil(i)) {
				c.dropEarlier(u.Name, unneeded)
				break
			}
		}
	}
}

// dropEarlier takes the earlier versions of kind name that unneeded says
// of when they were replaced out of its record, then deletes their modules
// where no other kind (or the same one again) uploads them and no deleted
// kind's jobs keep them.
func (c *Catalog) dropEarlier(name string, unneeded func(replaced time.Time) bool) {
	ctx, cancel := context.WithTimeout(c.run, 10*time.Second)
	defer cancel()
	var hashes []string // taken out, as last written
	u, rev, err := store.UpdateJSON(ctx, c.kv, name, func(u *Uploaded, found bool) (bool, error) {
		hashes = nil
		if !found {
			return false, nil // deleted meanwhile: its modules were seen to
		}
		var earlier []string
		var until []time.Time
		for i, h := range u.Earlier {
			if h != u.Hash && unneeded(u.earlierUntil(i)) {
				hashes = append(hashes, h)
			} else {
				earlier, until = append(earlier, h), append(until, u.earlierUntil(i))
			}
		}
		if len(hashes) == 0 {
			return false, nil
		}
		u.Earlier, u.EarlierUntil = earlier, until
		return true, nil
	})
	if err != nil {
		c.log.Debug("could not take earlier versions out of an uploaded kind's record; the next sweep tries again", "kind", name, "err", err)
		return
	}
	if len(hashes) == 0 {
		return
	}
	data, _ := json.Marshal(u)
	c.apply(&store.Entry{Key: name, Value: data, Revision: rev})
	for _, h := range hashes {
		c.mu.RLock()
		_, retired := c.retired[h]
		c.mu.RUnlock()
		if retired || c.usedElsewhere("", h) {
			continue
		}
		if c.drop(ctx, name, h) == nil {
			c.log.Info("deleted the module of an earlier version of an uploaded kind: no job made before it was replaced is left", "kind", name, "module", short(h))
		}
	}
}

// usedElsewhere reports whether another kind uploads the same module.
func (c *Catalog) usedElsewhere(name, hash string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for n, u := range c.kinds {
		if n != name && (u.Hash == hash || slices.Contains(u.Earlier, hash)) {
			return true
		}
	}
	return false
}
