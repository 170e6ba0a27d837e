package httpapi

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/view"
)

const submitExample = `{"kind":"short","partitions":3,"params":{}}`

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

type submitRequest struct {
	Kind       string          `json:"kind"`
	Partitions json.RawMessage `json:"partitions"`
	Params     json.RawMessage `json:"params"`
	Input      []string        `json:"input"`
	Reducers   json.RawMessage `json:"reducers"`
	Timeout    string          `json:"timeout"`
	Priority   json.RawMessage `json:"priority"`
	RunAt      string          `json:"run_at"`
	Delay      string          `json:"delay"`
	// MaxAttempts is left out of the fingerprint when absent: a request
	// without it sums as it did before it was a field.
	MaxAttempts json.RawMessage `json:"max_attempts,omitempty"`
}

// readsData reports whether kind is a data kind (true when the server
// knows no registry: the service judges).
func (s *Server) readsData(kind string) bool {
	if s.cfg.Kinds == nil {
		return true
	}
	k, ok := s.cfg.Kinds.Lookup(kind)
	return ok && k.ReadsData
}

// spec checks what JSON alone cannot and makes the job spec of req.
func (s *Server) spec(req submitRequest) (job.Spec, error) {
	if s.cfg.Kinds != nil {
		// The kind first: a spec of an unknown kind without partitions
		// is told of its kind, not of partitions, then of its kind.
		if err := s.cfg.Kinds.CheckKind(req.Kind); err != nil {
			return job.Spec{}, err
		}
	}
	var n int
	var err error
	leftOut := len(req.Partitions) == 0 || string(req.Partitions) == "null"
	switch {
	case leftOut && (len(req.Input) == 0 || !s.readsData(req.Kind)):
		return job.Spec{}, job.Errorf(job.EInvalid, "partitions is required: an integer from 1 to %d", s.cfg.MaxPartitions)
	case leftOut:
		// A data job may leave it to the cluster (service.partitionsFor).
	default:
		if n, err = strconv.Atoi(string(req.Partitions)); err != nil {
			return job.Spec{}, job.Errorf(job.EInvalid, "partitions must be an integer from 1 to %d, got %s", s.cfg.MaxPartitions, req.Partitions)
		}
	}
	reducers := 0
	if len(req.Reducers) > 0 && string(req.Reducers) != "null" {
		if reducers, err = strconv.Atoi(string(req.Reducers)); err != nil || reducers < 1 {
			return job.Spec{}, job.Errorf(job.EInvalid, "reducers must be an integer from 1 to %d, got %s", job.MaxReducers, req.Reducers)
		}
	}
	priority := 0
	if len(req.Priority) > 0 && string(req.Priority) != "null" {
		if priority, err = strconv.Atoi(string(req.Priority)); err != nil || priority < job.MinPriority || priority > job.MaxPriority {
			return job.Spec{}, job.Errorf(job.EInvalid, "priority must be an integer from %d (low) to %d (high), default %d; got %s", job.MinPriority, job.MaxPriority, job.DefaultPriority, req.Priority)
		}
	}
	maxAttempts := 0
	if len(req.MaxAttempts) > 0 && string(req.MaxAttempts) != "null" {
		if maxAttempts, err = strconv.Atoi(string(req.MaxAttempts)); err != nil || maxAttempts < 1 || maxAttempts > job.MaxMaxAttempts {
			return job.Spec{}, job.Errorf(job.EInvalid, "max_attempts must be an integer from 1 to %d (left out: the server's --max-attempts), got %s", job.MaxMaxAttempts, req.MaxAttempts)
		}
	}
	var timeout time.Duration
	if req.Timeout != "" {
		if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout < time.Millisecond || timeout > maxTimeout {
			return job.Spec{}, job.Errorf(job.EInvalid, "timeout must be a duration from 1ms to %s, such as \"90s\" or \"5m\", got %s", maxTimeout, job.Quote(req.Timeout))
		}
	}
	var runAt time.Time
	switch {
	case req.RunAt != "" && req.Delay != "":
		return job.Spec{}, job.Errorf(job.EInvalid, "give run_at or delay, not both")
	case req.RunAt != "":
		if runAt, err = time.Parse(time.RFC3339Nano, req.RunAt); err != nil {
			return job.Spec{}, job.Errorf(job.EInvalid, "run_at must be a time in RFC 3339, such as \"2026-12-24T18:00:00Z\", got %s", job.Quote(req.RunAt))
		}
	case req.Delay != "":
		d, err := time.ParseDuration(req.Delay)
		if err != nil || d < 0 {
			return job.Spec{}, job.Errorf(job.EInvalid, "delay must be a duration such as \"90s\" or \"2h\", got %s", job.Quote(req.Delay))
		}
		runAt = time.Now().Add(d)
	}
	if !runAt.IsZero() && time.Until(runAt) > maxDelay {
		field := "run_at"
		if req.Delay != "" {
			field = "delay"
		}
		return job.Spec{}, job.Errorf(job.EInvalid, "%s is %s away; at most %s", field, time.Until(runAt).Round(time.Hour), maxDelay)
	}
	return job.Spec{Kind: req.Kind, Partitions: n, Params: req.Params, Input: req.Input, Reducers: reducers, Timeout: timeout, RunAt: runAt, Priority: priority, MaxAttempts: maxAttempts}, nil
}

// fingerprint sums the request as the client wrote it (a delay, not the
// time it gives), its JSON values without their spaces: a retry sends the
// same, a different request with the same Idempotency-Key does not.
func (req submitRequest) fingerprint() string {
	for _, raw := range []*json.RawMessage{&req.Partitions, &req.Params, &req.Reducers, &req.Priority, &req.MaxAttempts} {
		var b bytes.Buffer
		if json.Compact(&b, *raw) == nil {
			*raw = b.Bytes()
		}
	}
	data, _ := json.Marshal(req) // cannot fail: strings and valid JSON
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16])
}

// maxDelay bounds how far ahead a job may be scheduled.
const maxDelay = 366 * 24 * time.Hour

// maxTimeout bounds a job's timeout per task attempt.
const maxTimeout = 7 * 24 * time.Hour

// idempotencyKey reads the request's Idempotency-Key.
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey {
		return "", job.Errorf(job.EInvalid, "the Idempotency-Key header is %d bytes long; at most %d", len(key), maxIdempotencyKey)
	}
	return key, nil
}

func (s *Server) submitJob(w http.ResponseWriter, r *http.Request) {
	var req submitRequest
	if err := s.decode(w, r, &req, submitExample); err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, err := s.spec(req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if spec.IdempotencyKey, err = idempotencyKey(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if spec.IdempotencyKey != "" {
		spec.Fingerprint = req.fingerprint()
	}
	j, err := s.submit(r, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeSubmitted(w, j)
}

// writeSubmitted answers a submitted job: 202 with its resource and
// Location, or 200 for the job an earlier submit with the same
// Idempotency-Key created (replayed).
func (s *Server) writeSubmitted(w http.ResponseWriter, j *job.Job) {
	w.Header().Set("Location", "/api/v1/jobs/"+j.ID)
	writeJSON(w, submittedStatus(w, j.Replayed), s.cfg.Service.Resource(j))
}

// submittedStatus is the status of a submit's answer: 202, or 200 with
// Idempotent-Replayed (as Stripe's API says it) for an answer an earlier
// submit with the same Idempotency-Key made.
func submittedStatus(w http.ResponseWriter, replayed bool) int {
	if !replayed {
		return http.StatusAccepted
	}
	w.Header().Set("Idempotent-Replayed", "true")
	return http.StatusOK
}

const batchExample = `{"jobs":[{"kind":"noop","partitions":1},{"kind":"short","partitions":3}]}`

// submitBatch submits many jobs at once: all valid and stored, or none.
func (s *Server) submitBatch(w http.ResponseWriter, r *http.Request) {
	// The specs are read one by one, so that an error names the one that
	// is wrong: "jobs[3]: unknown field …".
	var req struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	if err := s.decode(w, r, &req, batchExample); err != nil {
		if job.ErrorCode(err) == job.ETooLarge {
			err = job.Errorf(job.ETooLarge, "%v; nothing was stored: send the jobs in smaller batches", err)
		}
		s.writeError(w, r, err)
		return
	}
	reqs := make([]submitRequest, len(req.Jobs))
	specs := make([]job.Spec, len(req.Jobs))
	for i, raw := range req.Jobs {
		err := decodeSpec(raw, &reqs[i])
		if err == nil {
			specs[i], err = s.spec(reqs[i])
		}
		if err != nil {
			s.writeError(w, r, job.Errorf(job.EInvalid, "jobs[%d]: %s", i, job.ErrorMessage(err)))
			return
		}
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if key != "" {
		for i := range specs {
			specs[i].Fingerprint = reqs[i].fingerprint()
		}
	}
	jobs, err := s.cfg.Service.SubmitBatch(r.Context(), specs, key, func() error { return s.allow(r) })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := struct {
		Jobs []client.Job `json:"jobs"`
	}{Jobs: make([]client.Job, len(jobs))}
	for i, j := range jobs {
		out.Jobs[i] = s.cfg.Service.Resource(j)
	}
	writeJSON(w, submittedStatus(w, slices.ContainsFunc(jobs, func(j *job.Job) bool { return j.Replayed })), out)
}

const maxLimit = 500

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, ok := q["id"]; ok {
		s.jobsByID(w, r, q)
		return
	}
	state := job.State(q.Get("state"))
	if state != "" && !state.Valid() {
		names := make([]string, len(job.States))
		for i, st := range job.States {
			names[i] = string(st)
		}
		s.writeError(w, r, job.Errorf(job.EInvalid, "state %s is not a job state; use one of %s", job.Quote(string(state)), strings.Join(names, ", ")))
		return
	}
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			s.writeError(w, r, job.Errorf(job.EInvalid, "limit must be an integer from 1 to %d, got %s", maxLimit, job.Quote(v)))
			return
		}
		limit = n
	}
	// Any kind's name, registered or not: the jobs of a kind removed
	// since stay listed.
	kind := q.Get("kind")
	if kind != "" {
		if err := job.ValidName("kind", kind); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	jobs, next, err := s.cfg.View.List(r.Context(), view.Filter{State: state, Kind: kind}, limit, q.Get("cursor"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.JobList{Jobs: jobs, NextCursor: next})
}

// MaxJobsByID is how many jobs one GET /api/v1/jobs?id=… may name.
const MaxJobsByID = maxLimit

// jobsByID answers the jobs named by the query's id values (repeated, or
// separated by commas), in their order, each once, and names those not
// found (never submitted, or deleted): a client following many jobs reads
// a hundred with one request instead of one each. It takes no other
// parameter.
func (s *Server) jobsByID(w http.ResponseWriter, r *http.Request, q url.Values) {
	for name := range q {
		if name != "id" {
			s.writeError(w, r, job.Errorf(job.EInvalid, "id cannot be combined with %s: ask for jobs by id, or for a page of them", name))
			return
		}
	}
	var ids []string
	seen := map[string]bool{}
	for _, v := range q["id"] {
		for id := range strings.SplitSeq(v, ",") {
			if id == "" {
				s.writeError(w, r, job.Errorf(job.EInvalid, "id must name a job, got an empty one; send id=ID&id=ID or id=ID,ID"))
				return
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	if len(ids) > MaxJobsByID {
		s.writeError(w, r, job.Errorf(job.EInvalid, "%d jobs named by id; at most %d a request", len(ids), MaxJobsByID))
		return
	}
	out := client.JobList{Jobs: make([]client.Job, 0, len(ids))}
	for _, id := range ids {
		res, err := s.cfg.Service.Job(r.Context(), id)
		switch {
		case err == nil:
			out.Jobs = append(out.Jobs, res)
		case job.ErrorCode(err) == job.ENotFound:
			out.NotFound = append(out.NotFound, id)
		default:
			s.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// MaxJobWait is the longest ?wait= a GET of a job may ask for.
const MaxJobWait = time.Minute

// MaxJobWaitsPerClient is how many GETs of a job with ?wait= one client
// (an IP address) may have waiting at once; more are answered at once,
// with the job's state, as without a wait: each holds a connection and a
// goroutine on the server for up to a minute.
const MaxJobWaitsPerClient = 100

// jobWaitsPerClient, when set, replaces MaxJobWaitsPerClient (tests
// lower it).
var jobWaitsPerClient atomic.Int32

// jobWaitEvery is how often a GET of a job with ?wait= reads it again.
const jobWaitEvery = 200 * time.Millisecond

// getJob answers a job. With ?wait=DURATION (up to MaxJobWait) it answers
// once the job has finished, or with its state then once the wait is over
// (or the server stops): a client without websockets (curl, a script)
// follows a job to its end with one request a minute instead of a read
// a second. The job is read again every jobWaitEvery from the read model,
// in memory while it runs. A client's waits past MaxJobWaitsPerClient are
// answered at once.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxJobWait {
			s.writeError(w, r, job.Errorf(job.EInvalid, "wait must be a duration from 0s to %v, such as 30s; got %q", MaxJobWait, v))
			return
		}
		wait = d
	}
	if wait > 0 {
		most := cmp.Or(int(jobWaitsPerClient.Load()), MaxJobWaitsPerClient)
		if ip := s.clientIP(r); s.waits.add(ip, most) {
			defer s.waits.done(ip)
		} else {
			wait = 0
		}
	}
	end := time.NewTimer(wait)
	defer end.Stop()
	again := time.NewTicker(jobWaitEvery) // one timer a wait, not one a read
	defer again.Stop()
	for {
		res, err := s.cfg.Service.Job(r.Context(), id)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if wait == 0 || res.State.Terminal() {
			writeJSON(w, http.StatusOK, res)
			return
		}
		select {
		case <-r.Context().Done():
			return // the client went away
		case <-end.C:
			wait = 0
		case <-s.closing.Done():
			wait = 0 // the server stops: its answer now
		case <-again.C:
		}
	}
}

func (s *Server) jobTasks(w http.ResponseWriter, r *http.Request) {
	out, err := s.cfg.Service.Tasks(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": out})
}

func (s *Server) deleteJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.cfg.Service.DeleteJob(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("job deleted", "job", id)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.cfg.Service.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Service.Resource(j))
}

// cancelJobsExample is a body of POST /api/v1/jobs/cancel.
const cancelJobsExample = `{"kind":"wordcount","state":"queued"}`

// cancelJobs cancels the unfinished jobs of a kind, a state or both, up to
// service.MaxCancelJobs at once: 200 and the jobs canceled, with more set
// when others matched.
func (s *Server) cancelJobs(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind  string    `json:"kind"`
		State job.State `json:"state"`
	}
	if err := s.decode(w, r, &req, cancelJobsExample); err != nil {
		s.writeError(w, r, err)
		return
	}
	out, err := s.cfg.Service.CancelJobs(r.Context(), req.Kind, req.State)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("jobs canceled", "kind", req.Kind, "state", req.State, "canceled", len(out.Canceled), "failed", len(out.Failed), "more", out.More)
	writeJSON(w, http.StatusOK, out)
}

// retryJob runs the unfinished tasks of a failed or canceled job again:
// 200 and the job, queued again with its epoch counted up.
func (s *Server) retryJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.cfg.Service.Retry(r.Context(), r.PathValue("id"), func() error { return s.allow(r) })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("job retried", "job", j.ID, "epoch", j.Epoch)
	writeJSON(w, http.StatusOK, s.cfg.Service.Resource(j))
}

// rerunJob submits a copy of a finished job's spec: 202 and the new job,
// which names the first in rerun_of. An Idempotency-Key works as for a
// submit.
func (s *Server) rerunJob(w http.ResponseWriter, r *http.Request) {
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.cfg.Service.Rerun(r.Context(), r.PathValue("id"), key, func() error { return s.allow(r) })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeSubmitted(w, j)
}

func (s *Server) listKinds(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"kinds": s.cfg.Service.Kinds()})
}

// putKind stores an uploaded kind's WebAssembly module (the body;
// ?description= overrides the module's own).
func (s *Server) putKind(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	k, err := s.cfg.Service.PutKind(r.Context(), name, r.URL.Query().Get("description"), r.Body, r.ContentLength)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("kind uploaded", "kind", name, "version", k.Version, "module", k.Hash, "bytes", k.Size)
	w.Header().Set("Location", "/api/v1/kinds")
	writeJSON(w, http.StatusCreated, k)
}

func (s *Server) pauseKind(w http.ResponseWriter, r *http.Request)  { s.pauseOrResumeKind(w, r, true) }
func (s *Server) resumeKind(w http.ResponseWriter, r *http.Request) { s.pauseOrResumeKind(w, r, false) }

// pauseOrResumeKind pauses or resumes a kind: 200 and the kind.
func (s *Server) pauseOrResumeKind(w http.ResponseWriter, r *http.Request, pause bool) {
	k, err := s.cfg.Service.PauseKind(r.Context(), r.PathValue("name"), pause)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("kind paused or resumed", "kind", k.Name, "paused", k.Paused)
	writeJSON(w, http.StatusOK, k)
}

const limitsExample = `{"concurrency":4,"rate":"100/s"}`

// setKindLimits bounds a kind's tasks running at once: 200 and the kind.
func (s *Server) setKindLimits(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Concurrency *int   `json:"concurrency"`
		Rate        string `json:"rate"`
	}
	if err := s.decode(w, r, &req, limitsExample); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Concurrency == nil && req.Rate == "" {
		s.writeError(w, r, job.Errorf(job.EInvalid, "give concurrency (0: none), rate (\"\": none) or both, e.g. %s", limitsExample))
		return
	}
	concurrency := 0
	if req.Concurrency != nil {
		concurrency = *req.Concurrency
	}
	k, err := s.cfg.Service.SetKindLimits(r.Context(), r.PathValue("name"), concurrency, req.Rate)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("kind limits set", "kind", k.Name, "concurrency", k.Concurrency, "rate", k.Rate)
	writeJSON(w, http.StatusOK, k)
}

func (s *Server) deleteKind(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Service.DeleteKind(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("kind deleted", "kind", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listWorkers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"workers": s.cfg.View.Workers()})
}

func (s *Server) getQueue(w http.ResponseWriter, r *http.Request) {
	limit := view.DefaultQueueLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxQueueLimit {
			s.writeError(w, r, job.Errorf(job.EInvalid, "limit must be an integer from 1 to %d, got %s", maxQueueLimit, job.Quote(v)))
			return
		}
		limit = n
	}
	jobs, more, depth := s.cfg.View.Queue(limit)
	q := client.Queue{Depth: depth, Counts: s.jobCounts(), Jobs: jobs, More: more}
	if s.cfg.StoreRoom != nil {
		if room, err := s.cfg.StoreRoom(); err == nil {
			room = max(room, 0)
			q.StoreRoom = &room
		}
	}
	writeJSON(w, http.StatusOK, q)
}

// maxQueueLimit bounds the jobs GET /api/v1/queue lists.
const maxQueueLimit = 10000

// getHistory answers what the cluster did per minute over the last hour.
func (s *Server) getHistory(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, client.History{Minutes: s.cfg.View.History(time.Now())})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.cfg.Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Ready(r.Context()); err != nil {
		s.writeError(w, r, job.Errorf(job.EUnavailable, "not ready: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func errUpgradeRequired(r *http.Request) error {
	return job.Errorf(job.EInvalid, "%s is a websocket: connect with ws://%s%s", r.URL.Path, r.Host, r.URL.Path)
}
