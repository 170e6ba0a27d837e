// Package service is what the API asks of the cluster, in two halves.
// The commands (submit, cancel, store or delete a dataset file) validate
// their input once, here, apply the rules that span parts (the queue
// bound, the store's health, a dataset an unfinished job reads cannot
// change) and answer once the read model holds what they wrote, so that
// a client's next request sees it. The queries read the read model (the
// view), and the store for what it does not keep: a job it has not seen
// yet, a job's task history, its output.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/catalog"
	"github.com/mrcluster/mrcluster/internal/coordinator"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/schedule"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/view"
)

// Config is what a Service needs.
type Config struct {
	Coordinator *coordinator.Coordinator
	View        *view.View
	Datasets    *dataset.Store
	Kinds       *job.Registry
	// MaxPartitions bounds a job's partitions.
	MaxPartitions int
	// MaxQueuedTasks bounds the tasks waiting in the cluster: a submit
	// that would go beyond is refused (0: no bound).
	MaxQueuedTasks int
	// MaxUnfinishedJobs bounds the jobs not finished in the cluster: a
	// submit that would go beyond is refused (0: no bound).
	MaxUnfinishedJobs int
	// MaxFileBytes bounds one dataset file (0: no bound).
	MaxFileBytes int64
	// Writable, when set, says why the store cannot take writes now (a
	// full disk), or nil: submits and uploads are refused at once then.
	Writable func() error
	// Room, when set, returns the bytes the store can still take: an
	// upload of a known size larger than that is refused before its body
	// is read (a refusal half-way took the client's time, and left the
	// blocks stored before it in the store's files until compacted).
	Room func() (int64, error)
	// Catalog holds the uploaded kinds (nil: none can be uploaded);
	// MaxKindBytes bounds a module.
	Catalog      *catalog.Catalog
	MaxKindBytes int64
	// Schedules holds the cron schedules (nil: none can be added).
	Schedules *schedule.Scheduler
	// Mend, when set, puts back in the store the record of finished job
	// id that a read could not find there while the read model holds it
	// (its archived copy lost), reporting whether it did.
	Mend func(ctx context.Context, id string) bool
}

// Service is the commands and queries of the cluster.
type Service struct {
	cfg Config
}

// New returns a service.
func New(cfg Config) *Service {
	return &Service{cfg: cfg}
}

// seenWithin bounds the wait of a command for the read model to hold what
// it wrote (usually well under a millisecond).
const seenWithin = 2 * time.Second

// Submit validates spec, admits it against the store's health, the
// caller's admit (when set: the API's rate of submits per client) and the
// queue bound, stores the job and its tasks, and returns the job once the
// read model holds it.
func (s *Service) Submit(ctx context.Context, spec job.Spec, admit func() error) (*job.Job, error) {
	spec, err := s.partitionsFor(ctx, spec, nil)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Kinds.Validate(spec, s.cfg.MaxPartitions); err != nil {
		return nil, err
	}
	if err := s.admit(spec.Partitions, 1, "this job", admit); err != nil {
		return nil, err
	}
	j, err := s.cfg.Coordinator.Submit(ctx, spec)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, seenWithin)
	defer cancel()
	s.cfg.View.Await(wctx, j.ID)
	return j, nil
}

// SubmitBatch submits up to coordinator.MaxBatch jobs as one: every spec is
// validated first (an invalid one is refused naming its index, and nothing
// is stored), the batch is admitted as a whole (admit is asked once), and
// the jobs are stored together, all or nothing. key, when set, makes a
// retry of the batch within a day answer the first one's jobs.
func (s *Service) SubmitBatch(ctx context.Context, specs []job.Spec, key string, admit func() error) ([]*job.Job, error) {
	switch {
	case len(specs) == 0:
		return nil, job.Errorf(job.EInvalid, "jobs is empty: give 1 to %d job specs", coordinator.MaxBatch)
	case len(specs) > coordinator.MaxBatch:
		return nil, job.Errorf(job.EInvalid, "jobs holds %d specs; at most %d in one batch", len(specs), coordinator.MaxBatch)
	}
	tasks := 0
	var copies int64
	read := map[string][]job.InputFile{} // the inputs read for the specs without partitions
	specs = slices.Clone(specs)
	for i, spec := range specs {
		spec, err := s.partitionsFor(ctx, spec, read)
		if err != nil {
			if job.ErrorCode(err) == job.EInvalid {
				return nil, job.Errorf(job.EInvalid, "jobs[%d]: %s", i, job.ErrorMessage(err))
			}
			return nil, err
		}
		specs[i] = spec
		if err := s.cfg.Kinds.Validate(spec, s.cfg.MaxPartitions); err != nil {
			code := job.ErrorCode(err)
			if code != job.ETooLarge {
				code = job.EInvalid
			}
			return nil, job.Errorf(code, "jobs[%d]: %s", i, job.ErrorMessage(err))
		}
		tasks += spec.Partitions
		copies += spec.ParamCopies()
	}
	if copies > job.MaxParamCopies {
		return nil, job.Errorf(job.ETooLarge, "the batch's params go into each of its jobs' tasks, %.1f MiB in all, over the %d MiB one submit's tasks may carry: send fewer jobs at once, or smaller params",
			float64(copies)/(1<<20), job.MaxParamCopies>>20)
	}
	if err := s.admit(tasks, len(specs), "this batch", admit); err != nil {
		return nil, err
	}
	jobs, err := s.cfg.Coordinator.SubmitBatch(ctx, specs, key)
	if err != nil {
		return nil, err
	}
	// The records were stored in parallel, in no known order: every one is
	// awaited (once the last stored is seen, the others are found at once).
	wctx, cancel := context.WithTimeout(ctx, seenWithin)
	defer cancel()
	for _, j := range jobs {
		s.cfg.View.Await(wctx, j.ID)
	}
	return jobs, nil
}

// partitionsFor fills in the partition count of a data job that gives
// none: job.DefaultPartitions of its input's size and the cluster's
// workers. The input's files it read go with the spec (Spec.Files), so
// that the job is pinned to the files its count was chosen for and the
// coordinator does not read them again; read, when set, keeps them by
// input for the next specs (a batch's specs often share their input). A
// spec that is wrong otherwise is left for Validate to name what is.
func (s *Service) partitionsFor(ctx context.Context, spec job.Spec, read map[string][]job.InputFile) (job.Spec, error) {
	if spec.Partitions != 0 || len(spec.Input) == 0 || len(spec.Input) > job.MaxInputs || s.cfg.Datasets == nil {
		return spec, nil
	}
	if k, ok := s.cfg.Kinds.Lookup(spec.Kind); !ok || !k.ReadsData {
		return spec, nil
	}
	for _, name := range spec.Input {
		if job.ValidName("dataset", name) != nil {
			return spec, nil
		}
	}
	key := strings.Join(spec.Input, ",")
	files, ok := read[key]
	if !ok {
		var err error
		if files, err = s.cfg.Datasets.Resolve(ctx, spec.Input); err != nil {
			return spec, err
		}
		if read != nil {
			read[key] = files
		}
	}
	var size int64
	for _, f := range files {
		size += f.Size
	}
	spec.Partitions = job.DefaultPartitions(size, s.cfg.View.WorkerCount(), spec.Reducers, s.cfg.MaxPartitions)
	spec.Files = files
	return spec, nil
}

// Cancel cancels a job that has not finished.
func (s *Service) Cancel(ctx context.Context, id string) (*job.Job, error) {
	return s.cfg.Coordinator.Cancel(ctx, id)
}

// MaxCancelJobs bounds the jobs one CancelJobs cancels.
const MaxCancelJobs = 1000

// cancelAtOnce is how many cancels CancelJobs has under way.
const cancelAtOnce = 16

// CancelJobs cancels the unfinished jobs of kind, in state, or both (one
// at least), oldest first, up to MaxCancelJobs; More says others matched.
// A job that finished meanwhile is passed over; one that could not be
// canceled is named with the reason.
func (s *Service) CancelJobs(ctx context.Context, kind string, state job.State) (client.CanceledJobs, error) {
	switch {
	case kind == "" && state == "":
		return client.CanceledJobs{}, job.Errorf(job.EInvalid, "name the kind or the state of the jobs to cancel, or both: none names every unfinished job")
	case state != "" && !state.Valid():
		return client.CanceledJobs{}, job.Errorf(job.EInvalid, "state %s is not a job state; cancel takes %s, %s or %s", job.Quote(string(state)), job.Scheduled, job.Queued, job.Running)
	case state.Terminal():
		return client.CanceledJobs{}, job.Errorf(job.EInvalid, "jobs that are %s have finished; cancel takes %s, %s or %s", state, job.Scheduled, job.Queued, job.Running)
	}
	if kind != "" {
		if err := job.ValidName("kind", kind); err != nil {
			return client.CanceledJobs{}, err
		}
	}
	ids := s.cfg.View.UnfinishedOf(kind, state)
	out := client.CanceledJobs{Canceled: []string{}, More: len(ids) > MaxCancelJobs}
	ids = ids[:min(len(ids), MaxCancelJobs)]
	errs := make([]error, len(ids))
	sem := make(chan struct{}, cancelAtOnce)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, errs[i] = s.Cancel(ctx, id)
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case err == nil:
			out.Canceled = append(out.Canceled, ids[i])
		case job.ErrorCode(err) == job.EConflict || job.ErrorCode(err) == job.ENotFound:
			// Finished, or deleted, meanwhile.
		default:
			out.Failed = append(out.Failed, client.JobError{ID: ids[i], Error: job.ErrorMessage(err)})
		}
	}
	return out, nil
}

// Rerun submits a copy of finished job id's spec (kind, partitions,
// params, input, reducers, timeout, priority, attempts) as a new job that names it; an uploaded kind
// runs at its current version. A job not finished is a conflict: cancel
// it, or wait for it.
func (s *Service) Rerun(ctx context.Context, id, key string, admit func() error) (*job.Job, error) {
	j, _, err := s.cfg.Coordinator.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !j.State.Terminal() {
		return nil, job.Errorf(job.EConflict, "job %s is %s: a job runs again once it has finished; cancel it first, or wait for it", id, j.State)
	}
	spec := job.Spec{Kind: j.Kind, Partitions: j.Partitions, Params: j.Params, Input: j.Input, RerunOf: j.ID, IdempotencyKey: key, Timeout: j.Timeout, Priority: j.Priority, MaxAttempts: j.MaxAttempts, Fingerprint: "rerun " + j.ID}
	if j.ReadsData() {
		spec.Reducers = j.Reducers
	}
	return s.Submit(ctx, spec, admit)
}

// Retry runs the unfinished tasks of failed or canceled job id again, in
// the same job (all of a data job's tasks: its outputs were deleted when it
// ended), admitted as a submit of those tasks; it returns once the read
// model holds the retried job.
func (s *Service) Retry(ctx context.Context, id string, admit func() error) (*job.Job, error) {
	j, _, err := s.cfg.Coordinator.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	tasks := j.Partitions - j.Done
	if j.ReadsData() {
		tasks = j.Partitions
	}
	if err := s.admit(tasks, 1, "this retry", admit); err != nil {
		return nil, err
	}
	if j, err = s.cfg.Coordinator.Retry(ctx, id); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, seenWithin)
	defer cancel()
	s.cfg.View.AwaitEpoch(wctx, id, j.Epoch)
	return j, nil
}

// DeleteJob deletes a finished job and everything it stored, and returns
// once the read model no longer holds it.
func (s *Service) DeleteJob(ctx context.Context, id string) error {
	if err := s.cfg.Coordinator.Delete(ctx, id); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, seenWithin)
	defer cancel()
	s.cfg.View.AwaitGone(wctx, id)
	return nil
}

// PutFile stores size bytes of r (-1: unknown) as file of dataset ds,
// unless an unfinished job reads the dataset, and returns the dataset
// (see dataset.Store.Answer).
func (s *Service) PutFile(ctx context.Context, ds, file string, r io.Reader, size int64) (dataset.Dataset, error) {
	if err := job.ValidName("dataset", ds); err != nil {
		return dataset.Dataset{}, err
	}
	if err := job.ValidFileName(file); err != nil {
		return dataset.Dataset{}, err
	}
	if err := s.notInUse(ds, "replace a file of"); err != nil {
		return dataset.Dataset{}, err
	}
	if err := s.writable(); err != nil {
		return dataset.Dataset{}, err
	}
	if s.cfg.MaxFileBytes > 0 && size > s.cfg.MaxFileBytes {
		return dataset.Dataset{}, job.Errorf(job.ETooLarge, "file %s is %d bytes; this server takes files up to %d bytes (--%s)", file, size, s.cfg.MaxFileBytes, flags.MaxFileMB)
	}
	if s.cfg.Room != nil && size > 0 {
		if room, err := s.cfg.Room(); err == nil && size > room {
			return dataset.Dataset{}, job.Errorf(job.EUnavailable, "file %s is %d MiB and the store has room for %d MiB more: delete datasets or finished jobs (mrcluster delete), or free space on the disk of the server's data directory, then try again",
				file, (size+1<<20-1)>>20, max(room, 0)>>20)
		}
	}
	f, err := s.cfg.Datasets.PutFile(ctx, ds, file, r)
	if err != nil {
		return dataset.Dataset{}, err
	}
	return s.cfg.Datasets.Answer(ctx, ds, f)
}

// PutJobOutput stores the output of succeeded job id as file of dataset
// ds (made if new; a file of that name is replaced), as an upload of it
// would, and returns the dataset: a job's output is the next job's input,
// as Hadoop's output directory is, with no trip through a client. An
// output that cannot be read whole stores nothing.
func (s *Service) PutJobOutput(ctx context.Context, ds, file, id string) (dataset.Dataset, error) {
	write, err := s.Output(ctx, id)
	if err != nil {
		return dataset.Dataset{}, err
	}
	pr, pw := io.Pipe()
	var writeErr error
	written := make(chan struct{})
	go func() {
		writeErr = write(pw)
		close(written)              // before the reader can see the end
		pw.CloseWithError(writeErr) // nil: the reader's end
	}()
	d, err := s.PutFile(ctx, ds, file, pr, -1)
	// The output's failure failed the upload only if it came first: an
	// upload refused on its own (a bad name, a dataset in use) stops
	// reading, and the writer then fails on the closed pipe.
	var failedFirst bool
	select {
	case <-written:
		failedFirst = writeErr != nil
	default:
	}
	pr.CloseWithError(errors.New("the upload stopped reading")) // a writer still under way ends
	<-written
	if err != nil && failedFirst {
		return dataset.Dataset{}, writeErr // nothing was stored
	}
	return d, err
}

// writer remembers its writer's error.
type writer struct {
	w   io.Writer
	err error
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// outputFailed is the error of a write of job id's output that failed
// with err, as an answer (when nothing was sent yet): a damaged output is
// a conflict that says to run the job again, a store that did not answer
// is unavailable, an error with a code of its own keeps it.
func outputFailed(id string, err error) error {
	var answer *job.Error
	switch {
	case err == nil || errors.As(err, &answer):
		return err // says what it is already
	case errors.Is(err, store.ErrDamaged):
		return job.Errorf(job.EConflict, "the output of job %s is damaged in the store (%v): run the job again (mrcluster rerun %s)", id, err, id)
	default:
		return job.Unavailable("job store", fmt.Errorf("read the output of job %s: %w", id, err))
	}
}

// DeleteDataset deletes a dataset no unfinished job reads.
func (s *Service) DeleteDataset(ctx context.Context, name string) error {
	if err := job.ValidName("dataset", name); err != nil {
		return err
	}
	if err := s.notInUse(name, "delete"); err != nil {
		return err
	}
	return s.cfg.Datasets.Delete(ctx, name)
}

// ReadFile returns file of dataset ds and a reader of its bytes from
// offset on (below 0: its last -offset bytes).
func (s *Service) ReadFile(ctx context.Context, ds, file string, offset int64) (dataset.File, io.ReadCloser, error) {
	if err := job.ValidFileName(file); err != nil {
		return dataset.File{}, nil, err
	}
	return s.cfg.Datasets.ReadFileFrom(ctx, ds, file, offset)
}

// DeleteFile deletes file of dataset ds, with its blocks, unless an
// unfinished job reads the dataset.
func (s *Service) DeleteFile(ctx context.Context, ds, file string) error {
	if err := job.ValidName("dataset", ds); err != nil {
		return err
	}
	if err := job.ValidFileName(file); err != nil {
		return err
	}
	if err := s.notInUse(ds, "delete a file of"); err != nil {
		return err
	}
	return s.cfg.Datasets.DeleteFile(ctx, ds, file)
}

// notInUse refuses to change a dataset that an unfinished job reads.
func (s *Service) notInUse(name, what string) error {
	if id, ok := s.cfg.View.ReadingJob(name); ok {
		return job.Errorf(job.EConflict, "cannot %s dataset %s: job %s reads it and has not finished; wait for it or cancel it", what, name, id)
	}
	return nil
}

// admit admits a submit of jobs jobs of tasks tasks in all (what names
// it): the store must take writes, the caller's admit (when set) agree,
// and the queue have room.
func (s *Service) admit(tasks, jobs int, what string, admit func() error) error {
	if err := s.writable(); err != nil {
		return err
	}
	// What could never fit is not worth trying again: a client that
	// waits on 429 would wait for ever. Checked before the caller's
	// admit, so that a refused size spends none of its submit rate.
	if most := max(MaxSubmitTasks, s.cfg.MaxPartitions); tasks > most {
		return job.Errorf(job.ETooLarge, "%s has %d tasks, more than the %d one submit may queue: send its jobs in smaller batches",
			what, tasks, most)
	}
	if s.cfg.MaxQueuedTasks > 0 && tasks > s.cfg.MaxQueuedTasks {
		return job.Errorf(job.ETooLarge, "%s has %d tasks, more than the %d that may wait at once (--%s): it could never be admitted; split it, or raise the limit",
			what, tasks, s.cfg.MaxQueuedTasks, flags.MaxQueuedTasks)
	}
	if s.cfg.MaxUnfinishedJobs > 0 && jobs > s.cfg.MaxUnfinishedJobs {
		return job.Errorf(job.ETooLarge, "%s has %d jobs, more than the %d that may be unfinished at once (--%s): it could never be admitted; send smaller batches, or raise the limit",
			what, jobs, s.cfg.MaxUnfinishedJobs, flags.MaxUnfinishedJobs)
	}
	if admit != nil {
		if err := admit(); err != nil {
			return err
		}
	}
	if s.cfg.MaxQueuedTasks > 0 {
		if depth := s.cfg.View.QueueDepth(); depth+tasks > s.cfg.MaxQueuedTasks {
			return job.Errorf(job.EBusy, "the cluster has %d tasks waiting and %s would add %d, over the limit of %d (--%s); retry when the queue drains",
				depth, what, tasks, s.cfg.MaxQueuedTasks, flags.MaxQueuedTasks)
		}
	}
	if s.cfg.MaxUnfinishedJobs > 0 {
		if n := s.cfg.View.Unfinished(); n+jobs > s.cfg.MaxUnfinishedJobs {
			return job.Errorf(job.EBusy, "the cluster has %d jobs not finished and %s would add %d, over the limit of %d (--%s); retry when some have finished",
				n, what, jobs, s.cfg.MaxUnfinishedJobs, flags.MaxUnfinishedJobs)
		}
	}
	return nil
}

// MaxSubmitTasks bounds the tasks one submit queues (or one job's
// partitions, when --max-partitions is larger): a submit holds its tasks in
// memory until they are stored, and must store them within its deadline. A
// batch of 100 jobs of 10,000 partitions took 1.6 GB and never went in.
const MaxSubmitTasks = 100_000

// writable refuses a write the store cannot take now, saying why.
func (s *Service) writable() error {
	if s.cfg.Writable == nil {
		return nil
	}
	if err := s.cfg.Writable(); err != nil {
		return job.Errorf(job.EUnavailable, "%v", err)
	}
	return nil
}

// Job returns a job as the API shows it: from the read model, or from the
// store when the read model has not seen it yet (a job submitted a moment
// ago through another server).
func (s *Service) Job(ctx context.Context, id string) (client.Job, error) {
	if res, ok := s.cfg.View.Get(id); ok {
		return res, nil
	}
	var j *job.Job
	err := readAgain(ctx, func() (err error) {
		j, _, err = s.cfg.Coordinator.Get(ctx, id)
		return err
	})
	if err != nil {
		return client.Job{}, err
	}
	return s.cfg.View.Resource(j), nil
}

// readJob is readAgain for a read of job id's record: when the store
// still answers that it is unavailable, or that there is no such job, the
// record may be one the store lost (its archived copy gone) while the read
// model holds it: it is put back (Config.Mend), and read once more.
func (s *Service) readJob(ctx context.Context, id string, read func() error) error {
	err := readAgain(ctx, read)
	if code := job.ErrorCode(err); (code == job.EUnavailable || code == job.ENotFound) && s.cfg.Mend != nil && s.cfg.Mend(ctx, id) {
		err = read()
	}
	return err
}

// readWithin is how long a read the caller waits for is tried again while
// the store answers that it is unavailable: a moment a stream is between
// leaders, or the first second of a server continued after a pause.
const readWithin = 2 * time.Second

// readAgain calls read, and again every 100 ms while it fails with the
// store unavailable, for readWithin at most. A read changes nothing: trying
// it again is safe.
func readAgain(ctx context.Context, read func() error) error {
	deadline := time.Now().Add(readWithin)
	for {
		err := read()
		if job.ErrorCode(err) != job.EUnavailable || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Resource is the API's representation of j.
func (s *Service) Resource(j *job.Job) client.Job { return s.cfg.View.Resource(j) }

// Tasks returns every finished attempt of job id's tasks, by partition
// then attempt.
func (s *Service) Tasks(ctx context.Context, id string) ([]client.TaskAttempt, error) {
	var rs []coordinator.Attempt
	err := s.readJob(ctx, id, func() (err error) {
		rs, err = s.cfg.Coordinator.Tasks(ctx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	// A map-only job's tasks have no phase to show.
	j, err := s.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	showPhase := j.Reducers > 0
	out := make([]client.TaskAttempt, len(rs))
	for i, t := range rs {
		if t.Outcome == job.OutcomeLost && t.Worker == "" {
			// Its worker could not say; the view may have seen it go.
			if w, started, ok := s.cfg.View.LostRun(t.TaskResult); ok {
				t.Worker = w
				if !started.IsZero() && started.Before(t.FinishedAt) {
					t.StartedAt = started
				}
			}
		}
		state := t.Outcome // lost, interrupted, stopped, or failed and retried
		switch {
		case state != "":
		case t.Error != "":
			state = "failed"
		default:
			state = "done"
		}
		out[i] = client.TaskAttempt{
			Job: t.Job, Partition: t.Partition, Attempt: t.Attempt, Worker: t.Worker, Value: t.Value, Error: t.Error,
			StartedAt: t.StartedAt, FinishedAt: t.FinishedAt, Commit: t.Commit,
			Counters: (*client.Counters)(t.Counters), Backup: t.Backup, Outcome: t.Outcome, Failures: t.Failures, Unretried: t.Unretried, LostMap: t.LostMap,
			DurationMS: float64(t.FinishedAt.Sub(t.StartedAt).Microseconds()) / 1000, State: state,
			Superseded: t.Superseded,
		}
		if showPhase {
			out[i].Phase = string(t.Phase)
		}
		if len(t.MoreLost) > 0 {
			for _, l := range t.Lost() {
				out[i].LostMaps = append(out[i].LostMaps, l.Map-1)
			}
		}
		for _, p := range t.Preview {
			out[i].Preview = append(out[i].Preview, client.Preview(p))
		}
	}
	return out, nil
}

// Output returns a function that writes the output of job id, once it has
// succeeded; an error before anything is written says why there is none.
func (s *Service) Output(ctx context.Context, id string) (func(io.Writer) error, error) {
	var j *job.Job
	err := s.readJob(ctx, id, func() (err error) {
		j, _, err = s.cfg.Coordinator.Get(ctx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if j.State != job.Succeeded {
		return nil, job.Errorf(job.EConflict, "job %s is %s; its output is ready once it has succeeded", id, j.State)
	}
	return func(w io.Writer) error {
		to := &writer{w: w}
		err := s.cfg.Coordinator.Output(ctx, j, to)
		if to.err != nil && errors.Is(err, to.err) {
			return err // w's own: the client went away, or the caller stopped it
		}
		return outputFailed(id, err)
	}, nil
}

// Datasets returns every dataset, by name.
func (s *Service) Datasets(ctx context.Context) ([]dataset.Dataset, error) {
	return s.cfg.Datasets.List(ctx)
}

// Dataset returns one dataset.
func (s *Service) Dataset(ctx context.Context, name string) (dataset.Dataset, error) {
	return s.cfg.Datasets.Get(ctx, name)
}

// Kinds returns every kind, built in and uploaded, as the API shows them.
func (s *Service) Kinds() []client.Kind {
	var out []client.Kind
	for _, k := range s.cfg.Kinds.Kinds() {
		u, ok := catalog.Uploaded{}, false
		if k.Module != "" && s.cfg.Catalog != nil {
			u, ok = s.cfg.Catalog.Get(k.Name)
		}
		out = append(out, s.withState(kindResource(k, u, ok)))
	}
	return out
}

// withState adds kind k's paused state.
func (s *Service) withState(k client.Kind) client.Kind {
	if s.cfg.Catalog != nil {
		st := s.cfg.Catalog.State(k.Name)
		if st.Paused {
			since := st.Since
			k.Paused, k.PausedSince = true, &since
		}
		k.Concurrency, k.Rate = st.Concurrency, st.Rate
	}
	return k
}

// SetKindLimits bounds kind name's tasks running at once in the whole
// cluster (concurrency 0: no bound) and started per second or minute
// (rate "N/s" or "N/m"; "": no bound).
func (s *Service) SetKindLimits(ctx context.Context, name string, concurrency int, rate string) (client.Kind, error) {
	if s.cfg.Catalog == nil {
		return client.Kind{}, job.Errorf(job.EConflict, "this server cannot limit kinds")
	}
	if _, ok := s.cfg.Kinds.Lookup(name); !ok {
		return client.Kind{}, job.Errorf(job.ENotFound, "kind %s not found; GET /api/v1/kinds lists them", job.Quote(name))
	}
	if concurrency < 0 || concurrency > MaxConcurrency {
		return client.Kind{}, job.Errorf(job.EInvalid, "concurrency must be an integer from 0 (no limit) to %d, got %d", MaxConcurrency, concurrency)
	}
	if n, _ := store.ParseRate(rate); rate != "" && (n == 0 || n > MaxConcurrency*100) {
		return client.Kind{}, job.Errorf(job.EInvalid, "rate must be N/s or N/m with N from 1 to %d, such as \"100/s\" or \"10/m\"; got %s", MaxConcurrency*100, job.Quote(rate))
	}
	if err := s.writable(); err != nil {
		return client.Kind{}, err
	}
	if err := s.cfg.Catalog.SetLimit(ctx, name, concurrency, rate); err != nil {
		return client.Kind{}, err
	}
	for _, k := range s.Kinds() {
		if k.Name == name {
			return k, nil
		}
	}
	return client.Kind{}, job.Errorf(job.ENotFound, "kind %s not found", job.Quote(name))
}

// MaxConcurrency bounds a kind's concurrency limit.
const MaxConcurrency = 10000

// PauseKind pauses kind name in the whole cluster (resume false: resumes
// it): every server takes the waiting tasks of its unfinished jobs out of
// the queue and holds its new jobs; running tasks finish.
func (s *Service) PauseKind(ctx context.Context, name string, pause bool) (client.Kind, error) {
	if s.cfg.Catalog == nil {
		return client.Kind{}, job.Errorf(job.EConflict, "this server cannot pause kinds")
	}
	if _, ok := s.cfg.Kinds.Lookup(name); !ok {
		return client.Kind{}, job.Errorf(job.ENotFound, "kind %s not found; GET /api/v1/kinds lists them", job.Quote(name))
	}
	if err := s.writable(); err != nil {
		return client.Kind{}, err
	}
	if err := s.cfg.Catalog.SetPaused(ctx, name, pause); err != nil {
		return client.Kind{}, err
	}
	for _, k := range s.Kinds() {
		if k.Name == name {
			return k, nil
		}
	}
	return client.Kind{}, job.Errorf(job.ENotFound, "kind %s not found", job.Quote(name))
}

// kindResource is the API's representation of kind k; u is its upload's
// record when uploaded is true.
func kindResource(k job.Kind, u catalog.Uploaded, uploaded bool) client.Kind {
	c := client.Kind{Name: k.Name, Description: k.Description, ReadsData: k.ReadsData}
	for _, p := range k.Params {
		c.Params = append(c.Params, client.Param(p))
	}
	if uploaded {
		at := u.UploadedAt
		c.Uploaded, c.Version, c.Hash, c.Size, c.UploadedAt = true, u.Version, u.Hash, u.Size, &at
	}
	return c
}

// PutKind stores the WebAssembly module read from r (size bytes, -1 when
// unknown) as the next version of kind name. Jobs submitted before keep
// the version they pinned.
func (s *Service) PutKind(ctx context.Context, name, description string, r io.Reader, size int64) (client.Kind, error) {
	if s.cfg.Catalog == nil {
		return client.Kind{}, job.Errorf(job.EConflict, "this server takes no uploaded kinds")
	}
	if err := job.ValidName("kind", name); err != nil {
		return client.Kind{}, err
	}
	if err := s.writable(); err != nil {
		return client.Kind{}, err
	}
	limit := s.cfg.MaxKindBytes
	if size > limit {
		return client.Kind{}, job.Errorf(job.ETooLarge, "module of %d bytes is larger than --%s (%d MiB)", size, flags.MaxKindSize, limit>>20)
	}
	wasm, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return client.Kind{}, job.Errorf(job.EInvalid, "read the module: %v", err)
	}
	if int64(len(wasm)) > limit {
		return client.Kind{}, job.Errorf(job.ETooLarge, "module is larger than --%s (%d MiB)", flags.MaxKindSize, limit>>20)
	}
	u, err := s.cfg.Catalog.Put(ctx, name, description, wasm)
	if err != nil {
		return client.Kind{}, err
	}
	return s.withState(kindResource(u.Kind(), u, true)), nil
}

// DeleteKind deletes an uploaded kind that no unfinished job uses.
func (s *Service) DeleteKind(ctx context.Context, name string) error {
	if s.cfg.Catalog == nil {
		return job.Errorf(job.ENotFound, "kind %s not found", job.Quote(name))
	}
	if err := job.ValidName("kind", name); err != nil {
		return err
	}
	if id, ok := s.cfg.View.UsingKind(name); ok {
		return job.Errorf(job.EConflict, "cannot delete kind %s: job %s uses it and has not finished; wait for it or cancel it", name, id)
	}
	return s.cfg.Catalog.Delete(ctx, name)
}
