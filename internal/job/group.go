package job

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// A group stores and runs many small jobs as one record (docs/design-
// groups.md): a batch's one-task jobs of the same kind become the members
// of a group, whose record is an ordinary job record of one task per
// member with the members' own states in Members. The group's record and
// its archive copy are one message for all its members, and its writes
// take the results of many at once; each member's task is still a message
// of its own. The group's record is never shown: the read model shows
// its members as jobs, each under its own id.
//
// A member's id is its group's with the id's spare top bit set and the
// member's number (1 on) in its last ten bits: the group of an id, and
// whether it is a member, are read from the id itself.

// MaxGroup is the most members a group holds: its record, rewritten at
// each change, stays a few hundred KiB at most (MaxGroupParams, and each
// member's error clipped to MaxMemberError).
const MaxGroup = 256

// MaxGroupParams bounds the params of a group's members together, in
// bytes: a batch of jobs with larger params is stored one record a job.
const MaxGroupParams = 128 << 10

// MaxMemberError bounds the error a group's record keeps for a member:
// the whole error is in the member's task history.
const MaxMemberError = 512

// Member is one job of a group, as its group's record keeps it.
type Member struct {
	Params json.RawMessage `json:"params,omitempty"`
	// State is empty while the member is unfinished (running once
	// StartedAt is set), else its end.
	State      State      `json:"state,omitempty"`
	Error      string     `json:"error,omitempty"`
	Result     *Result    `json:"result,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Moved marks a member that has a record of its own since (a retry
	// took it out of its group): that record is the job, the group keeps
	// what the member was. Deleted marks a member deleted.
	Moved   bool `json:"moved,omitempty"`
	Deleted bool `json:"deleted,omitempty"`
}

// A member's id has the spare top bit of an id's 130 set (the first of
// its 26 characters holds bits 129 to 125, and an id's 128 bits leave
// the top two unset: its first character is 8 to f), and its number in
// the last memberBits bits (its last two characters).
const memberBits = 10

// IsMember reports whether id is the id of a group's member.
func IsMember(id string) bool {
	i := strings.LastIndexByte(id, '_')
	if i < 0 || len(id)-i-1 != 26 {
		return false
	}
	d := strings.IndexByte(crockford, id[i+1])
	return d >= 8 && d < 16
}

// GroupOf returns the id of the group member id belongs to and its number
// in it (1 on); ok is false when id is not a member's.
func GroupOf(id string) (group string, n int, ok bool) {
	if !IsMember(id) {
		return "", 0, false
	}
	i := strings.LastIndexByte(id, '_')
	b := []byte(id[i+1:])
	b[0] = crockford[strings.IndexByte(crockford, b[0])-8]
	last := strings.IndexByte(crockford, b[25])
	prev := strings.IndexByte(crockford, b[24])
	if last < 0 || prev < 0 {
		return "", 0, false
	}
	n = prev<<5 | last
	b[24], b[25] = '0', '0'
	if n == 0 {
		return "", 0, false
	}
	return id[:i+1] + string(b), n, true
}

// MemberID returns the id of member n (1 on) of group id.
func MemberID(group string, n int) string {
	i := strings.LastIndexByte(group, '_')
	b := []byte(group[i+1:])
	b[0] = crockford[strings.IndexByte(crockford, b[0])+8]
	b[24], b[25] = crockford[n>>5&31], crockford[n&31]
	return group[:i+1] + string(b)
}

// NewGroupID returns the id of a new group: a job id (NewID) whose last
// ten bits are zero. Within a process it is later than the ids given
// before it, and the next ones count up from it.
func NewGroupID(kind string, now time.Time) string {
	var r [10]byte
	lastID.Lock()
	ms := stamp(uint64(now.UnixMilli()))
	switch {
	case ms == lastID.ms:
		r = lastID.random
	case ms > lastID.ms:
		_, _ = rand.Read(r[:])
		lastID.ms = ms
	default: // a time before the last id's, given by the caller
		_, _ = rand.Read(r[:])
	}
	// Up to the next multiple of 1<<memberBits.
	for range 1 << memberBits {
		if !countUp(&r) {
			_, _ = rand.Read(r[:]) // the bits ran out: start again
		}
		if r[9] == 0 && r[8]&(1<<(memberBits-8)-1) == 0 {
			break
		}
	}
	if ms == lastID.ms {
		lastID.random = r
	}
	lastID.Unlock()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], ms<<16)
	copy(b[6:], r[:])
	return kind + "_" + encodeID(b)
}

// Groupable reports whether a job of spec may be a group's member: a
// map-only kind's job of one task, queued at once, not a rerun. The
// caller also checks the kind: neither limited nor paused.
func Groupable(spec Spec, readsData bool) bool {
	return spec.Partitions == 1 && !readsData && spec.RunAt.IsZero() && spec.Schedule == "" && spec.RerunOf == "" && spec.Files == nil && len(spec.Input) == 0
}

// SameGroup reports whether jobs of a and b may share a group: the same
// kind and the same settings for their tasks.
func SameGroup(a, b Spec) bool {
	return a.Kind == b.Kind && a.Priority == b.Priority && a.Timeout == b.Timeout && a.MaxAttempts == b.MaxAttempts
}

// NewGroup returns the record of a group of the jobs of specs (members 1
// to len(specs)), made at now; the specs are Groupable and SameGroup.
func NewGroup(id string, specs []Spec, now time.Time) *Job {
	first := specs[0]
	first.Partitions, first.Params = len(specs), nil
	g := New(id, first, now)
	g.Members = make([]Member, len(specs))
	for i, s := range specs {
		g.Members[i].Params = s.Params
	}
	return g
}

// IsGroup reports whether j is a group's record.
func (j *Job) IsGroup() bool { return len(j.Members) > 0 }

// MemberJob returns member n (1 on) of group j as the job it is: the
// record a job of its own would have, its task history included.
func (j *Job) MemberJob(n int) *Job {
	m := j.MemberShown(n)
	if j.LogInRecord {
		for i := range j.TaskLog {
			if j.TaskLog[i].Partition == n-1 {
				m.TaskLog = append(m.TaskLog, j.TaskLog[i])
				m.TaskLog[len(m.TaskLog)-1].Job, m.TaskLog[len(m.TaskLog)-1].Partition = m.ID, 0
			}
		}
	}
	return m
}

// MemberShown returns member n of group j as MemberJob does, without its
// task history: what a list, an event or a log line shows of it. (Each
// member's history is a pass over the group's: every member's, one at a
// time, was quadratic in the group's size, 6 % of a batch's CPU.)
func (j *Job) MemberShown(n int) *Job {
	mem := j.Members[n-1]
	m := &Job{
		ID: MemberID(j.ID, n), Group: j.ID, Kind: j.Kind, Partitions: 1, Params: mem.Params, Module: j.Module,
		MaxAttempts: j.MaxAttempts, MaxLostRuns: j.MaxLostRuns, Enqueued: j.Enqueued, Lane: j.Lane, Held: j.Held,
		Values: NewValues(1), Phase: j.Phase, Timeout: j.Timeout, Priority: j.Priority, Epoch: j.Epoch,
		CreatedAt: j.CreatedAt, StartedAt: mem.StartedAt, FinishedAt: mem.FinishedAt, Error: mem.Error, Result: mem.Result,
		State: Queued, History: []Step{{State: string(Queued), At: j.CreatedAt}}, LogInRecord: j.LogInRecord,
	}
	if mem.StartedAt != nil {
		m.State = Running
		m.step(string(Running), *mem.StartedAt)
	}
	if mem.State != "" {
		m.State = mem.State
		if mem.FinishedAt != nil {
			m.step(string(mem.State), *mem.FinishedAt)
		}
	}
	switch m.State {
	case Succeeded:
		if v, ok := j.Values.Get(n - 1); ok {
			m.Values.Set(0, v)
			m.Done = 1
		}
	case Failed:
		m.Failed = 1
	}
	return m
}

// Shown is the state of member m as its job shows it.
func (m Member) Shown() State {
	switch {
	case m.State != "":
		return m.State
	case m.StartedAt != nil:
		return Running
	}
	return Queued
}

// MemberJobs returns every member of group j (MemberJob), their task
// histories from one pass over the group's.
func (j *Job) MemberJobs() []*Job {
	out := make([]*Job, len(j.Members))
	for i := range out {
		out[i] = j.MemberShown(i + 1)
	}
	if j.LogInRecord {
		for _, r := range j.TaskLog {
			if r.Partition < 0 || r.Partition >= len(out) {
				continue
			}
			m := out[r.Partition]
			r.Job, r.Partition = m.ID, 0
			m.TaskLog = append(m.TaskLog, r)
		}
	}
	return out
}

// applyMember records task result r of group j: its member ends, and the
// group once every member has. r is final, of this epoch, for a member
// not ended.
func (j *Job) applyMember(r TaskResult, reduce ReduceFunc) bool {
	mem := &j.Members[r.Partition]
	if mem.State.Terminal() {
		return false
	}
	if mem.StartedAt == nil {
		at := r.StartedAt
		mem.StartedAt = &at
	}
	at := r.FinishedAt
	mem.FinishedAt = &at
	if r.Error != "" {
		mem.State = Failed
		failures := max(r.Failures, r.Attempt)
		msg := r.Error
		if len(msg) > MaxMemberError {
			msg = prefix(msg, MaxMemberError) + "… (the whole error is in the job's task history)"
		}
		if r.Unretried {
			mem.Error = "failed on worker " + r.Worker + " (not retried: another attempt would fail the same way): " + msg
		} else {
			mem.Error = "failed on worker " + r.Worker + " (attempt " + strconv.Itoa(failures) + " of " + strconv.Itoa(max(j.MaxAttempts, 1)) + "): " + msg
		}
		j.Values.Set(r.Partition, 0)
	} else {
		mem.State = Succeeded
		res := reduce([]int64{r.Value})
		mem.Result = &res
		j.Values.Set(r.Partition, r.Value)
	}
	j.Done++
	j.endGroup(at)
	return true
}

// endGroup ends group j at t once every member has ended.
func (j *Job) endGroup(t time.Time) {
	if j.Done < j.Partitions || j.State.Terminal() {
		return
	}
	j.State = Succeeded
	j.FinishedAt = &t
	j.step(string(Succeeded), t)
}

// CancelMember cancels member n (1 on) of group j at t.
func (j *Job) CancelMember(n int, t time.Time) error {
	if n < 1 || n > len(j.Members) {
		return Errorf(ENotFound, "job %s not found", MemberID(j.ID, n))
	}
	mem := &j.Members[n-1]
	if mem.State.Terminal() {
		return Errorf(EConflict, "job %s is already %s and cannot be canceled", MemberID(j.ID, n), mem.State)
	}
	mem.State, mem.FinishedAt = Canceled, &t
	j.Values.Set(n-1, 0)
	j.Done++
	j.endGroup(t)
	return nil
}

// StartMember marks member n (1 on) of group j running from t; false when
// it is already, or has ended.
func (j *Job) StartMember(n int, t time.Time) bool {
	if n < 1 || n > len(j.Members) {
		return false
	}
	mem := &j.Members[n-1]
	if mem.StartedAt != nil || mem.State.Terminal() {
		return false
	}
	mem.StartedAt = &t
	j.Start(t)
	return true
}

// MaxBundle bounds the tasks of one bundle (Bundle).
const MaxBundle = 64

// BundledTask is a task of a bundle after its first (Task.More).
type BundledTask struct {
	Partition int             `json:"partition"`
	Member    string          `json:"member"`
	Params    json.RawMessage `json:"params,omitempty"`
}

// Bundle packs consecutive tasks of one group that run for the first time
// into bundles of up to MaxBundle: one task message for many jobs of a
// group, which a worker runs as that many tasks (Task.Bundled), each
// leased, retried and given back on its own, the message acked once
// all are. A task of a job of its own, and a task that ran before (a
// retry, a run lost, one given back), is a message of its own. (One
// message for many jobs is what lets small jobs run at the rate of a
// job's many tasks: a task message stored, delivered and acked was most
// of what a small job cost the queue.)
func Bundle(tasks []Task) []Task {
	out := make([]Task, 0, len(tasks))
	for _, t := range tasks {
		if n := len(out); n > 0 && bundles(out[n-1], t) && len(out[n-1].More) < MaxBundle-1 {
			out[n-1].More = append(out[n-1].More, BundledTask{Partition: t.Partition, Member: t.Member, Params: t.Params})
			continue
		}
		out = append(out, t)
	}
	return out
}

// bundles reports whether task t may go in the bundle of task b. Not in
// a kind's own lane: its limits count messages leased, and a bundle is
// many tasks.
func bundles(b, t Task) bool {
	return firstRun(b) && firstRun(t) && b.Job == t.Job && b.Kind == t.Kind && b.Phase == t.Phase && b.Epoch == t.Epoch &&
		b.Priority == t.Priority && b.Lane == "" && t.Lane == "" && b.Timeout == t.Timeout && b.Module == t.Module
}

// firstRun reports whether t is a group's task that has not run before.
func firstRun(t Task) bool {
	return t.Member != "" && !t.Backup && t.Runs == 0 && t.Failures == 0 && t.Lost == 0 && len(t.Carried) == 0 && t.NoRoomSince == 0 && t.Round == 0
}

// Bundled returns the tasks of bundle t: t itself without More, then one
// for each of More. A task that is no bundle is its own one.
func (t Task) Bundled() []Task {
	more := t.More
	t.More = nil
	out := make([]Task, 0, 1+len(more))
	out = append(out, t)
	for _, b := range more {
		o := t
		o.Partition, o.Member, o.Params = b.Partition, b.Member, b.Params
		out = append(out, o)
	}
	return out
}
