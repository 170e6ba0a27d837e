// Package app wires the parts of a mrcluster server together: the embedded
// NATS server (or a connection to an external one), the coordinator, the
// in-process workers, the read model and the HTTP API.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mrcluster/mrcluster/internal/catalog"
	"github.com/mrcluster/mrcluster/internal/coordinator"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/httpapi"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/memtrim"
	"github.com/mrcluster/mrcluster/internal/metrics"
	"github.com/mrcluster/mrcluster/internal/mr"
	"github.com/mrcluster/mrcluster/internal/natsx"
	"github.com/mrcluster/mrcluster/internal/schedule"
	"github.com/mrcluster/mrcluster/internal/service"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/view"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
	"github.com/mrcluster/mrcluster/internal/webui"
	"github.com/mrcluster/mrcluster/internal/worker"
)

// Version is set at build time.
var Version = "dev"

// DefaultMaxLostRuns is --max-lost-runs' default: a task whose worker dies
// under it ten times in a row is most likely what kills it (out of memory,
// a crash in native code), as Sidekiq Pro takes a job that was running at
// three process crashes for a poison pill; any fewer, and a task of minutes
// on workers that are often replaced would fail its job for nothing.
const DefaultMaxLostRuns = 10

// KindLimit is a kind's concurrency and rate limit (--kind-limit).
type KindLimit struct {
	Concurrency int
	Rate        string
}

// Config is a server's configuration; cmd/mrcluster fills it from flags and
// the environment, tests fill it directly.
type Config struct {
	Addr          string
	DataDir       string
	Workers       int
	NATSListen    string
	NATSURL       string
	SleepScale    float64
	MaxPartitions int
	AllowOrigins  []string
	// TrustedProxies are the reverse proxies in front of the API whose
	// X-Forwarded-For header names the client (--trusted-proxy).
	TrustedProxies  []netip.Prefix
	AckWait         time.Duration
	ShutdownTimeout time.Duration
	// IdleTimeout closes a client's keep-alive connection that sent no
	// request for that long (DefaultIdleTimeout when zero): a client
	// holding connections open and idle would otherwise hold the server's
	// file descriptors for good.
	IdleTimeout time.Duration
	Logger      *slog.Logger
	// Kinds overrides the built-in kinds (tests and custom programs).
	Kinds *job.Registry

	// AuthToken, when set, is required of requests that change something,
	// and of reads too with AuthRead.
	AuthToken string
	AuthRead  bool
	// Insecure allows a non-loopback Addr without AuthToken.
	Insecure bool
	// NATSToken is the token of the NATS client port. An embedded server
	// listening beyond loopback without one makes one in DataDir.
	NATSToken string
	// SubmitRate and SubmitBurst bound each client's submissions.
	SubmitRate  float64
	SubmitBurst int
	// MaxQueuedTasks bounds the tasks waiting in the cluster (0: none).
	MaxQueuedTasks int
	// MaxUnfinishedJobs bounds the jobs not finished in the cluster (0:
	// none): every server holds each one's record in memory.
	MaxUnfinishedJobs int
	// MaxWebsockets bounds the websockets open at once (0: none): each
	// holds about 110 KB of the server's memory and costs it a snapshot
	// or an event at every change.
	MaxWebsockets int
	// UploadStall is how long an upload may send nothing before it is
	// refused (0: httpapi.DefaultUploadStall, a minute; tests shorten it).
	UploadStall time.Duration
	// RoomWait is how long a task whose output the store has no room for
	// waits for room before it fails (0: worker.DefaultRoomWait, half an
	// hour; tests shorten it).
	RoomWait time.Duration
	// MaxAttempts is how many times a task may run before its failure
	// fails its job; RetryBackoff the wait before the second attempt,
	// doubling after each.
	MaxAttempts  int
	RetryBackoff time.Duration
	// MaxLostRuns is how many runs of a task in a row may end with their
	// worker lost before the task fails its job (0: no bound).
	MaxLostRuns int
	// ReconcileEvery is how often a server looks
	// whether its task queue is stuck (see reconcileLoop; 0: 30 s).
	ReconcileEvery time.Duration
	// MaxFileSize bounds one uploaded dataset file, in bytes (0: none).
	MaxFileSize int64
	// SortBuffer bounds one map task's buffered output before it spills to
	// TempDir ("" means the system's temporary directory).
	SortBuffer int64
	TempDir    string
	// MemoryLimit is the process's soft memory limit (0: none): the
	// collector works harder near it and free pages go back to the system
	// sooner, which keeps caches of streamed data from growing the process.
	// It floats above it while the live data needs more (memtrim.Limit).
	MemoryLimit int64
	// ForgetDeletedAfter is how long a deleted job's marker stays in the
	// jobs bucket for every server's read model to see (0:
	// coordinator.DefaultForgetAfter); then it is purged, and with it
	// JetStream's state for the job's key.
	ForgetDeletedAfter time.Duration
	// ArchiveAfter is how long a finished job's record stays in the jobs
	// bucket besides the archive; 0 archives none (finished records stay
	// in the bucket; those archived before are still read).
	ArchiveAfter time.Duration
	// AcceptDamagedState makes a server whose store does not hold what it
	// held at its last stop start anyway, with what is left (logged).
	AcceptDamagedState bool
	// BackupAfter is the least time a task must have run before a backup
	// copy of it may start near the end of its phase (0: no backups).
	BackupAfter time.Duration
	// Retention is how long a finished job, its task history and its
	// output are kept after it finished (0: for ever).
	Retention time.Duration
	// GroupBatches stores small jobs in groups, one record and one
	// archive copy for many jobs: a batch's, and single submits without
	// a key that come together (docs/design-groups.md).
	GroupBatches bool
	// WasmMemory bounds the memory of one instance of an uploaded kind's
	// module, MaxKindSize a module's size; TaskTimeout one attempt of a
	// task (0: none for built-in kinds, an hour for uploaded ones).
	WasmMemory  int64
	MaxKindSize int64
	TaskTimeout time.Duration
	// KindLimits are kinds' concurrency and rate limits set at start
	// (--kind-limit); they are stored, so they hold for the whole cluster
	// and after a restart.
	KindLimits map[string]KindLimit
	// PriorityAging bounds how long a priority's waiting tasks are passed
	// over for higher ones by a pool of workers (worker.Config).
	PriorityAging time.Duration
	// RecentJobs is how many finished jobs the server keeps whole in
	// memory, beside the unfinished ones; older ones are read from the
	// store when asked for.
	RecentJobs int
	// ScheduleMissedAfter is how late a cron schedule's tick may be taken
	// before it counts as missed (its missed policy applies); 1 minute
	// when zero. Tests shorten it.
	ScheduleMissedAfter time.Duration
	// ChunkSweepEvery is how often the object stores are swept for the
	// chunks of puts cut short by a crash, and how old those must be to
	// go (0: an hour; tests shorten it). See sweepChunksLoop.
	ChunkSweepEvery time.Duration

	// A cluster of servers: each runs an embedded NATS server, routed to
	// the others; streams, buckets and object stores keep Replicas copies
	// (0: 3 in a cluster of three or more, else one per server). Start
	// waits up to ClusterWait for a majority of servers to be up (every
	// one at a new cluster's first start).
	ServerName    string
	ClusterName   string
	ClusterListen string
	Routes        []string
	Replicas      int
	ClusterWait   time.Duration
	// NATSTLSCert and NATSTLSKey make the embedded NATS server's client
	// port and routes TLS-only; NATSTLSCA verifies routes, and the server
	// of --nats.
	NATSTLSCert, NATSTLSKey, NATSTLSCA string
	// TLSCert and TLSKey make the HTTP API serve HTTPS only, with the
	// certificate in these PEM files (read again when they change).
	TLSCert, TLSKey string
	// DebugAddr, when set, serves Go's profiles (net/http/pprof) on a
	// loopback listener of their own.
	DebugAddr string
}

// clusterNeeds says which servers the cluster's JetStream needs up to
// form. A new cluster's first leader is elected only once every server
// has answered: nats-server does not let servers with empty logs make a
// majority among themselves (two of three waited for good, 2026-12-04).
var clusterNeeds = "it needs a majority of its servers up (every server of --" + flags.Routes + " at a new cluster's very first start)"

// setup creates the streams and buckets. In a cluster of servers, it first
// waits for JetStream's leader to be elected (a majority of servers up;
// every one at a new cluster's first start); then only one server, the
// first of --routes, creates or updates them, because concurrent creates
// of one replicated stream stall each other; the others wait until they
// exist.
func (s *Server) setup(ctx context.Context) (*natsx.Store, error) {
	cfg := natsx.StoreConfig{AckWait: s.cfg.AckWait, Replicas: s.cfg.Replicas, ArchiveAfter: s.cfg.ArchiveAfter,
		Shared: s.cfg.ClusterName != "" || s.emb == nil}
	if cfg.ArchiveAfter == 0 {
		cfg.ArchiveAfter = -1 // none
	}
	if s.emb != nil && s.cfg.alone() {
		cfg.AloneDir, cfg.Log = s.cfg.DataDir, s.log
	}
	if s.cfg.ClusterName == "" || s.emb == nil {
		return natsx.Setup(ctx, s.nc, cfg)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = min(3, 1+len(s.cfg.Routes))
	}
	creator := s.cfg.ClusterListen
	if len(s.cfg.Routes) > 0 {
		creator = natsx.RouteHost(s.cfg.Routes[0])
	}
	deadline := time.Now().Add(s.cfg.ClusterWait)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		var store *natsx.Store
		err := natsx.Available(ctx, s.nc)
		if err == nil && creator == s.cfg.ClusterListen {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			store, err = natsx.Setup(sctx, s.nc, cfg)
			cancel()
		} else if err == nil {
			store, err = natsx.OpenServer(ctx, s.nc)
		}
		if err == nil {
			err = store.CaughtUp(ctx, s.cfg.ServerName)
		}
		if err == nil {
			store.SetLog(s.log)
			return store, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the cluster's JetStream did not form within %s: %s, and the first of --%s, %s, to create the streams: %w", s.cfg.ClusterWait, clusterNeeds, flags.Routes, creator, err)
		}
		s.log.Info("waiting for the cluster: "+clusterNeeds+", and the first of --"+flags.Routes+" to create the streams", "creator", creator, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// DefaultConfig returns the defaults of `mrcluster serve`.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:8080",
		DataDir:         "./mrcluster-data",
		Workers:         4,
		NATSListen:      "127.0.0.1:4222",
		SleepScale:      1,
		MaxPartitions:   10000,
		AllowOrigins:    httpapi.DefaultAllowOrigins,
		AckWait:         30 * time.Second,
		ShutdownTimeout: 30 * time.Second,
		SubmitRate:      100,
		SubmitBurst:     200,
		MaxQueuedTasks:  1_000_000,
		// Each unfinished job costs a server 4 to 6 KB at the peak of a
		// burst (its record in the read model and the coordinator's
		// cache, JetStream's buffers): about 1.5 GB at the bound.
		MaxUnfinishedJobs: 250_000,
		MaxWebsockets:     1000,
		MaxAttempts:       3,
		MaxLostRuns:       DefaultMaxLostRuns,
		RetryBackoff:      time.Second,
		MaxFileSize:       8 << 30,
		SortBuffer:        mr.DefaultSortBuffer,
		MemoryLimit:       memtrim.DefaultLimit,
		BackupAfter:       time.Second,
		Retention:         7 * 24 * time.Hour,
		GroupBatches:      true,
		RecentJobs:        view.DefaultRecent,
		ArchiveAfter:      store.DefaultArchiveAfter,
		WasmMemory:        256 << 20,
		MaxKindSize:       64 << 20,
		ClusterWait:       2 * time.Minute,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Workers < 0:
		return fmt.Errorf("--%s must be 0 or more, got %d", flags.Workers, c.Workers)
	case c.SleepScale < 0:
		return fmt.Errorf("--%s must be 0 or more, got %g", flags.SleepScale, c.SleepScale)
	case c.MaxPartitions < 1 || c.MaxPartitions > 50000:
		// A job record holds one value per partition and must fit in one
		// NATS message (1 MiB by default).
		return fmt.Errorf("--%s must be from 1 to 50000, got %d", flags.MaxPartitions, c.MaxPartitions)
	case c.AckWait < time.Second:
		return fmt.Errorf("--%s must be at least 1s, got %s", flags.AckWait, c.AckWait)
	case c.AuthToken == "" && !c.Insecure && !natsx.IsLoopback(c.Addr):
		return fmt.Errorf("refusing to serve on %s, beyond this machine, without authentication: set --%s (or --%s, or %s), or pass --%s to serve it open", c.Addr, flags.AuthToken, flags.AuthTokenFile, flags.Env(flags.AuthToken), flags.Insecure)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errHalfTLS
	case c.DebugAddr != "" && metrics.CheckDebugAddr(c.DebugAddr, flags.DebugAddr) != nil:
		return metrics.CheckDebugAddr(c.DebugAddr, flags.DebugAddr)
	case c.MaxAttempts < 1 || c.MaxAttempts > job.MaxMaxAttempts:
		return fmt.Errorf("--%s must be from 1 to %d, got %d", flags.MaxAttempts, job.MaxMaxAttempts, c.MaxAttempts)
	case c.MaxLostRuns < 0 || c.MaxLostRuns > 1000:
		return fmt.Errorf("--%s must be from 0 (no bound) to 1000, got %d", flags.MaxLostRuns, c.MaxLostRuns)
	case c.WasmMemory < 1<<20 || c.WasmMemory > 4<<30:
		return fmt.Errorf("--%s must be from 1 to 4096, got %d", flags.WasmMemory, c.WasmMemory>>20)
	case c.MaxKindSize < 1<<20:
		return fmt.Errorf("--%s must be 1 or more, got %d", flags.MaxKindSize, c.MaxKindSize>>20)
	case c.PriorityAging < 0:
		return fmt.Errorf("--%s must be 0 (the default, %s) or more, got %s", flags.PriorityAging, worker.DefaultPriorityAging, c.PriorityAging)
	case c.TaskTimeout < 0:
		return fmt.Errorf("--%s must be 0 (none) or more, got %s", flags.TaskTimeout, c.TaskTimeout)
	case c.ArchiveAfter < 0 || c.ArchiveAfter > 0 && c.ArchiveAfter < time.Second:
		return fmt.Errorf("--%s must be 0 (archive no finished job) or at least 1s (JetStream's shortest time to live), got %s", flags.ArchiveAfter, c.ArchiveAfter)
	case c.RecentJobs < 1:
		return fmt.Errorf("--%s must be 1 or more, got %d", flags.RecentJobs, c.RecentJobs)
	case c.Retention < 0:
		return fmt.Errorf("--%s must be 0 (keep jobs for ever) or more, got %s", flags.Retention, c.Retention)
	case c.SubmitRate < 0 || c.MaxQueuedTasks < 0 || c.MaxUnfinishedJobs < 0 || c.MaxWebsockets < 0:
		return fmt.Errorf("--%s, --%s, --%s and --%s must be 0 (no limit) or more", flags.SubmitRate, flags.MaxQueuedTasks, flags.MaxUnfinishedJobs, flags.MaxWebsockets)
	}
	if c.Workers > 0 {
		if err := mr.CheckTempDir(c.TempDir); err != nil {
			return fmt.Errorf("--temp-dir: %w", err)
		}
	}
	return nil
}

// startNotice is how often a start that is still reading the stored
// state says so.
const startNotice = 10 * time.Second

// lockDataDir makes the data directory if need be and locks it for this
// process (flock on its file "lock", which the kernel lets go when the
// process ends, however it ends): two servers on one directory would
// write the same store files. A directory the store cannot use is the
// operator's error at once: the embedded NATS server, given one, waits
// 30 s and then fails as if its port were taken. On a full disk the
// server starts unlocked (nil): it answers 503 until space is back.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--%s: %w", flags.DataDir, err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("--%s: cannot make a file in %s: %w", flags.DataDir, dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("--%s %s is in use by another mrcluster server (process %s): stop it, or give this one another directory", flags.DataDir, dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("--%s: lock %s: %w", flags.DataDir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// Server is a running mrcluster server.
type Server struct {
	cfg Config
	log *slog.Logger
	emb *natsx.Embedded
	nc  *natsx.Conn
	// workerNC is the in-process workers' own connection.
	workerNC  *natsx.Conn
	natsToken string
	store     *natsx.Store
	// wstore is the in-process workers' handles of the store.
	wstore    *natsx.Store
	coord     *coordinator.Coordinator
	pool      *worker.Pool
	view      *view.View
	catalog   *catalog.Catalog
	schedules *schedule.Scheduler
	wasm      *wasmkind.Runtime
	api       *httpapi.Server
	http      *http.Server
	ln        net.Listener
	debug     *metrics.Debug // Go's profiles, when DebugAddr is set
	serve     chan error
	broken    chan error
	close     sync.Once

	health       storeHealth
	rearchived   atomic.Int64          // jobs archived again (rearchiveLoop)
	elected      atomic.Int64          // when a job stream last elected a leader (unix ns; 0: not since the start)
	alarm        writeAlarm            // how health changes are logged; the store watch's after start
	pendingMarks map[string]streamMark // read at the last checkpoint, recorded at the next
	damageSeen   bool                  // a damage found at start was reported
	probeKey     string
	stopWatch    context.CancelFunc
	unlimit      func()   // lifts the memory limit (memtrim.Limit); nil until the server serves
	dirLock      *os.File // held while the server runs (lockDataDir); nil without a data directory of its own
	watchWG      sync.WaitGroup
}

// Start starts a server and returns once it serves HTTP.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Kinds == nil {
		cfg.Kinds = kinds.Builtin(cfg.SleepScale)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, serve: make(chan error, 1), broken: make(chan error, 1)}
	defer func() {
		if err != nil {
			// What the failed start had started goes, within a bound
			// (a stop stuck in nats-server would otherwise hold the
			// error from the caller for good).
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = s.Stop(ctx)
		}
	}()
	if cfg.NATSURL == "" {
		if s.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		token := cfg.NATSToken
		if token == "" && !natsx.IsLoopback(cfg.NATSListen) {
			var created bool
			if token, created, err = natsx.Token(cfg.DataDir); err != nil {
				return nil, err
			}
			if created {
				s.log.Warn("the embedded NATS server listens beyond loopback, so it needs a token: one was made and stored in the data directory; give it to workers with --"+flags.NATSToken, "file", cfg.DataDir+"/nats-token")
			}
		}
		s.natsToken = token
		rebuilt := rebuiltStreams
		if !cfg.alone() {
			rebuilt = clusterChecked
		}
		if err := natsx.DropIndexes(cfg.DataDir, rebuilt); err != nil {
			return nil, fmt.Errorf("prepare the store's check: %w", err)
		}
		if s.emb, err = natsx.StartEmbedded(natsx.EmbeddedConfig{
			DataDir: cfg.DataDir, Listen: cfg.NATSListen, Token: token, ServerName: cfg.ServerName,
			ClusterName: cfg.ClusterName, ClusterListen: cfg.ClusterListen, Routes: cfg.Routes,
			TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey, TLSCA: cfg.NATSTLSCA,
		}, s.log); err != nil {
			return nil, err
		}
	}
	if s.nc, err = s.connect("mrcluster-server"); err != nil {
		return nil, err
	}
	if s.store, err = s.setup(ctx); err != nil {
		return nil, err
	}
	if s.emb != nil && !cfg.alone() {
		if err = s.mendCopies(ctx); err != nil {
			return nil, err
		}
	}
	if err = s.checkStoreIntegrity(ctx); err != nil {
		return nil, err
	}
	// The parts start in this order: the workers, so that they are
	// announced before the view reads the workers' bucket (a server is
	// seen with all its workers once it serves); the read model; the
	// coordinator, which reads the workers and the unfinished jobs from
	// it; the API. They stop in the reverse order, workers first.
	m := metrics.New()
	datasets := s.datasets(s.store.Ports)
	room := s.storeRoom() // one, shared: its probes' cache too
	if s.wasm, err = wasmkind.New(ctx, int(cfg.WasmMemory>>20), wasmkind.CacheDir(filepath.Join(cfg.DataDir, "wasm-cache"))); err != nil {
		return nil, err
	}
	for _, f := range s.wasm.Dropped() {
		s.log.Warn("a compiled WebAssembly module in the cache did not match its checksum (damaged on disk): removed, its module is compiled again when a task needs it", "file", f)
	}
	s.catalog = catalog.New(s.store.Ports, s.wasm, cfg.Kinds, s.log)
	if err = s.catalog.Start(ctx); err != nil {
		return nil, err
	}
	kinds := cfg.Kinds.With(s.catalog) // built in, then uploaded
	for name, l := range cfg.KindLimits {
		if _, ok := kinds.Lookup(name); !ok {
			return nil, fmt.Errorf("--%s names kind %q, which this server does not know (known: %s)", flags.KindLimit, name, strings.Join(kinds.Names(), ", "))
		}
		if n, _ := store.ParseRate(l.Rate); l.Rate != "" && n == 0 {
			return nil, fmt.Errorf("--%s %s: rate must be N/s or N/m, such as 100/s, got %q", flags.KindLimit, name, l.Rate)
		}
		// Its errors are the store's (a leader being elected as a server
		// of a cluster restarts): tried again, as the start's watches are.
		if err := store.Retry(ctx, store.WatchTimeout, func(ctx context.Context) error { return s.catalog.SetLimit(ctx, name, l.Concurrency, l.Rate) }); err != nil {
			return nil, fmt.Errorf("set the limits of kind %s (--%s): %w", name, flags.KindLimit, err)
		}
	}
	if cfg.Workers > 0 {
		// The workers have a connection of their own, as a remote worker
		// would; it also lets the NATS server serve them in parallel with
		// the coordinator.
		if s.workerNC, err = s.connect("mrcluster-workers"); err != nil {
			return nil, err
		}
		// Tried again as the start's other reads of the store are: a
		// server started again while its disk was full (its embedded
		// NATS server stuck, chaos test) met a deadline here, and exited.
		var wstore *natsx.Store
		if err := store.Retry(ctx, store.WatchTimeout, func(ctx context.Context) (err error) {
			wstore, err = natsx.Open(ctx, s.workerNC)
			return err
		}); err != nil {
			return nil, fmt.Errorf("open the store for this server's workers: %w", err)
		}
		wstore.SetLog(s.log)
		s.wstore = wstore
		// An output the store has no room for is not begun (store.Roomy).
		putting := new(atomic.Int64)
		wstore.Ports.Shuffle = store.Roomy{Blobs: wstore.Ports.Shuffle, Room: room, Putting: putting}
		wstore.Ports.Output = store.Roomy{Blobs: wstore.Ports.Output, Room: room, Putting: putting}
		host, _ := os.Hostname()
		s.pool = worker.New(worker.Config{
			Store: wstore.Ports, Datasets: s.datasets(wstore.Ports), Kinds: kinds, Concurrency: cfg.Workers,
			Name: PoolName(host), Host: host, Logger: s.log, Metrics: m, RetryBackoff: cfg.RetryBackoff,
			SortBuffer: cfg.SortBuffer, MemoryLimit: cfg.MemoryLimit, TempDir: cfg.TempDir,
			Modules: &catalog.Modules{Blobs: wstore.Ports.Modules, Runtime: s.wasm}, TaskTimeout: cfg.TaskTimeout,
			PriorityAging: cfg.PriorityAging, Paused: s.catalog.Paused, RoomWait: cfg.RoomWait, Room: room,
		})
		if err = s.pool.Start(ctx); err != nil {
			return nil, err
		}
	}
	hub := event.NewHub()
	s.view = view.New(view.Config{Store: s.store.Ports, Hub: hub, Logger: s.log, Retention: cfg.Retention, Recent: cfg.RecentJobs})
	if err = s.view.Start(ctx); err != nil {
		return nil, err
	}
	if s.pool != nil {
		// The statuses of this host's dead workers whose tasks the pool
		// gave back went before the view could see them go.
		s.view.NoteLostRuns(s.pool.Released()...)
	}
	for waited := time.Duration(0); ; {
		select {
		case <-s.view.Ready():
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(startNotice):
			waited += startNotice
			s.log.Info("still reading the stored jobs and workers; the server serves once they are read", "waited", waited)
			continue
		}
		break
	}
	if err = s.checkReadAtStart(ctx); err != nil {
		return nil, err
	}
	s.catalog.KeepModulesFor(s.view)
	s.coord = coordinator.New(coordinator.Config{
		Store: s.store.Ports, Datasets: datasets, Kinds: kinds, Modules: s.catalog, MaxAttempts: cfg.MaxAttempts, MaxLostRuns: cfg.MaxLostRuns,
		Logger: s.log, Metrics: m, Running: s.view.Running, State: s.view.State, Deleted: s.view.Deleted, Record: s.view.Record, Unqueued: s.view.Unqueued, Due: s.view.Due,
		Paused: s.catalog.Paused, Holding: s.view.Holding, LaneOf: s.catalog.LaneOf,
		BackupAfter: cfg.BackupAfter, RepairEvery: 10 * time.Second,
		Retention: cfg.Retention, Expired: s.view.Expired, RetentionEvery: retentionEvery(cfg.Retention),
		GroupBatches: cfg.GroupBatches,
		ForgetAfter:  cfg.ForgetDeletedAfter, Markers: s.view.Markers, JobDeleted: s.catalog.JobDeleted,
	})
	if err = s.coord.Start(ctx); err != nil {
		return nil, err
	}

	s.probeKey = Sanitize(cfg.ServerName)
	if cfg.ServerName == "" {
		host, _ := os.Hostname()
		s.probeKey = PoolName(host)
	}
	if reason, noSpace := s.checkStore(ctx); reason != "" {
		s.health.set(reason)
		s.logHealth(ctx, reason, noSpace)
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopWatch = stop
	s.watchWG.Go(func() { s.watchStore(wctx) })
	s.watchWG.Go(func() { memtrim.Run(wctx, s.log) })
	s.watchWG.Go(func() { s.anchorTasks(wctx) })
	s.watchWG.Go(func() { s.reconcileLoop(wctx) })
	s.watchWG.Go(func() { s.rearchiveLoop(wctx) })
	s.watchWG.Go(func() { s.sweepChunksLoop(wctx) })
	if unsub, err := s.nc.OnLeaderElected(natsx.JobStreams, func(string) { s.elected.Store(time.Now().UnixNano()) }); err != nil {
		s.log.Debug("could not follow the leader elections of the job streams; only the store's refusals start a look for lost job records", "err", err)
	} else {
		s.watchWG.Go(func() { <-wctx.Done(); unsub() })
	}
	s.schedules = schedule.New(schedule.Config{KV: s.store.Ports.Schedules, Logger: s.log, MissedAfter: cfg.ScheduleMissedAfter})
	svc := service.New(service.Config{
		Coordinator: s.coord, View: s.view, Datasets: datasets, Kinds: kinds, Catalog: s.catalog, MaxKindBytes: cfg.MaxKindSize,
		MaxPartitions: cfg.MaxPartitions, MaxQueuedTasks: cfg.MaxQueuedTasks, MaxUnfinishedJobs: cfg.MaxUnfinishedJobs, MaxFileBytes: cfg.MaxFileSize, Writable: s.health.Err,
		Schedules: s.schedules, Room: room, Mend: s.mendJob,
	})
	s.schedules.SetSubmit(func(ctx context.Context, spec job.Spec) (*job.Job, error) { return svc.Submit(ctx, spec, nil) })
	s.schedules.SetUnfinished(func(id string) bool {
		st, ok := s.view.State(id)
		return ok && !st.Terminal() // a job deleted, or unknown, has finished
	})
	if err = s.schedules.Start(ctx); err != nil {
		return nil, err
	}
	s.api = httpapi.New(httpapi.Config{
		Service: svc,
		View:    s.view, Hub: hub, Kinds: kinds,
		MaxPartitions: cfg.MaxPartitions, AllowOrigins: cfg.AllowOrigins,
		Ready: s.ready, Version: Version, Logger: s.log, Metrics: m,
		AuthToken: cfg.AuthToken, AuthRead: cfg.AuthRead,
		SubmitRate: cfg.SubmitRate, SubmitBurst: cfg.SubmitBurst, MaxWebsockets: cfg.MaxWebsockets, UploadStall: cfg.UploadStall,
		TrustedProxies: cfg.TrustedProxies,
		StoreRoom:      room,
		UI:             webui.Handler(),
	})
	s.registerGauges(m, room)
	var certs *certFiles
	if cfg.TLSCert != "" {
		if certs, err = loadCertFiles(cfg.TLSCert, cfg.TLSKey, s.log); err != nil {
			return nil, err
		}
	}
	if cfg.DebugAddr != "" {
		if s.debug, err = metrics.ListenDebug(cfg.DebugAddr, flags.DebugAddr, s.log); err != nil {
			return nil, err
		}
	}
	if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen on %s (is another server running? set --%s): %w", cfg.Addr, flags.Addr, err)
	}
	// The server's own errors (an accept failing for want of file
	// descriptors, a TLS handshake) go to the log, not to standard error.
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	s.http = &http.Server{Handler: s.api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle, ErrorLog: log.New(httpErrors{s.log}, "", 0)}
	s.http.RegisterOnShutdown(s.api.Leave) // long waits answered, not waited for
	if certs != nil {
		s.http.TLSConfig = certs.tlsConfig()
		go func() { s.serve <- s.http.ServeTLS(s.ln, "", "") }()
	} else {
		go func() { s.serve <- s.http.Serve(s.ln) }()
	}
	// The memory limit holds once the server serves: at start the read of
	// the store grows the live heap at full speed, and a limit a step
	// behind it made the collector run twice as often and hand pages back
	// only to fault them in again (~0.5 s of a restart with 200,000 jobs).
	s.unlimit = memtrim.Limit(cfg.MemoryLimit)
	s.log.Info("mrcluster serving", "url", s.URL(), "addr", s.Addr(), "workers", cfg.Workers, "nats", s.NATSURL(), "data_dir", cfg.DataDir)
	return s, nil
}

// connect opens a connection to the embedded server, in process, or to
// the external one.
func (s *Server) connect(name string) (*natsx.Conn, error) {
	if s.emb != nil {
		nc, err := s.emb.Connect(name)
		if err != nil {
			return nil, fmt.Errorf("connect to embedded NATS: %w", err)
		}
		return nc, nil
	}
	nc, err := natsx.Dial(s.cfg.NATSURL, name, s.cfg.NATSToken, s.cfg.NATSTLSCA, s.log)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", s.cfg.NATSURL, err)
	}
	return nc, nil
}

func (s *Server) ready(ctx context.Context) error {
	select {
	case <-s.view.Ready():
	default:
		return errors.New("still reading the stored state")
	}
	if !s.nc.Connected() {
		return errors.New("not connected to NATS")
	}
	if err := s.health.Err(); err != nil {
		return err
	}
	return s.store.Ready(ctx)
}

// DefaultIdleTimeout is how long the API keeps a client's idle keep-alive
// connection open.
const DefaultIdleTimeout = 2 * time.Minute

// Addr is the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the API's base URL.
func (s *Server) URL() string {
	if s.cfg.TLSCert != "" {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// DebugURL is where Go's profiles are served ("" without DebugAddr).
func (s *Server) DebugURL() string {
	if s.debug == nil {
		return ""
	}
	return s.debug.URL()
}

// NATSURL is where remote workers connect.
func (s *Server) NATSURL() string {
	if s.emb != nil {
		return s.emb.ClientURL()
	}
	return s.cfg.NATSURL
}

// NATSToken is the token remote workers need, if any.
func (s *Server) NATSToken() string { return s.natsToken }

// Done receives the HTTP server's error if it stops on its own.
func (s *Server) Done() <-chan error { return s.serve }

// Broken receives an error when the server cannot go on in this process:
// its embedded NATS server, restarted to reopen its store after the disk
// filled, did not stop. A new process (mrcluster serve starts itself
// again) opens the store as after a crash.
func (s *Server) Broken() <-chan error { return s.broken }

// Stop stops the server: no new tasks, running tasks finish (until ctx
// ends), then the API, websockets and NATS. Queued tasks stay queued.
func (s *Server) Stop(ctx context.Context) error {
	s.close.Do(func() { s.shutdown(ctx) })
	return nil
}

// stopReserve is the part of the shutdown's time kept from the running
// tasks for the rest of the shutdown, and the least the embedded NATS
// server has to close its store.
const stopReserve = 3 * time.Second

func (s *Server) shutdown(ctx context.Context) {
	// Workers first: they stop taking tasks at once, and the API keeps
	// answering while their running tasks finish, but not for the whole
	// time allowed: a task that never ends would leave the rest of the
	// shutdown no time, and the embedded NATS server would be left
	// closing its files after Stop returned.
	if s.pool != nil {
		pctx := ctx
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			pctx, cancel = context.WithDeadline(ctx, dl.Add(-min(stopReserve, time.Until(dl)/3)))
			defer cancel()
		}
		_ = s.pool.Stop(pctx)
	}
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn("HTTP shutdown", "err", err)
		}
	}
	if s.debug != nil {
		_ = s.debug.Close()
	}
	if s.api != nil {
		_ = s.api.Stop(ctx)
	}
	if s.stopWatch != nil {
		s.stopWatch()
		s.watchWG.Wait()
	}
	if s.schedules != nil {
		_ = s.schedules.Stop(ctx)
	}
	if s.coord != nil {
		_ = s.coord.Stop(ctx)
	}
	if s.view != nil {
		_ = s.view.Stop(ctx)
	}
	if s.catalog != nil {
		_ = s.catalog.Stop(ctx)
	}
	if s.wasm != nil {
		_ = s.wasm.Close(ctx)
	}
	if s.store != nil && s.checksStore() {
		s.checkpoint(ctx, true)
	}
	if s.store != nil {
		s.store.Ports.Jobs.Stop(ctx)
	}
	for _, st := range []*natsx.Store{s.wstore, s.store} {
		if st != nil {
			st.Close()
		}
	}
	for _, nc := range []*natsx.Conn{s.workerNC, s.nc} {
		if nc != nil {
			nc.Close()
		}
	}
	if s.emb != nil {
		// The store's files are closed before Stop returns, even when the
		// steps before used up the time: a little past it, at most.
		ectx := ctx
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			ectx, cancel = context.WithTimeout(context.WithoutCancel(ctx), max(time.Until(dl), stopReserve))
			defer cancel()
		}
		if err := s.emb.Stop(ectx); err != nil {
			s.log.Warn("the embedded NATS server did not stop in time; its store recovers at the next start", "err", err)
		}
	}
	if s.dirLock != nil {
		s.dirLock.Close() // lets the lock go
	}
	if s.unlimit != nil {
		s.unlimit()
	}
}

// retentionEvery is how often expired jobs are looked for: a tenth of the
// retention, from 100 ms to a minute.
func retentionEvery(retention time.Duration) time.Duration {
	return min(max(retention/10, 100*time.Millisecond), time.Minute)
}

// datasets is the dataset store of a connection's ports.
func (s *Server) datasets(p *store.Store) *dataset.Store {
	return &dataset.Store{KV: p.Datasets, Blocks: p.Blocks, MaxFileSize: s.cfg.MaxFileSize}
}

// storeRoom returns the room of the store as this server sees it: its
// embedded server's (the disk under it, store.Roomy's reason); in a
// cluster, or on a NATS of its own, also what the servers' probes say, the
// least (a stream's copies fill every server's disk alike).
func (s *Server) storeRoom() func() (int64, error) {
	probes := s.store.RoomFunc()
	switch {
	case s.emb == nil:
		return probes
	case s.cfg.ClusterName == "":
		return s.emb.Room
	}
	return func() (int64, error) {
		room, err := s.emb.Room()
		if err != nil {
			return probes()
		}
		if others, err := probes(); err == nil {
			room = min(room, others)
		}
		return room, nil
	}
}

// PoolName names a process's worker pool: the host and a random suffix, so
// two processes on one host never share keys.
func PoolName(host string) string {
	id := job.NewID("w", time.Now())
	return Sanitize(host) + "-" + id[len(id)-6:]
}

// Sanitize makes s usable as a worker key: letters, digits, - and _.
func Sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "worker"
	}
	return string(b)
}
