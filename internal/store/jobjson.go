package store

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// The job record's encoding, written out (and the task messages' and the
// results'): the bytes encoding/json makes of a job.Job, without its
// reflection. Every record write encodes one (two per small job), and
// encoding/json's walk of the struct, with a compaction of every time and
// of the run-length values it is given, was the largest part of the
// coordinator's own CPU under many small jobs. TestJobEncodingIsEncodingJSONs
// fills every field of the record (and of tasks and results) by reflection
// and holds the output to json.Marshal's byte for byte, so a field added
// to job.Job, job.Task or job.TaskResult and not here fails it. Rare,
// nested parts (input files, previews) go through encoding/json.

// marshalJob encodes j as json.Marshal does.
func marshalJob(j *job.Job) ([]byte, error) {
	e := jobEncoder{b: make([]byte, 0, 512+256*len(j.TaskLog)+64*len(j.History))}
	e.job(j)
	return e.b, e.err
}

// marshalResults encodes task results (a message of the results stream)
// as json.Marshal does.
func marshalResults(rs []job.TaskResult) ([]byte, error) {
	if rs == nil {
		return []byte("null"), nil
	}
	e := jobEncoder{b: make([]byte, 0, 2+256*len(rs))}
	e.b = append(e.b, '[')
	for i := range rs {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.result(&rs[i])
	}
	e.b = append(e.b, ']')
	return e.b, e.err
}

// marshalTask encodes a task message as json.Marshal does.
func marshalTask(t *job.Task) ([]byte, error) {
	e := jobEncoder{b: make([]byte, 0, 256+len(t.Params))}
	e.b = append(e.b, '{')
	if t.Timeout != 0 {
		e.b = append(e.b, `"timeout":`...)
		e.int(int64(t.Timeout))
		e.b = append(e.b, ',')
	}
	e.b = append(e.b, `"job":`...)
	e.str(t.Job)
	e.key("kind")
	e.str(t.Kind)
	e.key("partition")
	e.int(int64(t.Partition))
	e.key("partitions")
	e.int(int64(t.Partitions))
	if len(t.Params) > 0 {
		e.key("params")
		e.json(t.Params)
	}
	e.strOmit("module", t.Module)
	e.strOmit("member", t.Member)
	e.intOmit("max_attempts", int64(t.MaxAttempts))
	e.intOmit("max_lost_runs", int64(t.MaxLostRuns))
	e.strOmit("phase", string(t.Phase))
	e.intOmit("reducers", int64(t.Reducers))
	if len(t.Files) > 0 {
		e.key("files")
		e.json(t.Files)
	}
	if len(t.Split) > 0 {
		e.key("split")
		e.json(t.Split)
	}
	e.strOmit("files_ref", t.FilesRef)
	e.strsOmit("maps", t.Maps)
	e.boolOmit("backup", t.Backup)
	e.intOmit("epoch", int64(t.Epoch))
	e.intOmit("priority", int64(t.Priority))
	e.strOmit("lane", t.Lane)
	e.intOmit("failures", int64(t.Failures))
	e.intOmit("runs", int64(t.Runs))
	e.intOmit("lost", int64(t.Lost))
	e.boolOmit("log_in_record", t.LogInRecord)
	e.intOmit("round", int64(t.Round))
	e.intOmit("no_room_since", t.NoRoomSince)
	e.intOmit("no_room_bytes", t.NoRoomBytes)
	if len(t.Carried) > 0 {
		e.key("carried")
		e.json(t.Carried)
	}
	if len(t.More) > 0 {
		e.key("more")
		e.b = append(e.b, '[')
		for i, b := range t.More {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.b = append(e.b, `{"partition":`...)
			e.int(int64(b.Partition))
			e.key("member")
			e.str(b.Member)
			if len(b.Params) > 0 {
				e.key("params")
				e.json(b.Params)
			}
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, ']')
	}
	e.b = append(e.b, '}')
	return e.b, e.err
}

type jobEncoder struct {
	b   []byte
	err error
}

func (e *jobEncoder) job(j *job.Job) {
	e.b = append(e.b, `{"id":`...)
	e.str(j.ID)
	e.key("kind")
	e.str(j.Kind)
	e.key("partitions")
	e.int(int64(j.Partitions))
	if len(j.Params) > 0 {
		e.key("params")
		e.json(j.Params)
	}
	e.strOmit("module", j.Module)
	e.intOmit("max_attempts", int64(j.MaxAttempts))
	e.intOmit("max_lost_runs", int64(j.MaxLostRuns))
	e.key("state")
	e.str(string(j.State))
	e.key("enqueued")
	e.bool(j.Enqueued)
	e.strOmit("lane", j.Lane)
	e.boolOmit("held", j.Held)
	e.key("values")
	v, err := j.Values.MarshalJSON() // compact already
	e.fail(err)
	e.b = append(e.b, v...)
	e.key("done")
	e.int(int64(j.Done))
	e.strsOmit("input", j.Input)
	if len(j.Files) > 0 {
		e.key("files")
		e.json(j.Files)
	}
	e.strOmit("files_ref", j.FilesRef)
	e.intOmit("reducers", int64(j.Reducers))
	e.strOmit("phase", string(j.Phase))
	e.strsOmit("map_commits", j.MapCommits)
	e.strsOmit("reduce_commits", j.ReduceCommits)
	e.intOmit("reduce_done", int64(j.ReduceDone))
	e.intsOmit("reduce_input_bytes", j.ReduceInputBytes)
	if j.Counters != nil {
		e.key("counters")
		e.counters(j.Counters)
	}
	if len(j.Preview) > 0 {
		e.key("preview")
		e.json(j.Preview)
	}
	e.strsOmit("backups", j.Backups)
	e.intOmit("reopened", int64(j.Reopened))
	e.strOmit("rerun_of", j.RerunOf)
	e.intOmit("timeout", int64(j.Timeout))
	e.intOmit("priority", int64(j.Priority))
	e.timeOmit("run_at", j.RunAt)
	e.intOmit("epoch", int64(j.Epoch))
	e.strOmit("schedule", j.Schedule)
	e.timeOmit("tick", j.Tick)
	if len(j.History) > 0 {
		e.key("history")
		for i, s := range j.History {
			e.sep(i)
			e.b = append(e.b, `{"state":`...)
			e.str(s.State)
			e.key("at")
			e.time(s.At)
			e.b = append(e.b, '}')
		}
		e.b = append(e.b, ']')
	}
	e.boolOmit("log_in_record", j.LogInRecord)
	if len(j.TaskLog) > 0 {
		e.key("task_log")
		for i := range j.TaskLog {
			e.sep(i)
			e.result(&j.TaskLog[i])
		}
		e.b = append(e.b, ']')
	}
	if len(j.Members) > 0 {
		e.key("members")
		for i := range j.Members {
			e.sep(i)
			e.member(&j.Members[i])
		}
		e.b = append(e.b, ']')
	}
	e.key("failed")
	e.int(int64(j.Failed))
	if r := j.Result; r != nil {
		e.key("result")
		e.jobResult(r)
	}
	e.strOmit("error", j.Error)
	e.key("created_at")
	e.time(j.CreatedAt)
	e.timeOmit("started_at", j.StartedAt)
	e.timeOmit("finished_at", j.FinishedAt)
	e.b = append(e.b, '}')
}

// jobResult encodes a job's (or a member's) result.
func (e *jobEncoder) jobResult(r *job.Result) {
	e.b = append(e.b, `{"values":`...)
	if r.Values == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i, x := range r.Values {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.int(x)
		}
		e.b = append(e.b, ']')
	}
	e.key("sum")
	e.int(r.Sum)
	e.b = append(e.b, '}')
}

// member encodes a group's member (job.Member); its first field may be
// omitted, so each is written with its separator known.
func (e *jobEncoder) member(m *job.Member) {
	e.b = append(e.b, '{')
	first := true
	next := func(k string) {
		if !first {
			e.b = append(e.b, ',')
		}
		first = false
		e.b = append(e.b, '"')
		e.b = append(e.b, k...)
		e.b = append(e.b, '"', ':')
	}
	if len(m.Params) > 0 {
		next("params")
		e.json(m.Params)
	}
	if m.State != "" {
		next("state")
		e.str(string(m.State))
	}
	if m.Error != "" {
		next("error")
		e.str(m.Error)
	}
	if m.Result != nil {
		next("result")
		e.jobResult(m.Result)
	}
	if m.StartedAt != nil {
		next("started_at")
		e.time(*m.StartedAt)
	}
	if m.FinishedAt != nil {
		next("finished_at")
		e.time(*m.FinishedAt)
	}
	if m.Moved {
		next("moved")
		e.bool(true)
	}
	if m.Deleted {
		next("deleted")
		e.bool(true)
	}
	e.b = append(e.b, '}')
}

func (e *jobEncoder) result(r *job.TaskResult) {
	e.b = append(e.b, `{"job":`...)
	e.str(r.Job)
	e.key("partition")
	e.int(int64(r.Partition))
	e.key("attempt")
	e.int(int64(r.Attempt))
	e.key("worker")
	e.str(r.Worker)
	e.key("value")
	e.int(r.Value)
	e.strOmit("error", r.Error)
	e.key("started_at")
	e.time(r.StartedAt)
	e.key("finished_at")
	e.time(r.FinishedAt)
	e.strOmit("phase", string(r.Phase))
	e.strOmit("commit", r.Commit)
	if r.Counters != nil {
		e.key("counters")
		e.counters(r.Counters)
	}
	if len(r.Preview) > 0 {
		e.key("preview")
		e.json(r.Preview)
	}
	e.intsOmit("part_bytes", r.PartBytes)
	e.boolOmit("backup", r.Backup)
	e.strOmit("outcome", r.Outcome)
	e.intOmit("failures", int64(r.Failures))
	e.boolOmit("unretried", r.Unretried)
	e.intOmit("lost_map", int64(r.LostMap))
	e.strOmit("lost_commit", r.LostCommit)
	if len(r.MoreLost) > 0 {
		e.key("more_lost")
		e.json(r.MoreLost)
	}
	e.intOmit("epoch", int64(r.Epoch))
	e.b = append(e.b, '}')
}

func (e *jobEncoder) counters(c *job.Counters) {
	e.b = append(e.b, `{"input_bytes":`...)
	e.int(c.InputBytes)
	e.key("input_records")
	e.int(c.InputRecords)
	e.key("map_output_records")
	e.int(c.MapOutputRecords)
	e.key("reduce_output_records")
	e.int(c.ReduceOutputRecords)
	e.b = append(e.b, '}')
}

// key starts a field after the first: its name is a constant that needs
// no escaping.
func (e *jobEncoder) key(k string) {
	e.b = append(e.b, ',', '"')
	e.b = append(e.b, k...)
	e.b = append(e.b, '"', ':')
}

// sep opens an array before its element i = 0, or separates element i.
func (e *jobEncoder) sep(i int) {
	if i == 0 {
		e.b = append(e.b, '[')
	} else {
		e.b = append(e.b, ',')
	}
}

func (e *jobEncoder) int(x int64) { e.b = strconv.AppendInt(e.b, x, 10) }

func (e *jobEncoder) bool(x bool) { e.b = strconv.AppendBool(e.b, x) }

// str appends s quoted: as it is when every byte is printable ASCII that
// encoding/json leaves alone (ids, kinds, states, workers), else as
// encoding/json escapes it.
func (e *jobEncoder) str(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			e.json(s)
			return
		}
	}
	e.b = append(e.b, '"')
	e.b = append(e.b, s...)
	e.b = append(e.b, '"')
}

func (e *jobEncoder) time(t time.Time) {
	e.b = append(e.b, '"')
	var err error
	e.b, err = t.AppendText(e.b) // what MarshalJSON writes between its quotes
	e.fail(err)
	e.b = append(e.b, '"')
}

// json appends v as encoding/json encodes it.
func (e *jobEncoder) json(v any) {
	b, err := json.Marshal(v)
	e.fail(err)
	e.b = append(e.b, b...)
}

func (e *jobEncoder) fail(err error) {
	if err != nil && e.err == nil {
		e.err = err
	}
}

func (e *jobEncoder) strOmit(k, s string) {
	if s != "" {
		e.key(k)
		e.str(s)
	}
}

func (e *jobEncoder) intOmit(k string, x int64) {
	if x != 0 {
		e.key(k)
		e.int(x)
	}
}

func (e *jobEncoder) boolOmit(k string, x bool) {
	if x {
		e.key(k)
		e.b = append(e.b, "true"...)
	}
}

func (e *jobEncoder) timeOmit(k string, t *time.Time) {
	if t != nil {
		e.key(k)
		e.time(*t)
	}
}

func (e *jobEncoder) intsOmit(k string, xs []int64) {
	if len(xs) == 0 {
		return
	}
	e.key(k)
	for i, x := range xs {
		e.sep(i)
		e.int(x)
	}
	e.b = append(e.b, ']')
}

func (e *jobEncoder) strsOmit(k string, ss []string) {
	if len(ss) == 0 {
		return
	}
	e.key(k)
	for i, s := range ss {
		e.sep(i)
		e.str(s)
	}
	e.b = append(e.b, ']')
}
