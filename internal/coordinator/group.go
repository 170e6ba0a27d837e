package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Groups (docs/design-groups.md, job/group.go): with Config.GroupBatches,
// a batch's small jobs are stored as groups of up to job.MaxGroup, each
// one record and its tasks, and the jobs are the groups' members. A
// member's id names its group: every read of a job by id looks for a
// record of that id first (a member a retry stored on its own, see
// complete), then in the group's.

// groupSpecs returns how specs split into groups, as the ranges of specs
// each group holds, when they are all jobs a group may hold; nil when
// they are to be stored one record a job.
func (c *Coordinator) groupSpecs(specs []job.Spec) [][2]int {
	if len(specs) < 2 {
		return nil
	}
	for _, s := range specs {
		if !c.groupable(s) {
			return nil
		}
	}
	var out [][2]int
	start, params := 0, 0
	for i, s := range specs {
		if i > start && (i-start == job.MaxGroup || !job.SameGroup(specs[start], s) || params+len(s.Params) > job.MaxGroupParams) {
			out = append(out, [2]int{start, i})
			start, params = i, 0
		}
		params += len(s.Params)
	}
	return append(out, [2]int{start, len(specs)})
}

// groupable reports whether a job of spec may be stored in a group.
func (c *Coordinator) groupable(s job.Spec) bool {
	if !c.cfg.GroupBatches {
		return false
	}
	k, ok := c.cfg.Kinds.Lookup(s.Kind)
	return ok && job.Groupable(s, k.ReadsData) && k.Module == "" && !c.paused(s.Kind) && c.laneOf(s.Kind) == ""
}

// gatherer gathers the single submits of small jobs that come while a
// store of earlier ones is under way, and stores them together, as a
// batch is (group commit): each is a job of a group, and a submit costs
// the store a share of one record's write, not a write of its own (a
// keyed submit also its key's claim: gatheredKeyed). Keyed submits are
// gathered apart. At most maxGatherWrites such stores are under way at
// once (maxKeyedWrites for keyed ones); a submit waits for the store
// under way and its own. (One store at a time gathered more:
// 9,600–10,200 submits a second from 16 clients against 7,400–9,200
// with two, alternating runs on 2026-12-06. A keyed store makes two
// round trips, its claims then its group, and two at once ran keyed
// submits at 5,384–6,222 a second against 4,710–4,933 with one,
// alternating runs on 2026-12-07.)
type gatherer struct {
	mu      sync.Mutex
	pending []*gatheredSubmit
	writes  int
}

// maxGatherWrites and maxKeyedWrites bound the stores of gathered submits
// under way at once.
const (
	maxGatherWrites = 1
	maxKeyedWrites  = 2
)

type gatheredSubmit struct {
	spec job.Spec
	done chan struct{}
	j    *job.Job
	err  error
}

// gathered submits spec with the other single submits gathered with it,
// all or nothing: an error fails all of them, and none is stored (but a
// keyed submit whose retry was answered its job meanwhile, which keeps
// it: gatheredKeyed). It waits for the store's answer whatever ctx says
// (the store has a deadline of its own): a submit answered a failure
// must not be stored after all.
func (c *Coordinator) gathered(ctx context.Context, spec job.Spec) (*job.Job, error) {
	g := &gatheredSubmit{spec: spec, done: make(chan struct{})}
	ga, most := &c.gather, maxGatherWrites
	if spec.IdempotencyKey != "" {
		ga, most = &c.gatherKeyed, maxKeyedWrites
	}
	ga.mu.Lock()
	ga.pending = append(ga.pending, g)
	start := ga.writes < most
	if start {
		ga.writes++
	}
	ga.mu.Unlock()
	if start {
		c.wg.Go(func() { c.storeGathered(context.WithoutCancel(ctx), ga) })
	}
	<-g.done
	return g.j, g.err
}

// storeGathered stores the submits gathered in ga until none waits.
func (c *Coordinator) storeGathered(ctx context.Context, ga *gatherer) {
	for {
		ga.mu.Lock()
		// A group's worth at most: a store's size and time stay those of
		// one group whatever the number of clients.
		batch := ga.pending[:min(len(ga.pending), job.MaxGroup)]
		ga.pending = ga.pending[len(batch):]
		if len(ga.pending) == 0 {
			ga.pending = nil
		}
		if len(batch) == 0 {
			ga.writes--
			ga.mu.Unlock()
			return
		}
		ga.mu.Unlock()
		specs := make([]job.Spec, len(batch))
		keyed := false
		for i, g := range batch {
			specs[i] = g.spec
			keyed = keyed || g.spec.IdempotencyKey != ""
		}
		if !keyed {
			jobs, err := c.submitAll(ctx, specs, "", "gathered\x00")
			for i, g := range batch {
				if err == nil {
					g.j = jobs[i]
				}
				g.err = err
				close(g.done)
			}
			continue
		}
		jobs, errs, alone := c.gatheredKeyed(ctx, specs)
		if alone {
			// A key taken: each submit on its own, as without gathering.
			parallel(len(batch), func(i int) {
				var got []*job.Job
				got, errs[i] = c.submitAll(ctx, specs[i:i+1], specs[i].IdempotencyKey, "")
				if errs[i] == nil {
					jobs[i] = got[0]
				}
			})
		}
		for i, g := range batch {
			g.j, g.err = jobs[i], errs[i]
			close(g.done)
		}
	}
}

// gatheredKeyed stores gathered single submits of which some carry an
// Idempotency-Key as one batch, in groups: the members' ids are made
// first, and each key is claimed for its own job (one create each, at
// once). It returns each submit's job or error. A key that an earlier
// submit holds (a retry's) sends the batch down the single submits' own
// path, one by one (alone): the keys it claimed are freed first, nothing
// stored, so a retry that met one of them only waited; so does a batch of
// one (no group).
//
// When the store fails, each key is marked withdrawing (markWithdrawing)
// before anything is withdrawn, as a single keyed submit's is. If none
// was answered to a retry meanwhile the groups go whole, as a batch's
// do; else they stay, each job answered its client, and the others go
// alone (withdrawMember: a retry that meets their keys marked withdrawing
// withdraws them alone too, withdrawAll).
func (c *Coordinator) gatheredKeyed(ctx context.Context, specs []job.Spec) (jobs []*job.Job, errs []error, alone bool) {
	jobs, errs = make([]*job.Job, len(specs)), make([]error, len(specs))
	ranges := c.groupSpecs(specs)
	if ranges == nil {
		return jobs, errs, true // one submit: no group
	}
	timeout := timeoutOf(specs)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sub, release := c.prepare(specs, ranges, time.Now())
	defer release()
	claims := make([]*keyClaim, len(specs))
	var keyed []int
	for i, spec := range specs {
		if spec.IdempotencyKey != "" {
			keyed = append(keyed, i)
			claims[i] = &keyClaim{key: spec.IdempotencyKey, fingerprint: fingerprint(specs[i : i+1]), ids: sub.ids[i : i+1], specs: specs[i : i+1], timeout: timeout}
		}
	}
	revs := make([]uint64, len(specs))
	cerrs := make([]error, len(specs))
	parallel(len(keyed), func(k int) {
		i := keyed[k]
		revs[i], cerrs[i] = c.cfg.Store.Idempotency.Create(ctx, idempotencyKey(claims[i].key), claims[i].value(false))
	})
	if slices.ContainsFunc(keyed, func(i int) bool { return cerrs[i] != nil }) {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer dcancel()
		parallel(len(keyed), func(k int) {
			if i := keyed[k]; cerrs[i] == nil {
				if err := c.cfg.Store.Idempotency.Delete(dctx, idempotencyKey(claims[i].key), revs[i]); err != nil && !errors.Is(err, store.ErrConflict) {
					// Its retry waits until the claim is surely over
					// (claimKey), then takes the key.
					c.log.Debug("could not free the idempotency key of a gathered submit sent on alone", "job", sub.ids[i], "err", err)
				}
			}
		})
		return jobs, errs, true
	}
	recorded, err := c.submit(ctx, sub.recordSpecs, sub.records, false)
	if err == nil {
		copy(jobs, members(sub.records))
		if ctx.Err() != nil {
			// Stored past its deadline: a retry may have taken a key over
			// meanwhile with a job of its own (stillHeld); this one is
			// then no one's.
			for _, i := range keyed {
				if !c.stillHeld(claims[i]) {
					jobs[i], errs[i] = nil, job.Errorf(job.EUnavailable, "the submit took longer than its %s, and a retry with its Idempotency-Key made the job it asked for meanwhile: send the same request again to get it", timeout.Round(time.Millisecond))
					c.wg.Go(func() { c.withdrawMemberLater(sub.ids[i], nil) })
				}
			}
		}
		return jobs, errs, false
	}
	marks := make([]int, len(specs))
	parallel(len(keyed), func(k int) {
		i := keyed[k]
		marks[i] = c.markWithdrawing(claims[i], time.Second)
	})
	whole := true // nothing of it answered: the groups go whole
	for i := range specs {
		errs[i] = err
		if claims[i] == nil || marks[i] == keyWithdraw {
			continue
		}
		whole = false
		if marks[i] == keyAnswered {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			if again, rerr := c.replay(rctx, sub.ids[i:i+1]); rerr == nil {
				again[0].Replayed = false
				jobs[i], errs[i] = again[0], nil
			}
			rcancel()
		}
	}
	withdrawn := make(chan struct{})
	c.wg.Go(func() {
		defer close(withdrawn)
		if whole {
			if c.withdrawRecords(sub, recorded) {
				for _, i := range keyed {
					c.releaseWithdrawn(claims[i])
				}
			}
			return
		}
		parallel(len(specs), func(i int) {
			if claims[i] != nil && marks[i] == keyAnswered {
				return
			}
			if claims[i] != nil && marks[i] == keyUnknown {
				if marks[i] = c.markLater(claims[i]); marks[i] != keyWithdraw {
					return // answered to a retry, and kept; or never known
				}
			}
			c.withdrawMemberLater(sub.ids[i], claims[i])
		})
	})
	select {
	case <-withdrawn:
	case <-time.After(withdrawWait):
	}
	return jobs, errs, false
}

// withdrawMemberLater withdraws member id of a failed submit alone
// (withdrawMember), trying again while the store does not answer, for up
// to orphanAge; then frees claim, its key, when it has one.
func (c *Coordinator) withdrawMemberLater(id string, claim *keyClaim) {
	group, n, _ := job.GroupOf(id)
	err := c.storeAgain(time.Now().Add(orphanAge), func(ctx context.Context) error { return c.withdrawMember(ctx, id, group, n) })
	if err != nil {
		c.log.Warn("could not remove a job of a group whose submit failed; it may still run", "job", id, "err", err)
		return
	}
	if claim != nil {
		c.releaseWithdrawn(claim)
	}
}

// errWithdrawn is a member found withdrawn, or deleted, already.
var errWithdrawn = errors.New("withdrawn already")

// withdrawMember removes member n of group, a job of a failed submit
// whose group stays (another job of it was answered to its client):
// canceled if unfinished, and deleted, in its group; its task is dropped
// when met, or runs and its result is dropped. A group without a record
// was never stored, and no job of it answered: it is withdrawn whole.
func (c *Coordinator) withdrawMember(ctx context.Context, id, group string, n int) error {
	now := time.Now().UTC()
	g, err := c.onMember(ctx, id, group, func(g *job.Job) error {
		if n > len(g.Members) || g.Members[n-1].Deleted || g.Members[n-1].Moved {
			return errWithdrawn
		}
		if !g.Members[n-1].State.Terminal() {
			if err := g.CancelMember(n, now); err != nil {
				return err
			}
		}
		g.Members[n-1].Deleted = true
		return nil
	})
	switch {
	case errors.Is(err, errWithdrawn):
		return nil
	case job.ErrorCode(err) == job.ENotFound:
		for _, step := range c.withdrawSteps(group, true, "") {
			if err := step.fn(ctx); err != nil {
				return err
			}
		}
		return nil
	case err != nil:
		return err
	}
	if err := c.cfg.Store.Notices.CancelJob(id, g.Epoch); err != nil {
		c.log.Debug("could not tell workers to stop the task of a withdrawn job; it runs to its end, and its result is dropped", "job", id, "err", err)
	}
	if !allGone(g) {
		if g.State.Terminal() {
			c.stopTasks(ctx, g) // its last job ended: the others' tasks go
		}
		return nil
	}
	return c.remove(ctx, g)
}

// allGone reports whether group g has no job left: each deleted, or moved
// to a record of its own.
func allGone(g *job.Job) bool {
	for _, m := range g.Members {
		if !m.Deleted && !m.Moved {
			return false
		}
	}
	return true
}

// makeGroups returns the records of the groups of specs (groupSpecs) and
// the specs to store them with, and sets ids to their members'.
func makeGroups(specs []job.Spec, ranges [][2]int, now time.Time, ids []string) (records []*job.Job, recordSpecs []job.Spec) {
	for _, r := range ranges {
		g := job.NewGroup(job.NewGroupID(specs[r[0]].Kind, now), specs[r[0]:r[1]], now.UTC())
		records = append(records, g)
		s := specs[r[0]]
		s.Partitions, s.Params = r[1]-r[0], nil
		recordSpecs = append(recordSpecs, s)
		for n := 1; n <= r[1]-r[0]; n++ {
			ids[r[0]+n-1] = job.MemberID(g.ID, n)
		}
	}
	return records, recordSpecs
}

// withGroups returns ids, jobs of a submit, and the groups of those that
// are groups' members: what a withdraw of the submit removes (a member
// has its own record only when a retry stored it alone).
func withGroups(ids []string) []string {
	out := slices.Clone(ids)
	seen := map[string]bool{}
	for _, id := range ids {
		if g, _, ok := job.GroupOf(id); ok && !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out
}

// membersAlone splits ids, jobs of a failed submit, into those withdrawn
// as a submit's own (rest: jobs, and members of groups that ids name
// whole) and the members of groups that have jobs ids do not name: a
// gathered single submit's job, which goes alone. A group not stored
// goes whole.
func (c *Coordinator) membersAlone(ctx context.Context, ids []string) (rest, alone []string, err error) {
	named := map[string]int{}
	for _, id := range ids {
		if g, _, ok := job.GroupOf(id); ok {
			named[g]++
		}
	}
	size := map[string]int{}
	for g := range named {
		j, _, err := c.getRecord(ctx, g)
		switch {
		case job.ErrorCode(err) == job.ENotFound:
		case err != nil:
			return nil, nil, err
		default:
			size[g] = len(j.Members)
		}
	}
	for _, id := range ids {
		if g, _, ok := job.GroupOf(id); ok && named[g] < size[g] {
			alone = append(alone, id)
		} else {
			rest = append(rest, id)
		}
	}
	return rest, alone, nil
}

// members returns the members of groups, in order.
func members(groups []*job.Job) []*job.Job {
	var out []*job.Job
	for _, g := range groups {
		out = append(out, g.MemberJobs()...)
	}
	return out
}

// getMember reads member n of group (through reads, which reads each
// group once): ENotFound when the group is not stored or has no such
// member.
func (c *Coordinator) getMember(ctx context.Context, id, group string, n int, reads *store.GroupReads) (*job.Job, uint64, error) {
	g, rev, err := reads.Get(ctx, group)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, 0, job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
	case err != nil:
		return nil, 0, unavailable(fmt.Errorf("read the group of job %s: %w", id, err))
	case n > len(g.Members) || g.Members[n-1].Deleted:
		return nil, 0, job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
	}
	return g.MemberJob(n), rev, nil
}

// ownRecord reports whether job id has a record of its own: a member of a
// group has not, unless a retry of its batch stored it on its own.
func (c *Coordinator) ownRecord(ctx context.Context, id string) (bool, error) {
	if !job.IsMember(id) {
		return true, nil
	}
	_, _, err := c.cfg.Store.Jobs.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, unavailable(fmt.Errorf("read job %s: %w", id, err))
	}
	return true, nil
}

// cancelMember cancels member n of group, and tells the workers to stop
// its task.
func (c *Coordinator) cancelMember(ctx context.Context, id, group string, n int) (*job.Job, error) {
	g, err := c.onMember(ctx, id, group, func(g *job.Job) error { return g.CancelMember(n, time.Now().UTC()) })
	if err != nil {
		return nil, err
	}
	if err := c.cfg.Store.Notices.CancelJob(id, g.Epoch); err != nil {
		c.log.Warn("could not tell workers to stop a canceled job's task; it runs to its end, and its result is dropped", "job", id, "err", err)
	}
	c.log.Info("job canceled", "job", id, "group", group)
	if g.State.Terminal() {
		// Its last job ended: the tasks of the canceled ones still
		// queued go.
		c.stopTasks(ctx, g)
	}
	return g.MemberJob(n), nil
}

// memberOps gathers the commands on the members of a group (cancel,
// delete) that come while a write of the group's record is under way,
// and writes them together: each is a compare-and-set of the whole
// record, and a cancel of a thousand jobs of a few groups, one write
// each, contended for the same records.
type memberOps struct {
	mu      sync.Mutex
	byGroup map[string]*memberBatch
}

type memberBatch struct {
	ops []*memberOp
}

type memberOp struct {
	id    string
	apply func(g *job.Job) error
	done  chan struct{}
	g     *job.Job
	err   error
}

// onMember applies op, a command on member id of group, with the others
// waiting for that group, in one write; it returns the group's record as
// written, or op's error (nothing of op written), or the write's.
func (c *Coordinator) onMember(ctx context.Context, id, group string, apply func(g *job.Job) error) (*job.Job, error) {
	op := &memberOp{id: id, apply: apply, done: make(chan struct{})}
	c.memberOps.mu.Lock()
	if c.memberOps.byGroup == nil {
		c.memberOps.byGroup = map[string]*memberBatch{}
	}
	b, writing := c.memberOps.byGroup[group]
	if !writing {
		b = &memberBatch{}
		c.memberOps.byGroup[group] = b
	}
	b.ops = append(b.ops, op)
	c.memberOps.mu.Unlock()
	if !writing {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*storeTimeout)
		defer cancel()
		c.writeMemberOps(wctx, group, b)
	}
	<-op.done
	return op.g, op.err
}

// writeMemberOps writes batch b's commands to group's record, and the
// ones that came meanwhile, until none waits.
func (c *Coordinator) writeMemberOps(ctx context.Context, group string, b *memberBatch) {
	for {
		c.memberOps.mu.Lock()
		ops := b.ops
		b.ops = nil
		if len(ops) == 0 {
			delete(c.memberOps.byGroup, group)
			c.memberOps.mu.Unlock()
			return
		}
		c.memberOps.mu.Unlock()
		g, err := c.command(ctx, group, func(g *job.Job) bool {
			changed := false
			for _, op := range ops {
				if op.err = op.apply(g); op.err == nil {
					changed = true
				}
			}
			return changed
		})
		for _, op := range ops {
			switch {
			case job.ErrorCode(err) == job.ENotFound:
				op.err = job.Errorf(job.ENotFound, "job %s not found", job.Quote(op.id))
			case err != nil:
				op.err = err
			case op.err == nil:
				op.g = g
			}
			close(op.done)
		}
	}
}

// memberHistory returns the task history of member n of group g, as its
// own job's would be.
func (c *Coordinator) memberHistory(ctx context.Context, g *job.Job, id string, n int) ([]job.TaskResult, error) {
	all, err := c.history(ctx, g)
	var out []job.TaskResult
	for _, r := range all {
		if r.Partition == n-1 && (r.Job == "" || r.Job == g.ID) {
			r.Job, r.Partition = id, 0
			out = append(out, r)
		}
	}
	return out, err
}

// deleteMember deletes finished member n of group: its group keeps it
// deleted, and goes once all its members are. The delete is logged at
// level (a user's at info, a retention's at debug).
func (c *Coordinator) deleteMember(ctx context.Context, id, group string, n int, level slog.Level) error {
	g, err := c.onMember(ctx, id, group, func(g *job.Job) error {
		if n > len(g.Members) {
			return job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
		}
		switch m := &g.Members[n-1]; {
		case m.Deleted || m.Moved:
			return job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
		case !m.State.Terminal():
			return job.Errorf(job.EConflict, "job %s is %s: cancel it first, then delete it", id, m.Shown())
		default:
			m.Deleted = true
			return nil
		}
	})
	if err != nil {
		return err
	}
	c.log.Log(ctx, level, "job deleted", "job", id, "group", group)
	if !allGone(g) {
		return nil
	}
	if err := c.remove(ctx, g); err != nil {
		// Its retention, or the next delete, removes it.
		c.log.Debug("could not remove a group whose jobs are all deleted", "group", group, "err", err)
	}
	return nil
}

// promote gives member n of group a record of its own (a retry runs it
// again there): first marked moved in its group (whose record then no
// longer speaks for it), then its record made from what the group held,
// its task history in it. A promote cut short between the two is done
// again by the next retry: a moved member without a record reads as the
// group held it.
func (c *Coordinator) promote(ctx context.Context, id, group string, n int) error {
	var perr error
	g, err := c.command(ctx, group, func(g *job.Job) bool {
		perr = nil
		if n > len(g.Members) {
			perr = job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
			return false
		}
		switch m := &g.Members[n-1]; {
		case m.Deleted:
			perr = job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
		case m.Moved:
			// Marked by a promote cut short: its record is made below.
		case m.State != job.Failed && m.State != job.Canceled:
			perr = g.MemberShown(n).Retry(time.Now()) // its conflict
		default:
			m.Moved = true
			return true
		}
		return false
	})
	if job.ErrorCode(err) == job.ENotFound {
		return job.Errorf(job.ENotFound, "job %s not found", job.Quote(id))
	}
	if err != nil {
		return err
	}
	if perr != nil {
		return perr
	}
	j := g.MemberShown(n) // its history below
	history, err := c.memberHistory(ctx, g, id, n)
	if err != nil && !errors.Is(err, store.ErrDamaged) {
		return unavailable(err)
	}
	j.Group, j.LogInRecord, j.TaskLog = "", true, history
	if _, err := c.cfg.Store.Jobs.Create(ctx, j); err != nil && !errors.Is(err, store.ErrConflict) {
		return unavailable(fmt.Errorf("store job %s, taken out of its group to run again: %w", id, err))
	}
	c.log.Info("a job of a group has a record of its own from now on, to run again", "job", id, "group", group)
	return nil
}

// membersTransitioned counts the changes of state of group g's members
// since prev, as transitioned does a job's, and logs them: a failure at
// warn as any job's, the others at debug, with one line at info when the
// group ends (a line a job at info was a fifth of a busy server's CPU, at
// 30,000 small jobs a second).
func (c *Coordinator) membersTransitioned(g, prev *job.Job) {
	for i, m := range g.Members {
		var was job.Member
		if i < len(prev.Members) {
			was = prev.Members[i]
		}
		if m.State == was.State && (m.StartedAt == nil) == (was.StartedAt == nil) {
			continue
		}
		from, to := job.Queued, m.Shown()
		if was.State != "" {
			from = was.State
		} else if was.StartedAt != nil {
			from = job.Running
		}
		if to == from {
			continue
		}
		c.cfg.Metrics.JobState(g.Kind, string(to))
		if to == job.Failed || c.log.Enabled(context.Background(), slog.LevelDebug) {
			c.logTransition(g.MemberShown(i+1), from, slog.LevelDebug)
		}
	}
	if g.State.Terminal() && !prev.State.Terminal() && g.FinishedAt != nil {
		counts := map[job.State]int{}
		for _, m := range g.Members {
			if !m.Moved && !m.Deleted {
				counts[m.Shown()]++
			}
		}
		c.log.Info("jobs of a group ended", "group", g.ID, "kind", g.Kind, "first_job", job.MemberID(g.ID, 1), "jobs", len(g.Members),
			"succeeded", counts[job.Succeeded], "failed", counts[job.Failed], "canceled", counts[job.Canceled], "duration", g.FinishedAt.Sub(g.CreatedAt))
	}
}
