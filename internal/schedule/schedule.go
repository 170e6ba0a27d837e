// Package schedule runs cron schedules: at each tick of a schedule's cron
// expression, one job of its spec is submitted, once in a whole cluster.
//
// Every server watches the schedules (mr_schedules) and looks for due ticks
// every quarter second. A tick is decided by a compare-and-set on the
// schedule's record (it becomes the record's pending tick), so that among
// several servers one takes it; the job is then submitted with an
// idempotency key made of the schedule and the tick, so that a second
// submit of the same tick (the server that took it died before it wrote
// the job's id back, and another took over) answers the same job; the
// record then moves to the tick and names the job. A tick not taken within
// MissedAfter of its time (no server ran: the whole cluster was down) is
// missed, and the schedule's policy applies: skip every missed tick, or
// run once for the newest of them.
package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // time zones on a machine without /usr/share/zoneinfo

	"github.com/robfig/cron/v3"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// The missed-tick policies.
const (
	Skip    = "skip"
	RunOnce = "run_once"
)

// Allow is an overlap policy, what a tick does while the job of the
// schedule's last fired tick has not finished: it fires all the same, and
// the jobs run side by side. The other, Skip, makes no job for the tick
// (counted as skipped, the reason in LastError), so that a job that runs
// longer than its schedule's period does not pile up copies of itself
// (Kubernetes' CronJob concurrencyPolicy Forbid).
const Allow = "allow"

// JobSpec is the job a schedule submits at every tick.
type JobSpec struct {
	Kind       string          `json:"kind"`
	Partitions int             `json:"partitions"`
	Params     json.RawMessage `json:"params,omitempty"`
	Input      []string        `json:"input,omitempty"`
	Reducers   int             `json:"reducers,omitempty"`
	Timeout    time.Duration   `json:"timeout,omitempty"`
	Priority   int             `json:"priority,omitempty"`
	// MaxAttempts is the spec's (0: the server's --max-attempts).
	MaxAttempts int `json:"max_attempts,omitempty"`
}

// Spec is the submit's spec of j.
func (j JobSpec) Spec() job.Spec {
	return job.Spec{Kind: j.Kind, Partitions: j.Partitions, Params: j.Params, Input: j.Input, Reducers: j.Reducers, Timeout: j.Timeout, Priority: j.Priority, MaxAttempts: j.MaxAttempts}
}

// Fired is one tick a schedule fired, and the job it created.
type Fired struct {
	Tick time.Time `json:"tick"`
	Job  string    `json:"job"`
	// Missed counts the missed ticks the job stands for (run_once).
	Missed int `json:"missed,omitempty"`
}

// Schedule is a schedule's record.
type Schedule struct {
	Name     string `json:"name"`
	Cron     string `json:"cron"`
	Timezone string `json:"timezone,omitempty"`
	Missed   string `json:"missed"`
	// Overlap is Allow or Skip; empty, from an earlier version, is Allow.
	Overlap string  `json:"overlap,omitempty"`
	Job     JobSpec `json:"job"`
	Paused  bool    `json:"paused,omitempty"`
	// CreatedAt tells a schedule from an earlier one of the same name: it
	// is part of its ticks' idempotency keys.
	CreatedAt time.Time `json:"created_at"`
	// Last is the last tick handled (fired, skipped or failed); ticks are
	// counted after it, or after CreatedAt (or the resume) when zero.
	Last time.Time `json:"last,omitzero"`
	// Pending is the tick a server took and is submitting.
	Pending *Pending `json:"pending,omitempty"`
	// Jobs lists the newest ticks fired, oldest first.
	Jobs    []Fired `json:"jobs,omitempty"`
	Fired   int     `json:"fired"`
	Skipped int     `json:"skipped,omitempty"`
	// LastError says why the last tick made no job, if it did not.
	LastError string `json:"last_error,omitempty"`
}

// Pending is a tick taken by a server.
type Pending struct {
	Tick time.Time `json:"tick"`
	// Since is when it was taken; a pending tick older than takeOver is
	// submitted by any server (with the same idempotency key).
	Since time.Time `json:"since"`
	// Missed counts the ticks it stands for (run_once after missed ticks).
	Missed int `json:"missed,omitempty"`
}

// keepJobs bounds a record's list of fired ticks.
const keepJobs = 10

var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse checks a cron expression and a time zone: five fields (minute,
// hour, day of month, month, day of week), six with seconds first, or a
// descriptor (@hourly, @every 10m).
func Parse(expr, timezone string) (cron.Schedule, *time.Location, error) {
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, nil, job.Errorf(job.EInvalid, "cron %q names a time zone: give it in timezone instead", expr)
	}
	loc := time.UTC
	if timezone != "" {
		var err error
		if loc, err = time.LoadLocation(timezone); err != nil || timezone == "Local" {
			return nil, nil, job.Errorf(job.EInvalid, "timezone %q is not an IANA time zone such as \"Europe/Paris\" or \"UTC\"", timezone)
		}
	}
	s, err := parser.Parse(expr)
	if err != nil {
		return nil, nil, job.Errorf(job.EInvalid, "cron %q: %v; give five fields (minute hour day-of-month month day-of-week, such as \"*/5 * * * *\"), six with seconds first, or a descriptor such as \"@hourly\" or \"@every 10m\"", expr, err)
	}
	if s.Next(time.Now().In(loc)).IsZero() {
		return nil, nil, job.Errorf(job.EInvalid, "cron %q never fires", expr)
	}
	return s, loc, nil
}

// Check is Parse for a new schedule, which is held to more: an @every of
// a whole number of seconds, at least one. (The parser makes any interval
// under a second one second and cuts the rest of a second off: "@every
// 0s" fired every second. A schedule stored so before keeps firing so.)
func Check(expr, timezone string) error {
	if every, ok := strings.CutPrefix(expr, "@every "); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(every)); err == nil && (d < time.Second || d%time.Second != 0) {
			return job.Errorf(job.EInvalid, "cron %q: @every takes a whole number of seconds, at least 1s, such as \"@every 90s\" or \"@every 10m\"", expr)
		}
	}
	_, _, err := Parse(expr, timezone)
	return err
}

// Config is what a Scheduler needs.
type Config struct {
	KV store.KV
	// Submit validates, admits and submits a job (package service).
	Submit func(ctx context.Context, spec job.Spec) (*job.Job, error)
	Logger *slog.Logger
	// MissedAfter is how late a tick may be taken before it counts as
	// missed (1 minute when zero).
	MissedAfter time.Duration
	// Every is how often due ticks are looked for (250 ms when zero).
	Every time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Unfinished reports whether a job has not finished yet, for the
	// overlap policy Skip (SetUnfinished; nil: every job has finished).
	Unfinished func(id string) bool
}

// Scheduler fires the due ticks of every schedule, and stores and changes
// schedules.
type Scheduler struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	scheds map[string]entry

	stop context.CancelFunc
	wg   sync.WaitGroup
}

type entry struct {
	s   Schedule
	rev uint64
	// cs and loc are s's expression and time zone, parsed once per record
	// (nil when they do not parse: a record no Add wrote).
	cs  cron.Schedule
	loc *time.Location
}

// newEntry is the entry of record sc at revision rev.
func newEntry(sc Schedule, rev uint64) entry {
	cs, loc, _ := Parse(sc.Cron, sc.Timezone)
	return entry{s: sc, rev: rev, cs: cs, loc: loc}
}

// New returns a scheduler; Start makes it follow the schedules and fire
// them.
func New(cfg Config) *Scheduler {
	if cfg.MissedAfter <= 0 {
		cfg.MissedAfter = time.Minute
	}
	if cfg.Every <= 0 {
		cfg.Every = 250 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Scheduler{cfg: cfg, log: cfg.Logger, scheds: map[string]entry{}}
}

// SetSubmit sets Config.Submit, for a service made after the scheduler.
func (s *Scheduler) SetSubmit(fn func(ctx context.Context, spec job.Spec) (*job.Job, error)) {
	s.cfg.Submit = fn
}

// SetUnfinished sets Config.Unfinished, for a read model made after the
// scheduler; before Start.
func (s *Scheduler) SetUnfinished(fn func(id string) bool) {
	s.cfg.Unfinished = fn
}

// Start reads the schedules, follows their changes and fires their ticks;
// it returns once the stored ones are read.
func (s *Scheduler) Start(ctx context.Context) error {
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	if err := store.Follow(ctx, run, s.cfg.KV, &s.wg, s.apply); err != nil {
		_ = s.Stop(ctx)
		return fmt.Errorf("watch schedules: %w", err)
	}
	s.wg.Go(func() { s.loop(run) })
	return nil
}

// Stop stops following and firing.
func (s *Scheduler) Stop(context.Context) error {
	if s.stop != nil {
		s.stop()
		s.wg.Wait()
	}
	return nil
}

func (s *Scheduler) apply(e *store.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Deleted {
		delete(s.scheds, e.Key)
		return
	}
	var sc Schedule
	if err := json.Unmarshal(e.Value, &sc); err != nil {
		s.log.Warn("skipping an unreadable schedule's record", "schedule", e.Key, "err", err)
		return
	}
	if cur, ok := s.scheds[e.Key]; !ok || cur.rev < e.Revision {
		s.scheds[e.Key] = newEntry(sc, e.Revision)
	}
}

// List returns the schedules, by name.
func (s *Scheduler) List() []Schedule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Schedule, 0, len(s.scheds))
	for _, e := range s.scheds {
		out = append(out, e.s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns schedule name.
func (s *Scheduler) Get(name string) (Schedule, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.scheds[name]
	return e.s, ok
}

// Next returns when schedule sc fires next (zero when paused).
func Next(sc Schedule, now time.Time) time.Time {
	if sc.Paused {
		return time.Time{}
	}
	if sc.Pending != nil {
		return sc.Pending.Tick
	}
	cs, loc, err := Parse(sc.Cron, sc.Timezone)
	if err != nil {
		return time.Time{}
	}
	next := cs.Next(from(sc).In(loc))
	if next.Before(now) {
		return now // due: taken within a moment
	}
	return next.UTC()
}

// from is the time after which sc's next tick comes.
func from(sc Schedule) time.Time {
	if sc.Last.IsZero() {
		return sc.CreatedAt
	}
	return sc.Last
}

// Add stores a new schedule, which the caller validated (its job spec
// too); its first tick is the first after now.
func (s *Scheduler) Add(ctx context.Context, sc Schedule) (Schedule, error) {
	if err := Check(sc.Cron, sc.Timezone); err != nil {
		return Schedule{}, err
	}
	var err error
	if sc.Missed, err = policy("missed", sc.Missed, "ticks missed while no server ran", Skip, RunOnce); err != nil {
		return Schedule{}, err
	}
	if sc.Overlap, err = policy("overlap", sc.Overlap, "a tick while the job of the last one runs", Allow, Skip); err != nil {
		return Schedule{}, err
	}
	sc.CreatedAt = s.cfg.Now().UTC()
	sc.Last, sc.Pending, sc.Jobs, sc.Fired, sc.Skipped, sc.LastError = time.Time{}, nil, nil, 0, 0, ""
	data, _ := json.Marshal(sc)
	rev, err := s.cfg.KV.Create(ctx, sc.Name, data)
	if errors.Is(err, store.ErrConflict) {
		return Schedule{}, job.Errorf(job.EConflict, "schedule %q exists; delete it first, or choose another name", sc.Name)
	}
	if err != nil {
		return Schedule{}, job.Unavailable("schedule store", err)
	}
	s.apply(&store.Entry{Key: sc.Name, Value: data, Revision: rev})
	return sc, nil
}

// policy returns v, the value of field name, or its default (the first
// of allowed) when v is empty; what says what the field decides.
func policy(name, v, what string, allowed ...string) (string, error) {
	switch {
	case v == "":
		return allowed[0], nil
	case slices.Contains(allowed, v):
		return v, nil
	}
	return "", job.Errorf(job.EInvalid, "%s must be %q or %q (%s; default %q), got %q", name, allowed[0], allowed[1], what, allowed[0], v)
}

// Delete removes schedule name; the jobs it created stay.
func (s *Scheduler) Delete(ctx context.Context, name string) error {
	if _, ok := s.Get(name); !ok {
		return notFound(name)
	}
	if err := s.cfg.KV.Delete(ctx, name, 0); err != nil {
		return job.Unavailable("schedule store", err)
	}
	s.apply(&store.Entry{Key: name, Deleted: true})
	return nil
}

func notFound(name string) error {
	return job.Errorf(job.ENotFound, "schedule %q not found; GET /api/v1/schedules lists them", name)
}

// Pause stops schedule name from firing; Resume starts it again from the
// next tick after now: ticks while it was paused are not fired.
func (s *Scheduler) Pause(ctx context.Context, name string) (Schedule, error) {
	return s.change(ctx, name, func(sc *Schedule) bool {
		if sc.Paused {
			return false
		}
		sc.Paused = true
		return true
	})
}

// Resume: see Pause.
func (s *Scheduler) Resume(ctx context.Context, name string) (Schedule, error) {
	return s.change(ctx, name, func(sc *Schedule) bool {
		if !sc.Paused {
			return false
		}
		sc.Paused, sc.Last = false, s.cfg.Now().UTC()
		return true
	})
}

// change applies fn to schedule name's record with a compare-and-set,
// again on a conflict; fn returns false for no change.
func (s *Scheduler) change(ctx context.Context, name string, fn func(*Schedule) bool) (Schedule, error) {
	var changed bool
	sc, rev, err := store.UpdateJSON(ctx, s.cfg.KV, name, func(sc *Schedule, found bool) (bool, error) {
		if !found {
			return false, notFound(name)
		}
		changed = fn(sc)
		return changed, nil
	})
	if job.ErrorCode(err) == job.ENotFound {
		return Schedule{}, err
	}
	if err != nil {
		return Schedule{}, job.Unavailable("schedule store", err)
	}
	if changed {
		data, _ := json.Marshal(sc)
		s.apply(&store.Entry{Key: name, Value: data, Revision: rev})
	}
	return sc, nil
}

// storeTimeout bounds one step of firing a tick.
const storeTimeout = 10 * time.Second

// takeOver is how old a pending tick must be before a server other than
// the one that took it submits it.
const takeOver = 10 * time.Second

func (s *Scheduler) loop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		names := make([]string, 0, len(s.scheds))
		for n := range s.scheds {
			names = append(names, n)
		}
		s.mu.Unlock()
		for _, n := range names {
			// Catch up tick by tick, a few per round so that one schedule
			// does not hold up the others.
			for range 16 {
				if ctx.Err() != nil || !s.step(ctx, n) {
					break
				}
			}
		}
	}
}

// step handles the next due tick of schedule name, if there is one, and
// reports whether it did.
func (s *Scheduler) step(ctx context.Context, name string) bool {
	e, ok := s.lookup(name)
	if !ok {
		return false
	}
	sc, now := e.s, s.cfg.Now()
	if p := sc.Pending; p != nil {
		return s.fire(ctx, e, p, false)
	}
	if sc.Paused {
		return false
	}
	cs := e.cs
	if cs == nil {
		return false // not stored by Add
	}
	next := cs.Next(from(sc).In(e.loc))
	if next.IsZero() || next.After(now) {
		return false
	}
	p := &Pending{Tick: next.UTC(), Since: now.UTC()}
	if now.Sub(next) > s.cfg.MissedAfter {
		// Missed ticks: count them up to the newest one that is missed.
		n := 1
		for t := cs.Next(next); !t.IsZero() && now.Sub(t) > s.cfg.MissedAfter && n < maxMissedScan; t = cs.Next(t) {
			p.Tick, n = t.UTC(), n+1
		}
		p.Missed = n
		if sc.Missed != RunOnce {
			ctx, cancel := context.WithTimeout(ctx, storeTimeout)
			defer cancel()
			if _, ok := s.update(ctx, e, func(sc *Schedule) { sc.Last, sc.Skipped = p.Tick, sc.Skipped+n }); ok {
				s.log.Info("schedule skipped ticks missed while no server ran it (its missed policy is skip)",
					"schedule", name, "missed", n, "last_missed", p.Tick)
			}
			return true
		}
	}
	if prev, ok := s.running(sc); ok {
		ctx, cancel := context.WithTimeout(ctx, storeTimeout)
		defer cancel()
		if _, ok := s.update(ctx, e, func(sc *Schedule) {
			sc.Last, sc.Skipped = p.Tick, sc.Skipped+max(p.Missed, 1)
			sc.LastError = fmt.Sprintf("the tick of %s made no job: the job of an earlier tick, %s, had not finished (overlap: skip)", p.Tick.Format(time.RFC3339), prev)
		}); ok {
			s.log.Info("schedule skipped a tick: the job of an earlier tick has not finished (its overlap policy is skip)", "schedule", name, "tick", p.Tick, "job", prev)
		}
		return true
	}
	ctx2, cancel := context.WithTimeout(ctx, storeTimeout)
	e, ok = s.update(ctx2, e, func(sc *Schedule) { sc.Pending = p })
	cancel()
	if !ok {
		return false // another server took it, or the store failed: next round
	}
	return s.fire(ctx, e, p, true)
}

// running returns the job of sc's last fired tick when sc's overlap policy
// is Skip and that job has not finished.
func (s *Scheduler) running(sc Schedule) (string, bool) {
	if sc.Overlap != Skip || len(sc.Jobs) == 0 || s.cfg.Unfinished == nil {
		return "", false
	}
	last := sc.Jobs[len(sc.Jobs)-1].Job
	return last, s.cfg.Unfinished(last)
}

// maxMissedScan bounds the count of missed ticks (a schedule of every
// second missed for days).
const maxMissedScan = 1_000_000

// fire submits pending tick p of e's schedule and records its job. own
// says this server took it just now; a tick another server took (or this
// one, before a failure) waits takeOver: that server may still be
// submitting it.
func (s *Scheduler) fire(ctx context.Context, e entry, p *Pending, own bool) bool {
	now := s.cfg.Now()
	if !own && now.Sub(p.Since) < takeOver {
		return false
	}
	sc := e.s
	spec := sc.Job.Spec()
	spec.Schedule, spec.Tick = sc.Name, p.Tick
	spec.IdempotencyKey = fmt.Sprintf("schedule\x00%s\x00%d\x00%d", sc.Name, sc.CreatedAt.UnixNano(), p.Tick.UnixNano())
	j, err := s.cfg.Submit(ctx, spec)
	if ctx.Err() != nil {
		// Stopping: the tick is given back at once, so that the next
		// server (or this one, started again) need not wait takeOver. The
		// submit may have stored its job; taken again, the same key
		// answers it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		s.update(ctx, e, func(sc *Schedule) { sc.Pending = nil })
		return false
	}
	switch job.ErrorCode(err) {
	case "":
	case job.EUnavailable, job.EBusy, job.EInternal:
		// The store or the queue bound: taken again next round, by this
		// server or, past takeOver, another; until the tick is missed. A
		// stand-in for missed ticks (run_once) is late by its nature: it
		// counts from when it was taken, else a failure of its first
		// submit (a store not ready yet after the cluster's restart) lost
		// it for good.
		late := p.Tick
		if p.Missed > 0 {
			late = p.Since
		}
		if now.Sub(late) > s.cfg.MissedAfter {
			break
		}
		s.log.Warn("schedule could not submit its job; trying again", "schedule", sc.Name, "tick", p.Tick, "err", err)
		return false
	default:
		s.log.Warn("schedule's job was refused; the tick is skipped: change the schedule (delete it and add it again) or what it reads",
			"schedule", sc.Name, "tick", p.Tick, "err", job.ErrorMessage(err))
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	_, ok := s.update(ctx, e, func(sc *Schedule) {
		sc.Last, sc.Pending = p.Tick, nil
		if err != nil {
			sc.LastError = fmt.Sprintf("the tick of %s made no job: %s", p.Tick.Format(time.RFC3339), job.ErrorMessage(err))
			return
		}
		sc.Fired, sc.LastError = sc.Fired+1, ""
		sc.Jobs = append(sc.Jobs, Fired{Tick: p.Tick, Job: j.ID, Missed: p.Missed})
		if len(sc.Jobs) > keepJobs {
			sc.Jobs = append([]Fired(nil), sc.Jobs[len(sc.Jobs)-keepJobs:]...)
		}
	})
	if ok && err == nil {
		s.log.Info("schedule fired", "schedule", sc.Name, "tick", p.Tick, "job", j.ID, "missed", p.Missed)
	}
	return ok
}

func (s *Scheduler) lookup(name string) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.scheds[name]
	return e, ok
}

// update applies fn to e's record with a compare-and-set on its revision;
// it reports false when another server changed it first (the watch brings
// its change) or the store failed.
func (s *Scheduler) update(ctx context.Context, e entry, fn func(*Schedule)) (entry, bool) {
	sc := e.s
	if sc.Pending != nil {
		p := *sc.Pending
		sc.Pending = &p
	}
	sc.Jobs = append([]Fired(nil), sc.Jobs...)
	fn(&sc)
	data, _ := json.Marshal(sc)
	rev, err := s.cfg.KV.Update(ctx, sc.Name, data, e.rev)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("could not update a schedule's record; trying again", "schedule", sc.Name, "err", err)
		}
		return e, false
	}
	s.apply(&store.Entry{Key: sc.Name, Value: data, Revision: rev})
	return newEntry(sc, rev), true
}
