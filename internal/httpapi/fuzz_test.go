package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/schedule"
	"github.com/mrcluster/mrcluster/internal/view"
)

// recordService stands in for the service behind the decoder under fuzz:
// what is fuzzed is what reaches it, and the answer the client gets. It
// validates as the service does.
type recordService struct{}

func (recordService) Submit(_ context.Context, spec job.Spec, admit func() error) (*job.Job, error) {
	if err := kinds.Builtin(0).Validate(spec, 100); err != nil {
		return nil, err
	}
	if err := admit(); err != nil {
		return nil, err
	}
	return job.New(job.NewID(spec.Kind, time.Now()), spec, time.Now()), nil
}

func (recordService) SubmitBatch(ctx context.Context, specs []job.Spec, _ string, admit func() error) ([]*job.Job, error) {
	out := make([]*job.Job, len(specs))
	for i, spec := range specs {
		j, err := recordService{}.Submit(ctx, spec, admit)
		if err != nil {
			return nil, err
		}
		out[i] = j
	}
	return out, nil
}

func (recordService) Cancel(context.Context, string) (*job.Job, error) {
	return nil, job.Errorf(job.ENotFound, "no job")
}

func (recordService) CancelJobs(context.Context, string, job.State) (client.CanceledJobs, error) {
	return client.CanceledJobs{}, nil
}

func (recordService) DeleteJob(context.Context, string) error {
	return job.Errorf(job.ENotFound, "no job")
}

func (recordService) PutFile(context.Context, string, string, io.Reader, int64) (dataset.Dataset, error) {
	return dataset.Dataset{}, job.Errorf(job.EUnavailable, "no store")
}

func (recordService) DeleteDataset(context.Context, string) error {
	return job.Errorf(job.ENotFound, "no dataset")
}

func (recordService) Job(context.Context, string) (client.Job, error) {
	return client.Job{}, job.Errorf(job.ENotFound, "no job")
}

func (recordService) Resource(j *job.Job) client.Job {
	return client.Job{ID: j.ID, Kind: j.Kind, State: client.State(j.State), Partitions: j.Partitions}
}

func (recordService) Tasks(context.Context, string) ([]client.TaskAttempt, error) {
	return nil, job.Errorf(job.ENotFound, "no job")
}

func (recordService) Output(context.Context, string) (func(io.Writer) error, error) {
	return nil, job.Errorf(job.ENotFound, "no job")
}

func (recordService) Datasets(context.Context) ([]dataset.Dataset, error) { return nil, nil }

func (recordService) Dataset(context.Context, string) (dataset.Dataset, error) {
	return dataset.Dataset{}, job.Errorf(job.ENotFound, "no dataset")
}

func (recordService) ReadFile(context.Context, string, string, int64) (dataset.File, io.ReadCloser, error) {
	return dataset.File{}, nil, job.Errorf(job.ENotFound, "no dataset")
}

func (recordService) PutJobOutput(context.Context, string, string, string) (dataset.Dataset, error) {
	return dataset.Dataset{}, job.Errorf(job.ENotFound, "no job")
}

func (recordService) DeleteFile(context.Context, string, string) error {
	return job.Errorf(job.ENotFound, "no dataset")
}

func (recordService) PutKind(context.Context, string, string, io.Reader, int64) (client.Kind, error) {
	return client.Kind{}, nil
}

func (recordService) DeleteKind(context.Context, string) error { return nil }

func (recordService) SetKindLimits(context.Context, string, int, string) (client.Kind, error) {
	return client.Kind{}, job.Errorf(job.ENotFound, "no kind")
}

func (recordService) PauseKind(context.Context, string, bool) (client.Kind, error) {
	return client.Kind{}, job.Errorf(job.ENotFound, "no kind")
}

func (recordService) Rerun(context.Context, string, string, func() error) (*job.Job, error) {
	return nil, job.Errorf(job.ENotFound, "no job")
}

func (recordService) Retry(context.Context, string, func() error) (*job.Job, error) {
	return nil, job.Errorf(job.ENotFound, "no job")
}

func (recordService) Kinds() []client.Kind { return nil }

func (recordService) AddSchedule(_ context.Context, sc schedule.Schedule, spec job.Spec) (client.Schedule, error) {
	name := sc.Name
	if err := kinds.Builtin(0).Validate(spec, 100); err != nil {
		return client.Schedule{}, err
	}
	return client.Schedule{Name: name}, nil
}

func (recordService) PauseSchedule(context.Context, string, bool) (client.Schedule, error) {
	return client.Schedule{}, job.Errorf(job.ENotFound, "no schedule")
}

func (recordService) DeleteSchedule(context.Context, string) error {
	return job.Errorf(job.ENotFound, "no schedule")
}

func (recordService) Schedules() []client.Schedule { return nil }

func (recordService) Schedule(string) (client.Schedule, error) {
	return client.Schedule{}, job.Errorf(job.ENotFound, "no schedule")
}

func fuzzServer() *Server { return recordServer(slog.New(slog.DiscardHandler)) }

func recordServer(log *slog.Logger) *Server {
	return New(Config{
		Service: recordService{}, View: view.New(view.Config{}), Hub: event.NewHub(),
		Kinds: kinds.Builtin(0), MaxPartitions: 100, MaxBodyBytes: 4096,
		Ready: func(context.Context) error { return nil }, Logger: log,
	})
}

// checkAnswer fails unless the answer is one of allowed and, for an error,
// a JSON error body with a code and a message.
func checkAnswer(t *testing.T, w *httptest.ResponseRecorder, allowed ...int) {
	t.Helper()
	ok := false
	for _, s := range allowed {
		ok = ok || w.Code == s
	}
	if !ok {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if w.Code >= 400 {
		var e errorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("error answer %d is not a JSON error: %q", w.Code, w.Body)
		}
	}
}

func FuzzSubmitBody(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"short","partitions":3,"params":{}}`,
		`{"kind":"noop","partitions":1}`,
		`{"kind":"short","partitions":"3"}`,
		`{"kind":"short","partitions":1e400}`,
		`{"kind":"short","partitions":-0}`,
		`{"kind":"short","partitions":1,"params":{"a":[[[[[[[[[[1]]]]]]]]]]}}`,
		`[` + strings.Repeat("[", 200),
		`{"kind":"\u0000","partitions":1}`,
		``, `null`, `{}`, `{"kind":"short","partitions":1} x`,
	} {
		f.Add([]byte(seed))
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/api/v1/jobs", strings.NewReader(string(body)))
		s.ServeHTTP(w, r)
		checkAnswer(t, w, http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
		if w.Code == http.StatusAccepted {
			var j client.Job
			if err := json.Unmarshal(w.Body.Bytes(), &j); err != nil || j.Partitions < 1 || j.Partitions > 100 {
				t.Fatalf("accepted %q as %s", body, w.Body)
			}
		}
	})
}

func FuzzSeedPath(f *testing.F) {
	for _, seed := range [][2]string{
		{"short", "3"}, {"long", "0"}, {"short", "-1"}, {"short", "99999999999999999999"},
		{"short", "1.5"}, {"medium", "2"}, {"", ""}, {"short", " 3"}, {"short", "0x10"}, {"../..", "1"},
	} {
		f.Add(seed[0], seed[1])
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, kind, n string) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/", nil)
		r.URL = &url.URL{Path: "/" + kind + "/" + n, RawPath: "/" + url.PathEscape(kind) + "/" + url.PathEscape(n)}
		s.ServeHTTP(w, r)
		checkAnswer(t, w, http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed)
	})
}
