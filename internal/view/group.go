package view

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A group's record (job.Job.Members) is not shown: the view holds it as
// an unfinished job's (what the coordinator writes from, and the queue
// and the repair read) and shows each member as a job of its own, under
// its id, made from the record (job.MemberJob). What it keeps of every
// group it has seen is small: enough to tell a record it holds from a
// newer one and to find the members when the group is deleted.
type groupInfo struct {
	rev      uint64
	members  int32
	finished int64 // unix nanoseconds; 0 while unfinished
}

// mayBeGroup reports whether stored entry e may hold a group's record: a
// group's id ends in two zeros (job.NewGroupID), and its record names its
// members. Such a record is read whole at start, never skimmed.
func mayBeGroup(e *store.Entry) bool {
	return strings.HasSuffix(e.Key, "00") && bytes.Contains(e.Value, []byte(`"members":[`))
}

// heldFinished reports whether the view holds job or group id finished.
// v.mu must be held.
func (v *View) heldFinished(id string) bool {
	if en := v.byID[id]; en != nil {
		return en.state.terminal()
	}
	g, ok := v.groups[id]
	return ok && g.finished != 0
}

// applyGroup applies group g's record, entry e of the jobs bucket (or of
// the archive, at start): the group's own record, then every member whose
// state it changed, with their events.
func (v *View) applyGroup(e *store.Entry, g *job.Job, initial bool) {
	v.mu.Lock()
	info, known := v.groups[g.ID]
	if known && (e.Archived && info.finished != 0 || !e.Archived && e.Revision != 0 && e.Revision <= info.rev) {
		// Nothing new: the bucket's revisions only grow, and an archived
		// copy is of a finished group.
		v.mu.Unlock()
		return
	}
	var old *job.Job // the record held before, its members' entries made from it
	if u, ok := v.active[g.ID]; ok && !initial {
		old = u.j
	}
	// A group held or released (its kind paused or resumed) shows so in
	// every unfinished member.
	held := old != nil && old.Held != g.Held
	v.leaveActive(g.ID)
	v.setActive(g, e.Revision)
	info = groupInfo{rev: e.Revision, members: int32(len(g.Members))}
	if g.State.Terminal() && g.FinishedAt != nil {
		info.finished = g.FinishedAt.UnixNano()
	}
	v.groups[g.ID] = info
	var events []event.Event
	listening := !initial && v.cfg.Hub.Listening()
	now := time.Now()
	for n := 1; n <= len(g.Members); n++ {
		if old != nil && !held && n <= len(old.Members) && sameMember(old.Members[n-1], g.Members[n-1]) {
			continue
		}
		id := job.MemberID(g.ID, n)
		en := v.byID[id]
		switch mem := g.Members[n-1]; {
		case mem.Moved:
			continue // its own record is the job
		case mem.Deleted:
			if en != nil && en.member() {
				v.remove(en)
				if !initial {
					events = append(events, event.Event{Type: "job.deleted", Data: map[string]string{"id": id}})
				}
			}
			continue
		case en != nil && v.codes.state(en.state) == mem.Shown() && !(held && !mem.Shown().Terminal()):
			continue
		}
		// A finished job's history is read from the store when asked
		// for, as a job's.
		var m *job.Job
		if g.Members[n-1].Shown().Terminal() {
			m = g.MemberShown(n)
		} else {
			m = g.MemberJob(n)
		}
		prev := v.setEntry(m, false)
		v.wake(v.byID[id])
		if !initial {
			if listening {
				events = append(events, v.jobEvents(prev, m)...)
			}
			v.hist.note(now, prev, m, v.left-v.running)
		}
	}
	if !initial {
		v.notify()
	}
	v.mu.Unlock()
	for _, ev := range events {
		v.cfg.Hub.Publish(ev)
	}
}

// removeGroup forgets deleted group id and its members, and reports the
// members it held. v.mu must be held for writing.
func (v *View) removeGroup(id string) (members []string, ok bool) {
	info, ok := v.groups[id]
	if !ok {
		return nil, false
	}
	v.leaveActive(id)
	delete(v.active, id)
	delete(v.unqueued, id)
	delete(v.groups, id)
	for n := 1; n <= int(info.members); n++ {
		mid := job.MemberID(id, n)
		if en, held := v.byID[mid]; held && en.member() {
			v.remove(en)
			members = append(members, mid)
		}
	}
	return members, true
}

// sameMember reports whether a and b show a member the same way.
func sameMember(a, b job.Member) bool {
	return a.State == b.State && (a.StartedAt == nil) == (b.StartedAt == nil) && a.Moved == b.Moved && a.Deleted == b.Deleted
}

// groupState returns the state of group id's record, when the view has
// seen it: the coordinator asks whether a record the store says is not
// there is one the view holds unfinished. v.mu must be held.
func (v *View) groupState(id string) (job.State, bool) {
	g, ok := v.groups[id]
	switch {
	case !ok:
		return "", false
	case g.finished != 0:
		return job.Succeeded, true
	}
	if u, ok := v.active[id]; ok {
		return u.j.State, true
	}
	return job.Queued, true
}

// readJob reads job id's record from the store: its own, or for a
// group's member, made from its group's (store.ErrNotFound when neither
// holds it), each group read once for the reads that share groups. With
// inGroup (the view holds it as a group's member) the group is read at
// once.
func (v *View) readJob(ctx context.Context, id string, inGroup bool, groups *store.GroupReads) (*job.Job, error) {
	group, n, member := job.GroupOf(id)
	if !inGroup || !member {
		j, _, err := v.cfg.Store.Jobs.Get(ctx, id)
		if !member || !errors.Is(err, store.ErrNotFound) {
			return j, err
		}
	}
	g, _, err := groups.Get(ctx, group)
	switch {
	case err != nil:
		return nil, err
	case n > len(g.Members) || g.Members[n-1].Deleted:
		return nil, store.ErrNotFound
	}
	return g.MemberShown(n), nil
}
