// Package httpapi serves mrcluster over HTTP: the seed's routes and
// websockets, the /api/v1 resources and events, health and readiness.
package httpapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/metrics"
	"github.com/mrcluster/mrcluster/internal/schedule"
	"github.com/mrcluster/mrcluster/internal/view"
)

// Service is what the API asks of the cluster: package service.
type Service interface {
	// The commands.
	Submit(ctx context.Context, spec job.Spec, admit func() error) (*job.Job, error)
	SubmitBatch(ctx context.Context, specs []job.Spec, key string, admit func() error) ([]*job.Job, error)
	Cancel(ctx context.Context, id string) (*job.Job, error)
	CancelJobs(ctx context.Context, kind string, state job.State) (client.CanceledJobs, error)
	DeleteJob(ctx context.Context, id string) error
	PutFile(ctx context.Context, ds, file string, r io.Reader, size int64) (dataset.Dataset, error)
	PutJobOutput(ctx context.Context, ds, file, id string) (dataset.Dataset, error)
	DeleteDataset(ctx context.Context, name string) error
	DeleteFile(ctx context.Context, ds, file string) error
	PutKind(ctx context.Context, name, description string, r io.Reader, size int64) (client.Kind, error)
	Rerun(ctx context.Context, id, key string, admit func() error) (*job.Job, error)
	Retry(ctx context.Context, id string, admit func() error) (*job.Job, error)
	DeleteKind(ctx context.Context, name string) error
	PauseKind(ctx context.Context, name string, pause bool) (client.Kind, error)
	SetKindLimits(ctx context.Context, name string, concurrency int, rate string) (client.Kind, error)
	AddSchedule(ctx context.Context, sc schedule.Schedule, spec job.Spec) (client.Schedule, error)
	PauseSchedule(ctx context.Context, name string, pause bool) (client.Schedule, error)
	DeleteSchedule(ctx context.Context, name string) error
	// The queries the read model does not answer alone.
	Job(ctx context.Context, id string) (client.Job, error)
	Resource(j *job.Job) client.Job
	Tasks(ctx context.Context, id string) ([]client.TaskAttempt, error)
	Output(ctx context.Context, id string) (func(io.Writer) error, error)
	Datasets(ctx context.Context) ([]dataset.Dataset, error)
	Dataset(ctx context.Context, name string) (dataset.Dataset, error)
	ReadFile(ctx context.Context, ds, file string, offset int64) (dataset.File, io.ReadCloser, error)
	Kinds() []client.Kind
	Schedules() []client.Schedule
	Schedule(name string) (client.Schedule, error)
}

// Config is what the API needs.
type Config struct {
	Service       Service
	View          *view.View
	Hub           *event.Hub
	Kinds         *job.Registry
	MaxPartitions int
	MaxBodyBytes  int64
	// AllowOrigins lists the browser origins, besides the server's own,
	// that may call the API: "http://host:port", "http://host:*" for any
	// port, or "*" for every origin.
	AllowOrigins []string
	// Ready reports whether the cluster can take jobs.
	Ready   func(ctx context.Context) error
	Version string
	Logger  *slog.Logger
	// Metrics, when set, are counted and served at /metrics.
	Metrics *metrics.Metrics
	// AuthToken, when set, is required of every request that changes
	// something, and of reads too when AuthRead is set.
	AuthToken string
	AuthRead  bool
	// SubmitRate and SubmitBurst bound each client's submissions per
	// second (0: no bound).
	SubmitRate  float64
	SubmitBurst int
	// MaxWebsockets bounds the websockets open at once (0: no bound).
	MaxWebsockets int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For (or
	// Forwarded) names the client, for the bounds per client (clientIP).
	TrustedProxies []netip.Prefix
	// UploadStall is how long an upload may send nothing before it is
	// refused (0: DefaultUploadStall).
	UploadStall time.Duration
	// StoreRoom, when set, returns the bytes the store can still take,
	// shown with the queue: a task whose output does not fit waits.
	StoreRoom func() (int64, error)
	// UI serves the dashboard at / and its routes (none when nil).
	UI http.Handler
}

// DefaultAllowOrigins are the loopback origins: a dashboard or the seed's
// client served from this machine, on any port.
var DefaultAllowOrigins = []string{
	"http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*",
	"https://localhost:*", "https://127.0.0.1:*", "https://[::1]:*",
}

// Server is the HTTP handler of the API.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux

	// closing is canceled by Close to end websockets, which http.Server's
	// Shutdown does not wait for.
	closing context.Context
	close   context.CancelFunc
	sockets sync.WaitGroup
	clients atomic.Int64 // open websockets
	limit   *limiter
	uploads clientSlots // each client's uploads read at once
	// outputSizes are the sizes of the last job outputs sent whole.
	outputSizes outputSizes
	sockIPs     clientCounts // each client's websockets
	waits       clientCounts // each client's GETs of a job waiting (?wait=)
}

// New returns the API's handler.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	s.closing, s.close = context.WithCancel(context.Background())
	s.limit = newLimiter(cfg.SubmitRate, cfg.SubmitBurst)
	s.uploads = clientSlots{per: MaxUploadsPerClient}
	s.routes()
	return s
}

func (s *Server) routes() {
	m := s.mux
	// The seed's contract.
	m.HandleFunc("GET /ping", s.ping)
	m.HandleFunc("POST /{kind}/{n}", s.seedSubmit)
	m.HandleFunc("GET /status", s.seedStatus)
	m.HandleFunc("GET /workerStatus", s.seedWorkers)
	m.HandleFunc("GET /queue", s.seedQueue)
	m.HandleFunc("GET /results", s.seedResults)
	// The modern API.
	m.HandleFunc("POST /api/v1/jobs", s.submitJob)
	m.HandleFunc("POST /api/v1/jobs/batch", s.submitBatch)
	m.HandleFunc("POST /api/v1/jobs/cancel", s.cancelJobs)
	m.HandleFunc("GET /api/v1/jobs", s.listJobs)
	m.HandleFunc("GET /api/v1/jobs/{id}", s.getJob)
	m.HandleFunc("POST /api/v1/jobs/{id}/cancel", s.cancelJob)
	m.HandleFunc("POST /api/v1/jobs/{id}/rerun", s.rerunJob)
	m.HandleFunc("POST /api/v1/jobs/{id}/retry", s.retryJob)
	m.HandleFunc("DELETE /api/v1/jobs/{id}", s.deleteJob)
	m.HandleFunc("GET /api/v1/jobs/{id}/tasks", s.jobTasks)
	m.HandleFunc("GET /api/v1/jobs/{id}/output", s.jobOutput)
	m.HandleFunc("GET /api/v1/datasets", s.listDatasets)
	m.HandleFunc("GET /api/v1/datasets/{name}", s.getDataset)
	m.HandleFunc("PUT /api/v1/datasets/{name}", s.putDataset)
	m.HandleFunc("PUT /api/v1/datasets/{name}/files/{file}", s.putDatasetFile)
	m.HandleFunc("GET /api/v1/datasets/{name}/files/{file}", s.getDatasetFile)
	m.HandleFunc("DELETE /api/v1/datasets/{name}/files/{file}", s.deleteDatasetFile)
	m.HandleFunc("DELETE /api/v1/datasets/{name}", s.deleteDataset)
	m.HandleFunc("GET /api/v1/kinds", s.listKinds)
	m.HandleFunc("PUT /api/v1/kinds/{name}", s.putKind)
	m.HandleFunc("DELETE /api/v1/kinds/{name}", s.deleteKind)
	m.HandleFunc("POST /api/v1/kinds/{name}/pause", s.pauseKind)
	m.HandleFunc("PUT /api/v1/kinds/{name}/limits", s.setKindLimits)
	m.HandleFunc("POST /api/v1/kinds/{name}/resume", s.resumeKind)
	m.HandleFunc("POST /api/v1/schedules", s.addSchedule)
	m.HandleFunc("GET /api/v1/schedules", s.listSchedules)
	m.HandleFunc("GET /api/v1/schedules/{name}", s.getSchedule)
	m.HandleFunc("POST /api/v1/schedules/{name}/pause", s.pauseSchedule)
	m.HandleFunc("POST /api/v1/schedules/{name}/resume", s.resumeSchedule)
	m.HandleFunc("DELETE /api/v1/schedules/{name}", s.deleteSchedule)
	m.HandleFunc("GET /api/v1/workers", s.listWorkers)
	m.HandleFunc("GET /api/v1/queue", s.getQueue)
	m.HandleFunc("GET /api/v1/history", s.getHistory)
	m.HandleFunc("GET /api/v1/events", s.events)
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	// The dashboard: its files, and index.html for its client-side routes.
	if ui := s.cfg.UI; ui != nil {
		m.Handle("GET /{$}", ui)
		m.Handle("GET /assets/", ui)
		m.Handle("GET /jobs/{id}", ui)
		m.Handle("GET /favicon.ico", ui)
	}
	if s.cfg.Metrics != nil {
		m.Handle("GET /metrics", s.cfg.Metrics.Handler())
	}
}

// statusClientClosed is the status a request whose client went away
// before its answer is logged and counted with (nginx's 499).
const statusClientClosed = 499

// requestLevel is the level a request is logged at: a read that was
// answered, or whose client went away, is debug (pages and scripts poll:
// at info they would bury the lines that matter), a change or a refusal
// info, a server error a warning (the error itself is logged where it
// happened).
func requestLevel(method string, status int) slog.Level {
	read := method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
	switch {
	case status == statusClientClosed && read:
		return slog.LevelDebug
	case status >= 500:
		return slog.LevelWarn
	case status >= 400:
		return slog.LevelInfo
	case read:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// ServeHTTP checks the request's origin, then routes it. The mux's own 404
// and 405 answers are replaced by JSON errors.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		d := time.Since(start)
		status := rw.status
		if status >= 500 && r.Context().Err() != nil {
			// The client went away (a download or a wait it gave up on):
			// what failed is the answer no one read, for want of a reader,
			// not the server. Logged and counted as nginx does.
			status = statusClientClosed
		}
		if level := requestLevel(r.Method, status); s.log.Enabled(r.Context(), level) {
			// client: whom a refusal or a burst of requests came from
			// (behind a --trusted-proxy, the address it forwarded for).
			s.log.Log(r.Context(), level, "http request", "method", r.Method, "route", r.Pattern, "path", r.URL.Path, "status", status, "duration", d, "client", s.clientIP(r))
		}
		s.cfg.Metrics.HTTPRequest(r.Pattern, r.Method, status, d, isUpgrade(r) || r.URL.Query().Has("wait"))
	}()
	if !s.cors(rw, r) {
		return
	}
	if err := s.authorize(r); err != nil {
		s.writeError(rw, r, err)
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(rw, r)
		return
	}
	s.mux.ServeHTTP(rw, r)
}

// noRoute lets the mux decide between 404 and 405 (and set Allow), then
// answers in JSON.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	ic := &intercept{header: http.Header{}}
	s.mux.ServeHTTP(ic, r)
	if ic.status == http.StatusMethodNotAllowed {
		allow := ic.header.Get("Allow")
		w.Header().Set("Allow", allow)
		s.writeError(w, r, job.Errorf(job.EMethod, "method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
		return
	}
	s.writeError(w, r, job.Errorf(job.ENotFound, "no such endpoint: %s %s (see the README for the API)", r.Method, r.URL.Path))
}

// cors answers preflights and refuses requests from origins not allowed.
// It reports whether the request should go on.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if !s.originAllowed(origin, r.Host) {
		s.writeError(w, r, job.Errorf(job.EForbidden, "origin %s is not allowed to call this server; start it with --%s %s to allow it", origin, flags.AllowOrigin, origin))
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

func (s *Server) originAllowed(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range s.cfg.AllowOrigins {
		if originMatches(p, origin) {
			return true
		}
	}
	return false
}

// originMatches matches an origin against a pattern: exact, "*" for any,
// or "scheme://host:*" for any port (or none) on that host.
func originMatches(pattern, origin string) bool {
	if pattern == "*" || strings.EqualFold(pattern, origin) {
		return true
	}
	base, ok := strings.CutSuffix(pattern, ":*")
	if !ok {
		return false
	}
	if strings.EqualFold(origin, base) {
		return true
	}
	port, ok := strings.CutPrefix(strings.ToLower(origin), strings.ToLower(base)+":")
	if !ok || port == "" {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// WebsocketClients returns how many websockets are open.
func (s *Server) WebsocketClients() int { return int(s.clients.Load()) }

// Uploads reports the uploads this server reads, and those that wait
// unread for one of their client's MaxUploadsPerClient.
func (s *Server) Uploads() (reading, waiting int) {
	return int(s.uploads.holding.Load()), int(s.uploads.waiting.Load())
}

// Close ends every websocket and waits for their handlers.
func (s *Server) Stop(ctx context.Context) error {
	s.Leave()
	done := make(chan struct{})
	go func() { s.sockets.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("websockets still open: %w", ctx.Err())
	}
}

// Leave ends at once what waits on the server's side, which http.Server's
// Shutdown would otherwise wait for (a GET of a job with ?wait=, answered
// with its state) or not wait for (websockets, closed): give it to the
// http.Server's RegisterOnShutdown. Stop calls it too.
func (s *Server) Leave() { s.close() }

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController and the websocket library reach the
// connection underneath.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// intercept captures the mux's error answer without writing it.
type intercept struct {
	header http.Header
	status int
}

func (i *intercept) Header() http.Header         { return i.header }
func (i *intercept) Write(b []byte) (int, error) { return len(b), nil }
func (i *intercept) WriteHeader(code int)        { i.status = code }
