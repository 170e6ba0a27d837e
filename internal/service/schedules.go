package service

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/schedule"
)

// AddSchedule stores a cron schedule that submits a job of spec at every
// tick. The spec is checked now (kind, params, partitions, the datasets it
// reads), as a submit would check it, so that a mistake shows at once and
// not at the first tick.
func (s *Service) AddSchedule(ctx context.Context, sc schedule.Schedule, spec job.Spec) (client.Schedule, error) {
	name := sc.Name
	if s.cfg.Schedules == nil {
		return client.Schedule{}, job.Errorf(job.EConflict, "this server runs no schedules")
	}
	if err := job.ValidName("schedule", name); err != nil {
		return client.Schedule{}, err
	}
	if !spec.RunAt.IsZero() {
		return client.Schedule{}, job.Errorf(job.EInvalid, "job: a schedule's job runs at its ticks; remove run_at and delay")
	}
	check := spec
	if k, _ := s.cfg.Kinds.Lookup(spec.Kind); k.ReadsData && check.Partitions == 0 && len(check.Input) > 0 {
		check.Partitions = 1 // chosen from the input at each tick (partitionsFor)
	}
	if err := s.cfg.Kinds.Validate(check, s.cfg.MaxPartitions); err != nil {
		return client.Schedule{}, job.Errorf(job.EInvalid, "job: %s", job.ErrorMessage(err))
	}
	if k, _ := s.cfg.Kinds.Lookup(spec.Kind); k.ReadsData {
		if _, err := s.cfg.Datasets.Resolve(ctx, spec.Input); err != nil {
			return client.Schedule{}, err
		}
	}
	if err := s.writable(); err != nil {
		return client.Schedule{}, err
	}
	sc.Job = schedule.JobSpec{Kind: spec.Kind, Partitions: spec.Partitions, Params: spec.Params, Input: spec.Input, Reducers: spec.Reducers, Timeout: spec.Timeout, Priority: spec.Priority, MaxAttempts: spec.MaxAttempts}
	sc, err := s.cfg.Schedules.Add(ctx, sc)
	if err != nil {
		return client.Schedule{}, err
	}
	return scheduleResource(sc, time.Now()), nil
}

// Schedules returns every schedule, by name.
func (s *Service) Schedules() []client.Schedule {
	out := []client.Schedule{}
	if s.cfg.Schedules == nil {
		return out
	}
	now := time.Now()
	for _, sc := range s.cfg.Schedules.List() {
		out = append(out, scheduleResource(sc, now))
	}
	return out
}

// Schedule returns schedule name.
func (s *Service) Schedule(name string) (client.Schedule, error) {
	if s.cfg.Schedules != nil {
		if sc, ok := s.cfg.Schedules.Get(name); ok {
			return scheduleResource(sc, time.Now()), nil
		}
	}
	return client.Schedule{}, job.Errorf(job.ENotFound, "schedule %s not found; GET /api/v1/schedules lists them", job.Quote(name))
}

// PauseSchedule stops schedule name from firing (pause false: starts it
// again, from its next tick after now), as PauseKind does a kind.
func (s *Service) PauseSchedule(ctx context.Context, name string, pause bool) (client.Schedule, error) {
	if _, err := s.Schedule(name); err != nil {
		return client.Schedule{}, err
	}
	change := s.cfg.Schedules.Pause
	if !pause {
		change = s.cfg.Schedules.Resume
	}
	sc, err := change(ctx, name)
	if err != nil {
		return client.Schedule{}, err
	}
	return scheduleResource(sc, time.Now()), nil
}

// DeleteSchedule deletes schedule name; the jobs it created stay.
func (s *Service) DeleteSchedule(ctx context.Context, name string) error {
	if _, err := s.Schedule(name); err != nil {
		return err
	}
	return s.cfg.Schedules.Delete(ctx, name)
}

// scheduleResource is the API's representation of sc.
func scheduleResource(sc schedule.Schedule, now time.Time) client.Schedule {
	out := client.Schedule{
		Name: sc.Name, Cron: sc.Cron, Timezone: sc.Timezone, Missed: sc.Missed, Overlap: sc.Overlap, Paused: sc.Paused, CreatedAt: sc.CreatedAt,
		Fired: sc.Fired, Skipped: sc.Skipped, LastError: sc.LastError, Jobs: []client.ScheduledJob{},
		Job: client.Spec{Kind: sc.Job.Kind, Partitions: sc.Job.Partitions, Input: sc.Job.Input, Reducers: sc.Job.Reducers, MaxAttempts: sc.Job.MaxAttempts},
	}
	if out.Timezone == "" {
		out.Timezone = "UTC"
	}
	if out.Overlap == "" {
		out.Overlap = schedule.Allow // stored by an earlier version
	}
	if len(sc.Job.Params) > 0 {
		_ = json.Unmarshal(sc.Job.Params, &out.Job.Params)
	}
	out.Job.Priority = job.ShownPriority(sc.Job.Priority)
	if sc.Job.Timeout > 0 {
		out.Job.Timeout = sc.Job.Timeout.String()
	}
	if next := schedule.Next(sc, now); !next.IsZero() {
		out.Next = &next
	}
	if !sc.Last.IsZero() {
		last := sc.Last
		out.LastTick = &last
	}
	for _, f := range slices.Backward(sc.Jobs) {
		out.Jobs = append(out.Jobs, client.ScheduledJob{Tick: f.Tick, Job: f.Job, Missed: f.Missed})
	}
	return out
}
