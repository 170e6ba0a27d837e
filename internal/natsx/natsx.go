// Package natsx sets up mrcluster's substrate: the embedded NATS server, the
// connection to it (or to an external cluster) and the JetStream streams,
// consumers and buckets. It is the only package that imports NATS server code.
package natsx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Names of the streams, buckets, consumers and subjects. They are the
// contract between servers and workers, wherever they run.
const (
	TasksStream       = "MR_TASKS"
	ResultsStream     = "MR_RESULTS"
	ArchiveStream     = "MR_ARCHIVE" // finished jobs' records, one subject for all (store.Archive)
	JobsBucket        = "mr_jobs"
	WorkersBucket     = "mr_workers"
	DatasetsBucket    = "mr_datasets"    // KV: a dataset's manifest (its files)
	BlocksBucket      = "mr_blocks"      // object store: the blocks of dataset files
	ShuffleBucket     = "mr_shuffle"     // object store: map outputs, by job and attempt
	OutputBucket      = "mr_output"      // object store: reduce outputs, by job and attempt
	IdempotencyBucket = "mr_idempotency" // KV: submit idempotency keys (hashed) → job id, for a day
	HealthBucket      = "mr_health"      // KV: each server's write probe
	KindsBucket       = "mr_kinds"       // KV: uploaded kinds, by name: version, module hash, params
	ModulesBucket     = "mr_modules"     // object store: uploaded kinds' WebAssembly modules, by content hash
	SchedulesBucket   = "mr_schedules"   // KV: cron schedules, by name: the job they submit, the last tick fired
	KindStateBucket   = "mr_kind_state"  // KV: the state of kinds, built in or uploaded, by name: paused
	TokensBucket      = "mr_kind_tokens" // KV: the tasks of rate-limited kinds started per window, by kind lane and window
	ShuffleRetention  = 7 * 24 * time.Hour
	WorkersConsumer   = "workers"
	CoordConsumer     = "coordinator"
	TaskSubject       = "mr.task."   // + job id: the default priority's lane; other lanes' are TaskLaneSubject
	ResultSubject     = "mr.result." // + job id; a message holds results of that job
	ArchiveSubject    = "mr.archive" // every message of ArchiveStream; the job id in its ArchiveKeyHeader
	ArchiveKeyHeader  = "Mr-Job"
	// TaskWakeSubject carries a notice (core NATS, stored nowhere) after
	// tasks were queued in a lane other than the default priority's: an
	// idle fetch waits on the default lane and looks at the others again
	// only when told so, or at its next fetch.
	TaskWakeSubject  = "mr.wake.tasks"
	ResultsRetention = 7 * 24 * time.Hour
)

// TaskLaneSubject is the subject prefix of the task queue's lane of a
// priority: TaskSubject for the default one (as before priorities), else
// "mr.task.p<N>.".
func TaskLaneSubject(priority int) string {
	if priority == job.DefaultPriority {
		return TaskSubject
	}
	return fmt.Sprintf("%sp%d.", TaskSubject, priority)
}

// TaskLaneConsumer is the shared consumer of the task queue's lane of a
// priority: WorkersConsumer for the default one.
func TaskLaneConsumer(priority int) string {
	if priority == job.DefaultPriority {
		return WorkersConsumer
	}
	return fmt.Sprintf("%s-p%d", WorkersConsumer, priority)
}

// LaterLaneSubject is the subject prefix of the task queue's lane of a
// priority's tasks of jobs under way (store.Message.Later): asked before
// the priority's own lane. "mr.task.c.<N>.": a job's subjects in every
// such lane are purged with one wildcard, whose token has four values.
func LaterLaneSubject(priority int) string {
	return fmt.Sprintf("%sc.%d.", TaskSubject, priority)
}

// LaterLaneConsumer is the shared consumer of a later lane.
func LaterLaneConsumer(priority int) string {
	return fmt.Sprintf("%s%d", laterLanePrefix, priority)
}

const laterLanePrefix = WorkersConsumer + "-c"

// KindLaneSubject is the subject prefix of a kind's own lane of the task
// queue (a kind with a concurrency limit): one token for the kind, whose
// dots become '~'.
func KindLaneSubject(kind string) string {
	return TaskSubject + "k." + strings.ReplaceAll(kind, ".", "~") + "."
}

// KindLaneConsumer is the shared consumer of a kind's own lane.
func KindLaneConsumer(kind string) string {
	return kindLanePrefix + strings.ReplaceAll(kind, ".", "~")
}

const kindLanePrefix = WorkersConsumer + "-k-"

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	// srv is the running server; a restart (Restart) replaces it.
	srv   atomic.Pointer[server.Server]
	opts  *server.Options
	log   *slog.Logger
	token string
	// noSpaceAt is when the server last logged a write failed for want
	// of disk space (Unix nanoseconds).
	noSpaceAt *atomic.Int64
	// peers spaces out the reports of unreachable servers of the cluster
	// (across restarts of the embedded server, as noSpaceAt).
	peers *unreachable
	// storeMax is the limit of what the streams hold (health.go).
	storeMax atomic.Int64
}

// EmbeddedConfig configures the embedded NATS server.
type EmbeddedConfig struct {
	// DataDir holds JetStream's files (under jetstream/).
	DataDir string
	// Listen is the client address ("host:port"; port 0 picks a free one).
	Listen string
	// Token, when set, is required of every client, and of routes.
	Token string
	// ServerName names this server in a cluster; it must be unique there.
	ServerName string
	// ClusterName, ClusterListen and Routes form a cluster of servers:
	// the name they share, this server's route address and the others'.
	ClusterName   string
	ClusterListen string
	Routes        []string
	// TLSCert and TLSKey, when set, make the client port and the routes
	// speak TLS only (in-process connections stay plain: they never leave
	// the process). TLSCA, when set, is the CA routes verify each other's
	// certificates with.
	TLSCert, TLSKey, TLSCA string
}

// StartEmbedded starts a NATS server with JetStream file storage, alone or
// as one node of a cluster of embedded servers.
func StartEmbedded(cfg EmbeddedConfig, logger *slog.Logger) (*Embedded, error) {
	host, port, err := hostPort(cfg.Listen, "--"+flags.NATSListen)
	if err != nil {
		return nil, err
	}
	name := cfg.ServerName
	if name == "" {
		name = "mrcluster"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
	}
	if cfg.Token != "" {
		opts.Authorization = cfg.Token
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if opts.TLSConfig, err = server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey}); err != nil {
			return nil, fmt.Errorf("--%s/--%s: %w", flags.NATSTLSCert, flags.NATSTLSKey, err)
		}
		opts.TLSTimeout = 2
	}
	if cfg.ClusterName != "" {
		chost, cport, err := hostPort(cfg.ClusterListen, "--"+flags.ClusterListen)
		if err != nil {
			return nil, err
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: chost, Port: cport}
		// Every failed attempt to reach another server goes to the log,
		// which says it once a minute (natsLog): by default nats-server
		// says a first connection's failures once an hour, so a server
		// given a wrong route was heard of once.
		opts.ConnectErrorReports, opts.ReconnectErrorReports = 1, 1
		if cfg.Token != "" {
			// Routes authenticate with the cluster's token too.
			opts.Cluster.Username, opts.Cluster.Password = "mrcluster", cfg.Token
		}
		for _, r := range cfg.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("route %q: want nats://HOST:PORT, another server's --%s", r, flags.ClusterListen)
			}
			if cfg.Token != "" && u.User == nil {
				u.User = url.UserPassword("mrcluster", cfg.Token)
			}
			opts.Routes = append(opts.Routes, u)
		}
		if opts.TLSConfig != nil {
			rt, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: cfg.TLSCA != ""})
			if err != nil {
				return nil, fmt.Errorf("route TLS: %w", err)
			}
			if cfg.TLSCA != "" {
				rt.RootCAs = rt.ClientCAs // to check the servers this one dials
			}
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = rt, 2
		}
	}
	// A taken port fails now, as a taken HTTP port does, not after the
	// server's 30 s wait to become ready.
	if err := free(opts.Host, opts.Port, flags.NATSListen); err != nil {
		return nil, err
	}
	if cfg.ClusterName != "" {
		if err := free(opts.Cluster.Host, opts.Cluster.Port, flags.ClusterListen); err != nil {
			return nil, err
		}
	}
	e := &Embedded{opts: opts, log: logger, token: cfg.Token, noSpaceAt: new(atomic.Int64), peers: new(unreachable)}
	srv, err := e.start()
	if err != nil {
		return nil, err
	}
	logger.Info("embedded NATS server ready", "client_url", srv.ClientURL(), "store_dir", opts.StoreDir,
		"server_name", name, "cluster", cfg.ClusterName, "routes", len(opts.Routes))
	// A restart listens where this start did, so that remote workers find
	// it again.
	if addr, ok := srv.Addr().(*net.TCPAddr); ok {
		opts.Port = addr.Port
	}
	return e, nil
}

// free checks that host:port can be listened on (a random port, -1 or
// 0, always can).
func free(host string, port int, flag string) error {
	if port <= 0 {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("cannot listen on %s (--%s): %w; is another mrcluster serving there? Stop it, or give another port (0 picks a free one)", net.JoinHostPort(host, strconv.Itoa(port)), flag, err)
	}
	return l.Close()
}

// start starts a server of e's options and makes it e's.
func (e *Embedded) start() (*server.Server, error) {
	limit, err := storeLimit(filepath.Dir(e.opts.StoreDir), dirSize(e.opts.StoreDir))
	if err != nil {
		return nil, err
	}
	e.opts.JetStreamMaxStore = limit // the old server, if any, has stopped
	e.storeMax.Store(limit)
	srv, err := server.NewServer(e.opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS server: %w", err)
	}
	srv.SetLoggerV2(natsLog{log: e.log.With("component", "nats"), noSpaceAt: e.noSpaceAt, peers: e.peers}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not become ready on %s:%d within 30s (is the port taken? set --%s)", e.opts.Host, e.opts.Port, flags.NATSListen)
	}
	e.srv.Store(srv)
	return srv, nil
}

// Restart stops the server and starts it again on the same addresses and
// data, which opens every stream's files anew: a stream whose write failed
// (a full disk) refuses every later write until then, even once space is
// back. Connections reconnect by themselves, in-process ones included.
// (Restarting only JetStream in-process races inside nats-server 2.15.2,
// which replaces its API queues while requests still read them.)
//
// A server that does not stop within restartStopTimeout is left as it is
// and ErrStuck returned: a chaos run saw one, whose JetStream nats-server
// had stopped on a full disk, never stop, and the server answered 503
// until the test ended.
func (e *Embedded) Restart() error { return e.restart(nil) }

// restart is Restart, running between (when not nil) once the old server
// has stopped and before the new one starts; its error stops the restart
// there.
func (e *Embedded) restart(between func() error) error {
	old, hook := e.srv.Load(), stopHook
	stopped := make(chan struct{})
	go func() {
		if hook != nil {
			hook()
		}
		old.Shutdown()
		old.WaitForShutdown()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(restartStopTimeout):
		return fmt.Errorf("%w: it did not stop within %s", ErrStuck, restartStopTimeout)
	}
	if between != nil {
		if err := between(); err != nil {
			return err
		}
	}
	_, err := e.start()
	return err
}

// Name is the embedded server's name in its cluster.
func (e *Embedded) Name() string { return e.srv.Load().Name() }

// CopyState is what this server's own copy of a stream holds, whichever
// server leads it.
type CopyState struct{ Msgs, LastSeq uint64 }

// LocalCopies returns the state of this server's copies of the streams
// named (those it holds).
func (e *Embedded) LocalCopies(names []string) (map[string]CopyState, error) {
	info, err := e.srv.Load().Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return nil, err
	}
	out := map[string]CopyState{}
	for _, acc := range info.AccountDetails {
		for _, st := range acc.Streams {
			if slices.Contains(names, st.Name) {
				out[st.Name] = CopyState{Msgs: st.State.Msgs, LastSeq: st.State.LastSeq}
			}
		}
	}
	return out, nil
}

// Leader returns a stream's state as its leader holds it, and where its
// copies are (nil for a server alone).
func (s *Store) Leader(ctx context.Context, name string) (CopyState, *jetstream.ClusterInfo, error) {
	st, err := s.JS.Stream(ctx, name)
	if err != nil {
		return CopyState{}, nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info := st.CachedInfo()
	return CopyState{Msgs: info.State.Msgs, LastSeq: info.State.LastSeq}, info.Cluster, nil
}

// RestartWithout restarts the server (as Restart) with its copies of the
// streams named moved out of its store, into dir: JetStream then copies
// each of them again from the other servers of its cluster.
func (e *Embedded) RestartWithout(streams []string, dir string) error {
	return e.restart(func() error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		for _, name := range streams {
			from, err := filepath.Glob(filepath.Join(e.opts.StoreDir, server.JetStreamStoreDir, "*", "streams", name))
			if err != nil {
				return err
			}
			for _, f := range from {
				if err := os.Rename(f, filepath.Join(dir, name)); err != nil {
					return fmt.Errorf("set aside this server's copy of stream %s: %w", name, err)
				}
			}
		}
		return nil
	})
}

// ErrStuck is Restart's error for an embedded server that did not stop:
// only a new process can go on.
var ErrStuck = errors.New("the embedded NATS server is stuck")

// restartStopTimeout bounds Restart's wait for the server to stop.
var restartStopTimeout = 30 * time.Second

// stopHook, when set (by tests), runs before Restart stops the server.
var stopHook func()

// InProcessConn connects to the current server, in process: what an
// in-process connection reconnects through after a restart.
func (e *Embedded) InProcessConn() (net.Conn, error) { return e.srv.Load().InProcessConn() }

func hostPort(addr, flag string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w", flag, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: port is not a number", flag, addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// ClientURL is the address remote workers connect to.
func (e *Embedded) ClientURL() string { return e.srv.Load().ClientURL() }

// Conn is a connection to NATS: the embedded server's, in process, or a
// remote one's.
type Conn struct{ nc *nats.Conn }

// Connected reports whether the connection is up now.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// Close sends what is buffered (acks above all), within two seconds, and
// closes the connection. A connection that is down has nothing to send it
// on: it is closed at once (a worker process whose servers had gone waited
// the two seconds on its way out).
func (c *Conn) Close() {
	if c.nc.IsConnected() {
		_ = c.nc.FlushTimeout(2 * time.Second)
	}
	c.nc.Close()
}

// Explain says what to do about a connection that cannot reach the
// cluster, when its last error tells: a certificate it cannot check, or
// credentials refused. It returns nil otherwise.
func (c *Conn) Explain(url string) error {
	le := c.nc.LastError()
	switch {
	case le == nil:
		return nil
	case strings.Contains(le.Error(), "x509") || strings.Contains(le.Error(), "tls"):
		return fmt.Errorf("the NATS server at %s speaks TLS and this worker cannot check its certificate (%v): give the CA with --%s", url, le, flags.NATSTLSCA)
	case errors.Is(le, nats.ErrAuthorization):
		return fmt.Errorf("the NATS server at %s refused this worker's credentials: give it the cluster's token with --%s (or %s)", url, flags.NATSToken, flags.Env(flags.NATSToken))
	}
	return nil
}

// Connect opens an in-process connection: no socket, same client code path.
func (e *Embedded) Connect(name string) (*Conn, error) {
	opts := []nats.Option{nats.InProcessServer(e), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.ErrorHandler(asyncErrors(e.log))}
	if e.token != "" {
		opts = append(opts, nats.Token(e.token))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, err
	}
	return &Conn{nc}, nil
}

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		srv := e.srv.Load()
		srv.Shutdown()
		srv.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the embedded NATS server did not stop in time: %w", ctx.Err())
	}
}

// Dial connects to an external NATS server or cluster at url, retrying for
// ever in the background when it goes away.
func Dial(url, name, token, tlsCA string, logger *slog.Logger) (*Conn, error) {
	opts := []nats.Option{}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	if tlsCA != "" {
		opts = append(opts, nats.RootCAs(tlsCA))
	}
	nc, err := nats.Connect(url, append(opts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("lost connection to NATS; reconnecting", "url", url, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("reconnected to NATS", "url", nc.ConnectedUrl())
		}),
		nats.ErrorHandler(asyncErrors(logger)),
	)...)
	if err != nil {
		return nil, err
	}
	return &Conn{nc}, nil
}

// asyncErrors logs the errors a connection meets outside any call (nats.go
// printed them to standard error, beside the log, without it: "nats:
// consumer not active on connection [84] for subscription on
// "$KV.mr_kinds.>"" every few seconds while a worker's server was gone). A
// subscription that dropped messages for want of room, or refused by the
// server's permissions, is for the operator to see; a watch or consumer
// that missed its heartbeats (its server gone, paused, or electing a
// leader) is followed again by its owner, as a lost connection is: debug.
func asyncErrors(log *slog.Logger) nats.ErrHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subject := ""
		if sub != nil {
			subject = sub.Subject
		}
		switch {
		case errors.Is(err, nats.ErrSlowConsumer):
			log.Warn("a NATS subscription of this process fell behind and messages for it were dropped: the process is too slow for what it follows; give it more CPU or fewer workers",
				"subject", subject, "err", err)
		case errors.Is(err, nats.ErrPermissionViolation):
			log.Warn("the NATS server refused a subscription or publish of this process: its credentials do not allow it; check the accounts and permissions of the NATS servers",
				"subject", subject, "err", err)
		case errors.Is(err, nats.ErrConsumerNotActive), errors.Is(err, jetstream.ErrNoHeartbeat):
			log.Debug("a NATS consumer missed its heartbeats; it is followed again", "subject", subject, "err", err)
		default:
			// Its owner meets its consequences (a watch followed again,
			// a call failed and retried) and says what matters.
			log.Info("NATS reported an error on a subscription", "subject", subject, "err", err)
		}
	}
}

// IsLoopback reports whether a listen address ("host:port") only accepts
// connections from this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Token returns the NATS token of a data directory, creating a random one
// (kept in dataDir/nats-token, readable by its owner only) on first use.
// created reports whether it was just made.
func Token(dataDir string) (token string, created bool, err error) {
	path := filepath.Join(dataDir, "nats-token")
	if data, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(data)), false, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	token = hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("create %s: %w", dataDir, err)
	}
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write the NATS token to %s: %w", path, err)
	}
	return token, true, nil
}

// Store holds the handles of mrcluster's JetStream resources.
type Store struct {
	JS      jetstream.JetStream
	Tasks   jetstream.Stream
	Results jetstream.Stream
	Archive jetstream.Stream
	Jobs    jetstream.KeyValue
	Workers jetstream.KeyValue
	// Idempotency maps submits' idempotency keys to their jobs.
	Idempotency jetstream.KeyValue
	// Health takes each server's write probe.
	Health jetstream.KeyValue

	Datasets jetstream.KeyValue
	Blocks   jetstream.ObjectStore
	Shuffle  jetstream.ObjectStore
	Output   jetstream.ObjectStore

	Kinds   jetstream.KeyValue
	Modules jetstream.ObjectStore
	// objStreams are the object stores' streams, by bucket.
	objStreams map[string]jetstream.Stream

	Schedules jetstream.KeyValue
	KindState jetstream.KeyValue
	Tokens    jetstream.KeyValue

	// Ports are the same resources as package store's ports: what the
	// rest of mrcluster uses.
	Ports *store.Store
	// aloneDir and log are StoreConfig's, for the kind lanes' consumers.
	aloneDir string
	log      *slog.Logger
	// archiveAfter and shared are StoreConfig's.
	archiveAfter time.Duration
	shared       bool
	// dead purges the chunks of dead objects that the store refused to
	// purge at first (deadchunks.go).
	dead *deadChunks
}

// SetLog makes the store's background work log to l (Open's store logs
// nothing).
func (s *Store) SetLog(l *slog.Logger) {
	s.log = l
	if s.dead != nil {
		s.dead.mu.Lock()
		s.dead.log = l
		s.dead.mu.Unlock()
	}
}

// Close ends the store's background work: the purges of dead objects'
// chunks still waiting (what is left stays in the store, as after a
// crash). The connection is its owner's to close.
func (s *Store) Close() {
	if s.dead != nil {
		s.dead.close()
	}
	if s.Ports != nil {
		if t, ok := s.Ports.Tasks.(*stream); ok {
			t.wake.close()
		}
	}
}

// StoreConfig tunes the resources Setup creates.
type StoreConfig struct {
	// AckWait is how long a task may run without a sign of life from its
	// worker before it is given to another worker.
	AckWait time.Duration
	// Replicas is how many servers of a cluster hold each stream, bucket
	// and object store (1 when zero).
	Replicas int
	// ArchiveAfter is how long a finished job's record stays in the jobs
	// bucket besides the archive (0: store.DefaultArchiveAfter; below 0:
	// none is archived).
	ArchiveAfter time.Duration
	// Shared says other servers may write job records to the store too (a
	// cluster, or an external NATS server): store.Jobs.Shared.
	Shared bool
	// AloneDir, when set, is the data directory of the embedded server
	// the store is on, which this server owns alone. A durable consumer
	// whose state file JetStream cannot read (a byte flipped on disk: the
	// embedded server refused the consumer at every start), or whose
	// state passes over messages its work queue still holds (a flipped
	// byte that still reads: those tasks waited for good), is then made
	// again from its stream, and Log says so.
	AloneDir string
	Log      *slog.Logger
}

// resource is one stream, bucket or object store of mrcluster. A new one
// is one row of resources: its set-up, its opening, the caught-up check of
// a rejoining server, the integrity check and the metrics follow from it.
type resource struct {
	// One of these describes it.
	st  *jetstream.StreamConfig
	kv  *jetstream.KeyValueConfig
	obj *jetstream.ObjectStoreConfig
	// leaderReads makes its reads go to the stream's leader: with
	// replicas, a direct get may be answered by a follower that has not
	// seen the last write yet (a job record read stale would make the
	// coordinator drop a result as a duplicate; a stale object's metadata
	// would cut a download short).
	leaderReads bool
	// state marks a stream on disk that holds the cluster's state: what a
	// rejoining server waits to hold a current copy of, and what the
	// integrity check of a single server compares with its record.
	state bool
	// metric makes /metrics report the stream's messages and bytes.
	metric bool
	// replaceOld deletes and recreates a bucket whose storage type an
	// earlier version chose differently (it holds nothing lasting).
	replaceOld bool
	// msgTTL lets a bucket's writes carry a time to live (the jobs
	// bucket's finished records: store.KVExpiring).
	msgTTL bool
	// bind points at the handle in a Store.
	bindSt  func(*Store) *jetstream.Stream
	bindKV  func(*Store) *jetstream.KeyValue
	bindObj func(*Store) *jetstream.ObjectStore
}

// stream is the name of the JetStream stream behind r.
func (r resource) stream() string {
	switch {
	case r.st != nil:
		return r.st.Name
	case r.kv != nil:
		return "KV_" + r.kv.Bucket
	}
	return "OBJ_" + r.obj.Bucket
}

// resources is the table of mrcluster's streams, buckets and object
// stores, with replicas copies of each.
func resources(replicas int) []resource {
	return []resource{
		{st: &jetstream.StreamConfig{
			Name:        TasksStream,
			Description: "tasks waiting for a worker (work queue: a task leaves when a worker acks it)",
			Subjects:    []string{TaskSubject + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, state: true, metric: true, bindSt: func(s *Store) *jetstream.Stream { return &s.Tasks }},
		{st: &jetstream.StreamConfig{
			Name:        ResultsStream,
			Description: "task results, one message per finished attempt; the per-task history of every job",
			Subjects:    []string{ResultSubject + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      ResultsRetention,
			Replicas:    replicas,
		}, state: true, metric: true, bindSt: func(s *Store) *jetstream.Stream { return &s.Results }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      JobsBucket,
			Description: "job records, one key per job id; a finished job's expires once archived in " + ArchiveStream,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, leaderReads: true, state: true, metric: true, msgTTL: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Jobs }},
		{st: &jetstream.StreamConfig{
			Name:        ArchiveStream,
			Description: "finished jobs' records, one subject for all: read by sequence (each server indexes them by job id)",
			Subjects:    []string{ArchiveSubject},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, state: true, metric: true, bindSt: func(s *Store) *jetstream.Stream { return &s.Archive }},
		// On disk, not in memory: a replicated memory stream whose servers
		// restart one after another loses its state and stays without a
		// leader (the chaos test saw servers unable to announce workers).
		{kv: &jetstream.KeyValueConfig{
			Bucket:      WorkersBucket,
			Description: "worker liveness and status; an entry expires when its worker stops heartbeating",
			History:     1,
			TTL:         store.WorkerTTL,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, metric: true, replaceOld: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Workers }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      IdempotencyBucket,
			Description: "idempotency keys of submits (hashed) and the job each created; kept a day",
			History:     1,
			TTL:         24 * time.Hour,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, leaderReads: true, state: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Idempotency }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      HealthBucket,
			Description: "write probes of the servers: a server that cannot write here is not ready",
			History:     1,
			TTL:         time.Hour,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Health }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      DatasetsBucket,
			Description: "dataset manifests: the files of each dataset and their blocks",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, leaderReads: true, state: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Datasets }},
		{obj: &jetstream.ObjectStoreConfig{
			Bucket: BlocksBucket, Description: "blocks of dataset files", Storage: jetstream.FileStorage, Replicas: replicas,
		}, leaderReads: true, state: true, bindObj: func(s *Store) *jetstream.ObjectStore { return &s.Blocks }},
		{obj: &jetstream.ObjectStoreConfig{
			Bucket: ShuffleBucket, Description: "intermediate map outputs; deleted when their job ends, or after 7 days",
			TTL: ShuffleRetention, Storage: jetstream.FileStorage, Replicas: replicas,
		}, leaderReads: true, state: true, bindObj: func(s *Store) *jetstream.ObjectStore { return &s.Shuffle }},
		{obj: &jetstream.ObjectStoreConfig{
			Bucket: OutputBucket, Description: "job outputs, one object per reduce task", Storage: jetstream.FileStorage, Replicas: replicas,
		}, leaderReads: true, state: true, bindObj: func(s *Store) *jetstream.ObjectStore { return &s.Output }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      KindsBucket,
			Description: "uploaded kinds: each name's version, module hash, params and earlier versions",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, leaderReads: true, state: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Kinds }},
		{obj: &jetstream.ObjectStoreConfig{
			Bucket: ModulesBucket, Description: "uploaded kinds' WebAssembly modules, by content hash", Storage: jetstream.FileStorage, Replicas: replicas,
		}, leaderReads: true, state: true, bindObj: func(s *Store) *jetstream.ObjectStore { return &s.Modules }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      SchedulesBucket,
			Description: "cron schedules: each name's cron, time zone, job spec, and the last tick it fired",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, leaderReads: true, state: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Schedules }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      KindStateBucket,
			Description: "the state of kinds by name: paused (their waiting tasks out of the queue until resumed)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}, leaderReads: true, state: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.KindState }},
		{kv: &jetstream.KeyValueConfig{
			Bucket:      TokensBucket,
			Description: "tasks of rate-limited kinds started per window: a count per kind lane and second (or minute)",
			History:     1,
			TTL:         5 * time.Minute,
			Storage:     jetstream.MemoryStorage,
			Replicas:    replicas,
		}, leaderReads: true, bindKV: func(s *Store) *jetstream.KeyValue { return &s.Tokens }},
	}
}

// Setup creates or updates every stream, bucket and consumer mrcluster uses.
// It is idempotent: every server runs it at start.
func Setup(ctx context.Context, c *Conn, cfg StoreConfig) (*Store, error) {
	js, err := newJetStream(c.nc)
	if err != nil {
		return nil, fmt.Errorf("open JetStream: %w", err)
	}
	s := &Store{JS: js, archiveAfter: cfg.ArchiveAfter, shared: cfg.Shared, aloneDir: cfg.AloneDir, log: cfg.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range resources(max(cfg.Replicas, 1)) {
		if err := r.create(ctx, js); err != nil {
			return nil, err
		}
		if r.leaderReads {
			if err := leaderReads(ctx, js, r.stream()); err != nil {
				return nil, err
			}
		}
		if err := r.open(ctx, js, s); err != nil {
			return nil, err
		}
	}
	ackWait := cfg.AckWait
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	// One consumer per priority lane, the default lane's first: before
	// priorities it took the whole stream, and a work queue's consumers
	// must not overlap (mr.task.<job> has one token less than the other
	// lanes' mr.task.p<N>.<job>). No bound on leased tasks (-1): workers
	// ask the lanes without waiting, and a no-wait request to a consumer
	// at its bound with tasks waiting is held by the server until one is
	// acked, with no deadline; pools bound what they hold themselves.
	for _, p := range []int{job.DefaultPriority, 1, 3, 4} {
		filter := TaskLaneSubject(p) + "*"
		if err = s.createConsumer(ctx, s.Tasks, TasksStream, jetstream.ConsumerConfig{
			Durable:       TaskLaneConsumer(p),
			Description:   fmt.Sprintf("shared by every worker: tasks of priority %d", p),
			FilterSubject: filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxAckPending: -1,
		}); err != nil {
			return nil, fmt.Errorf("create consumer %s on %s: %w", TaskLaneConsumer(p), TasksStream, err)
		}
		// Its later lane (LaterLaneSubject). Processes find it by the
		// listing of the queue's consumers, as the kind lanes: a store
		// of an earlier version, without them, is used as it was.
		if err = s.createConsumer(ctx, s.Tasks, TasksStream, jetstream.ConsumerConfig{
			Durable:       LaterLaneConsumer(p),
			Description:   fmt.Sprintf("shared by every worker: tasks of priority %d of jobs under way (later phases, tasks run again)", p),
			FilterSubject: LaterLaneSubject(p) + "*",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxAckPending: -1,
		}); err != nil {
			return nil, fmt.Errorf("create consumer %s on %s: %w", LaterLaneConsumer(p), TasksStream, err)
		}
	}
	if err = s.createConsumer(ctx, s.Results, ResultsStream, jetstream.ConsumerConfig{
		Durable:       CoordConsumer,
		Description:   "applies task results to job records",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       10 * time.Second,
		MaxAckPending: 20000,
	}); err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", CoordConsumer, ResultsStream, err)
	}
	if s.aloneDir != "" {
		if err := s.mendConsumers(ctx); err != nil {
			return nil, err
		}
	}
	s.Ports = ports(c.nc, s)
	return s, nil
}

// createConsumer creates or updates a durable consumer of stream. When
// JetStream cannot make its store and the server owns its store alone,
// the consumer's state file is set aside, and the consumer made again.
func (s *Store) createConsumer(ctx context.Context, st jetstream.Stream, stream string, cfg jetstream.ConsumerConfig) error {
	_, err := st.CreateOrUpdateConsumer(ctx, cfg)
	if err == nil || s.aloneDir == "" || !isConsumerStoreFailure(err) {
		return err
	}
	aside, serr := SetAsideConsumerState(s.aloneDir, stream, cfg.Durable)
	if serr != nil || aside == "" {
		return fmt.Errorf("%w; its state could not be set aside (%v): restore the data directory from a backup", err, serr)
	}
	s.log.Warn("the state of consumer "+cfg.Durable+" of stream "+stream+" was damaged on disk, and the store would not open it: it is set aside and the consumer starts again from the stream (its messages are delivered again; a task or result already done is not done twice)", "file", aside)
	_, err = st.CreateOrUpdateConsumer(ctx, cfg)
	return err
}

// isConsumerStoreFailure reports whether JetStream could not make a
// consumer's store (a damaged state file says "corrupt state file" in
// the server's log and this to its client).
func isConsumerStoreFailure(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(10012) // JSConsumerStoreFailedErrF
}

// mendConsumers makes again, at the start of a server that owns its
// store alone, the consumers whose state a damaged file left wrong: past
// their stream's last message (resetAhead), or passing over tasks the
// queue holds (mendTaskLanes).
func (s *Store) mendConsumers(ctx context.Context) error {
	results, err := s.Results.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", ResultsStream, err)
	}
	coord, err := s.Results.Consumer(ctx, CoordConsumer)
	if err != nil {
		return fmt.Errorf("read consumer %s of %s: %w", CoordConsumer, ResultsStream, err)
	}
	if _, err := s.resetAhead(ctx, s.Results, ResultsStream, coord.CachedInfo(), results.State.LastSeq); err != nil {
		return err
	}
	return s.mendTaskLanes(ctx)
}

// mendTaskLanes makes again every lane of the task queue whose state is
// past the queue's last message, or passes over tasks the queue holds: in
// a work queue a message leaves when it is acked, so every message a
// lane's filter takes is either still to be delivered (pending) or
// delivered and not acked; one that is neither, the lane will never
// deliver. A flipped byte of a state file that still reads as a state did
// so (the jobs of those tasks waited for good, every worker idle). The
// lanes' reach together is compared with the queue's size first (cheap);
// only when short is each lane's subjects counted.
func (s *Store) mendTaskLanes(ctx context.Context) error {
	// The lanes are read before and after the queue's size, so that a
	// task published or acked meanwhile (a remote worker's) does not look
	// passed over.
	before, err := s.taskConsumers(ctx)
	if err != nil {
		return err
	}
	info, err := s.Tasks.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", TasksStream, err)
	}
	remade := false
	for _, c := range before {
		r, err := s.resetAhead(ctx, s.Tasks, TasksStream, c, info.State.LastSeq)
		if err != nil {
			return err
		}
		remade = remade || r
	}
	held := info.State.Msgs
	if _, err := s.Tasks.GetLastMsgForSubject(ctx, TaskAnchorSubject); err == nil && held > 0 {
		held-- // the anchor, which no lane takes
	}
	after, err := s.taskConsumers(ctx)
	if err != nil {
		return err
	}
	if remade {
		before = after // a lane made again reaches anew
	}
	var reach1, reach2 uint64
	for _, c := range before {
		reach1 += reach(c)
	}
	for _, c := range after {
		reach2 += reach(c)
	}
	if held <= max(reach1, reach2) {
		return nil
	}
	for _, c := range after {
		name := c.Config.Durable
		si, err := s.Tasks.Info(ctx, jetstream.WithSubjectFilter(c.Config.FilterSubject))
		if err != nil {
			return fmt.Errorf("count the tasks of consumer %s: %w", name, err)
		}
		var n uint64
		for _, k := range si.State.Subjects {
			n += k
		}
		if n <= reach(c) {
			continue
		}
		if now, err := s.Tasks.Consumer(ctx, name); err != nil {
			return fmt.Errorf("read consumer %s of %s: %w", name, TasksStream, err)
		} else if n <= reach(now.CachedInfo()) {
			continue
		}
		if err := s.remake(ctx, s.Tasks, TasksStream, c.Config); err != nil {
			return err
		}
		s.log.Warn("the state of consumer "+name+" of stream "+TasksStream+" passed over tasks the queue holds (damaged on disk): the consumer was made again and delivers them",
			"tasks", n, "reachable", reach(c))
	}
	return nil
}

// resetAhead makes a durable consumer of stream again when its state is
// past the stream's last message, last: JetStream takes such a state (and
// says "delivered sequence … past last stream sequence" in its log), and
// the consumer then passes over every message up to it. A flipped byte of
// the results' consumer's state file did so: no result was applied, and
// no job finished, new ones neither (found by hand). The state may also
// come from a stream whose last messages were lost. The consumer made
// again delivers what the stream holds from its start (a result already
// applied is dropped as a duplicate). It reports whether it did.
func (s *Store) resetAhead(ctx context.Context, st jetstream.Stream, stream string, ci *jetstream.ConsumerInfo, last uint64) (bool, error) {
	if ci.Delivered.Stream <= last && ci.AckFloor.Stream <= last {
		return false, nil
	}
	if err := s.remake(ctx, st, stream, ci.Config); err != nil {
		return false, err
	}
	s.log.Warn("the state of consumer "+ci.Config.Durable+" of stream "+stream+" was past the stream's last message (damaged on disk, or the stream's last messages lost): the consumer was made again and delivers the stream from its start",
		"delivered", ci.Delivered.Stream, "last", last)
	return true, nil
}

// remake deletes a durable consumer and makes it again with cfg: a new
// state, from the stream's start.
func (s *Store) remake(ctx context.Context, st jetstream.Stream, stream string, cfg jetstream.ConsumerConfig) error {
	if err := st.DeleteConsumer(ctx, cfg.Durable); err != nil {
		return fmt.Errorf("reset consumer %s of %s: %w", cfg.Durable, stream, err)
	}
	if _, err := st.CreateConsumer(ctx, cfg); err != nil {
		return fmt.Errorf("reset consumer %s of %s: %w", cfg.Durable, stream, err)
	}
	return nil
}

// taskConsumers lists the task queue's durable consumers (its lanes).
func (s *Store) taskConsumers(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
	list := s.Tasks.ListConsumers(ctx)
	var out []*jetstream.ConsumerInfo
	for info := range list.Info() {
		if info.Config.Durable != "" && info.Config.FilterSubject != "" {
			out = append(out, info)
		}
	}
	if err := list.Err(); err != nil {
		return nil, fmt.Errorf("list the consumers of %s: %w", TasksStream, err)
	}
	return out, nil
}

// reach is how many of its stream's messages a work queue's consumer
// will still deliver or hears of: those after what it delivered, and
// those delivered and not acked.
func reach(c *jetstream.ConsumerInfo) uint64 {
	return c.NumPending + uint64(max(c.NumAckPending, 0))
}

// SetAsideConsumerState renames the state file of a durable consumer of
// stream in the embedded server's store under dataDir, so that JetStream
// makes the consumer again with a new state, and returns the file's new
// name ("" when it had none). The server must not be using that consumer:
// JetStream refused it, or is not running.
func SetAsideConsumerState(dataDir, stream, consumer string) (string, error) {
	files, err := filepath.Glob(filepath.Join(dataDir, "jetstream", server.JetStreamStoreDir, "*", "streams", stream, "obs", consumer, "o.dat"))
	if err != nil || len(files) == 0 {
		return "", err
	}
	aside := fmt.Sprintf("%s.damaged-%d", files[0], time.Now().Unix())
	return aside, os.Rename(files[0], aside)
}

// create creates or updates the resource.
func (r resource) create(ctx context.Context, js jetstream.JetStream) error {
	var err error
	switch {
	case r.st != nil:
		_, err = js.CreateOrUpdateStream(ctx, *r.st)
	case r.kv != nil && r.msgTTL:
		err = createExpiring(ctx, js, *r.kv)
	case r.kv != nil:
		_, err = js.CreateOrUpdateKeyValue(ctx, *r.kv)
		if err != nil && r.replaceOld && strings.Contains(err.Error(), "storage type") {
			if err = js.DeleteKeyValue(ctx, r.kv.Bucket); err == nil {
				_, err = js.CreateOrUpdateKeyValue(ctx, *r.kv)
			}
		}
	default:
		_, err = js.CreateOrUpdateObjectStore(ctx, *r.obj)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", r.stream(), err)
	}
	return nil
}

// createExpiring creates or updates a bucket whose stream lets messages
// carry a time to live. The library makes a bucket's stream without it
// unless deletions leave markers (which watchers would take for deletions
// of the jobs), and a stream's message TTLs cannot be turned off: so the
// bucket is made by the library once, then its stream is updated as a
// stream.
func createExpiring(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) error {
	name := "KV_" + cfg.Bucket
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return err
		}
		st, err = js.Stream(ctx, name)
	}
	if err != nil {
		return err
	}
	sc := st.CachedInfo().Config
	if sc.AllowMsgTTL && sc.Replicas == cfg.Replicas && sc.Description == cfg.Description {
		return nil
	}
	sc.AllowMsgTTL, sc.Replicas, sc.Description = true, cfg.Replicas, cfg.Description
	_, err = js.UpdateStream(ctx, sc)
	return err
}

// open binds the resource's handle in s.
func (r resource) open(ctx context.Context, js jetstream.JetStream, s *Store) error {
	var err error
	switch {
	case r.st != nil:
		*r.bindSt(s), err = js.Stream(ctx, r.st.Name)
	case r.kv != nil:
		*r.bindKV(s), err = js.KeyValue(ctx, r.kv.Bucket)
	default:
		*r.bindObj(s), err = js.ObjectStore(ctx, r.obj.Bucket)
		if err == nil {
			var st jetstream.Stream
			if st, err = js.Stream(ctx, r.stream()); err == nil {
				if s.objStreams == nil {
					s.objStreams = map[string]jetstream.Stream{}
				}
				s.objStreams[r.obj.Bucket] = st
			}
		}
	}
	if err != nil {
		return fmt.Errorf("open %s (has a server set up the cluster?): %w", r.stream(), err)
	}
	return nil
}

// Open binds to the resources a server's Setup created, without changing
// them: what a worker does.
func Open(ctx context.Context, c *Conn) (*Store, error) {
	js, err := newJetStream(c.nc)
	if err != nil {
		return nil, fmt.Errorf("open JetStream: %w", err)
	}
	s := &Store{JS: js}
	for _, r := range resources(1) {
		if err := r.open(ctx, js, s); err != nil {
			return nil, err
		}
	}
	s.Ports = ports(c.nc, s)
	return s, nil
}

// FileStreams names the streams kept on disk that hold the cluster's state.
func FileStreams() []string {
	var out []string
	for _, r := range resources(1) {
		if r.state {
			out = append(out, r.stream())
		}
	}
	return out
}

// FileBuckets returns the streams of the key-value buckets kept on disk:
// small records, whose index files a server may drop before its start
// so that JetStream rebuilds them, checking every record.
func FileBuckets() []string {
	var out []string
	for _, r := range resources(1) {
		if r.kv != nil && r.kv.Storage == jetstream.FileStorage {
			out = append(out, r.stream())
		}
	}
	return out
}

// Describe returns what stream name holds, as its configuration
// describes it ("" for a stream that is not mrcluster's).
func Describe(name string) string {
	for _, r := range resources(1) {
		if r.stream() == name {
			switch {
			case r.st != nil:
				return r.st.Description
			case r.kv != nil:
				return r.kv.Description
			}
			return r.obj.Description
		}
	}
	return ""
}

// StreamState is what a stream holds.
type StreamState struct {
	Msgs, Bytes, LastSeq uint64
	// LostMsgs and LostBytes count what failed its checksums when the
	// stream's files were read.
	LostMsgs  int
	LostBytes uint64
}

// States reads the states of the streams that hold the cluster's state.
func (s *Store) States(ctx context.Context) (map[string]StreamState, error) {
	return s.states(ctx, func(r resource) bool { return r.state })
}

// MetricStates reads the states of the streams /metrics reports, leaving
// out those that do not answer.
func (s *Store) MetricStates(ctx context.Context) map[string]StreamState {
	out, _ := s.states(ctx, func(r resource) bool { return r.metric })
	return out
}

func (s *Store) states(ctx context.Context, which func(resource) bool) (map[string]StreamState, error) {
	out := map[string]StreamState{}
	var first error
	for _, r := range resources(1) {
		if !which(r) {
			continue
		}
		name := r.stream()
		st, err := s.JS.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("stream %s: %w", name, err)
			}
			continue
		}
		state := StreamState{Msgs: info.State.Msgs, Bytes: info.State.Bytes, LastSeq: info.State.LastSeq}
		if info.State.Lost != nil {
			state.LostMsgs, state.LostBytes = len(info.State.Lost.Msgs), info.State.Lost.Bytes
		}
		out[name] = state
	}
	return out, first
}

// PublishAsyncTimeout bounds the wait for the acknowledgement of an
// asynchronous publish: without it, a future of a publish lost in a
// partition would never resolve.
const PublishAsyncTimeout = 30 * time.Second

func newJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncTimeout(PublishAsyncTimeout))
}

// leaderReads turns off direct gets on a stream. An object store's
// objects are found by a get of their metadata: a stale one on a server
// that just rejoined a cluster would cut a download short.
func leaderReads(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowDirect || cfg.MirrorDirect {
		cfg.AllowDirect, cfg.MirrorDirect = false, false
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("make stream %s read from its leader: %w", stream, err)
		}
	}
	return nil
}

// Available reports whether JetStream answers (in a cluster: whether its
// leader is elected), within a second.
func Available(ctx context.Context, c *Conn) error {
	js, err := newJetStream(c.nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// OpenServer binds to what another server's Setup created, consumers
// included: a server of a cluster that is not the one creating them.
func OpenServer(ctx context.Context, nc *Conn) (*Store, error) {
	s, err := Open(ctx, nc)
	if err != nil {
		return nil, err
	}
	for p := job.MinPriority; p <= job.MaxPriority; p++ {
		if _, err := s.Tasks.Consumer(ctx, TaskLaneConsumer(p)); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", TaskLaneConsumer(p), err)
		}
	}
	if _, err := s.Results.Consumer(ctx, CoordConsumer); err != nil {
		return nil, fmt.Errorf("consumer %s: %w", CoordConsumer, err)
	}
	return s, nil
}

// CaughtUp reports whether this server (by name) holds a current copy of
// every stream of the store, or leads it: what a server that rejoins a
// cluster waits for before it serves, so that its reads are not stale.
func (s *Store) CaughtUp(ctx context.Context, server string) error {
	for _, n := range FileStreams() {
		st, err := s.JS.Stream(ctx, n)
		if err != nil {
			return fmt.Errorf("stream %s: %w", n, err)
		}
		c := st.CachedInfo().Cluster
		if c == nil || c.Leader == server {
			continue
		}
		if c.Leader == "" {
			return fmt.Errorf("stream %s has no leader yet", n)
		}
		for _, r := range c.Replicas {
			if r.Name == server && !r.Current {
				return fmt.Errorf("this server's copy of stream %s is %d operations behind", n, r.Lag)
			}
		}
	}
	return nil
}

// RouteHost returns the host:port of a route URL.
func RouteHost(route string) string {
	if u, err := url.Parse(strings.TrimSpace(route)); err == nil && u.Host != "" {
		return u.Host
	}
	return route
}

// TaskAnchorSubject holds one message of the task queue that no lane ever
// takes: five tokens, which no lane's filter (mr.task.<job>,
// mr.task.p<N>.<job>, mr.task.k.<kind>.<job>) and no purge of a job's
// tasks matches.
const TaskAnchorSubject = TaskSubject + "anchor.last.block"

// AnchorTasks stores the task queue's anchor again, then purges the ones
// before it. Why: JetStream's file store deletes its last block whenever
// an ack empties it and creates a new file for the next message (a
// tombstone written, a file created, another removed, under the stream's
// lock), and a queue that workers keep empty did that for about every
// task: 7 % of the CPU at 2,000 one-task jobs a second. A message that
// stays keeps the block it is in from emptying; stored every second, it
// is in the last block again soon after each new block starts.
func (s *Store) AnchorTasks(ctx context.Context) error {
	ack, err := s.JS.Publish(ctx, TaskAnchorSubject, nil)
	if err != nil {
		return storeErr(err)
	}
	return storeErr(s.Tasks.Purge(ctx, jetstream.WithPurgeSubject(TaskAnchorSubject), jetstream.WithPurgeSequence(ack.Sequence)))
}

// probe is a server's write probe in the health bucket: when it was
// written, and the bytes its embedded server's store could still take
// (Embedded.Room; absent when unknown), for worker processes, which cannot
// see a server's disk (RoomFunc).
type probe struct {
	At   time.Time `json:"at"`
	Room *int64    `json:"room,omitempty"`
}

// Probe writes key to the health bucket: whether the store takes a write.
// room, when known, is the room its server's store has.
func (s *Store) Probe(ctx context.Context, key string, room *int64) error {
	v, err := json.Marshal(probe{At: time.Now().UTC(), Room: room})
	if err != nil {
		return err
	}
	_, err = s.Health.Put(ctx, key, v)
	return err
}

// roomFresh is how old a probe's room may be to count: a few probes.
const roomFresh = 10 * time.Second

// RoomFunc returns the room of the cluster's stores as its servers' probes
// say it (the least of them: a stream's copies fill every server alike),
// read again at most every second, for a store.Roomy in a process without
// an embedded server. Its error says no server said its room lately.
func (s *Store) RoomFunc() func() (int64, error) {
	var (
		mu   sync.Mutex
		read time.Time
		room int64
		err  error
	)
	return func() (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(read) < time.Second {
			return room, err
		}
		read = time.Now()
		room, err = s.room()
		return room, err
	}
}

func (s *Store) room() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	entries, err := s.Ports.Health.Entries(ctx, "")
	if err != nil {
		return 0, err
	}
	least, known := int64(0), false
	for _, e := range entries {
		var p probe
		if json.Unmarshal(e.Value, &p) != nil || p.Room == nil || time.Since(p.At) > roomFresh {
			continue // a lease, or a probe of an earlier version, or an old one
		}
		if !known || *p.Room < least {
			least, known = *p.Room, true
		}
	}
	if !known {
		return 0, errors.New("no server said lately how much room its store has")
	}
	return least, nil
}

// Ready checks that the streams answer.
func (s *Store) Ready(ctx context.Context) error {
	if _, err := s.Tasks.Info(ctx); err != nil {
		return fmt.Errorf("stream %s: %w", TasksStream, err)
	}
	if _, err := s.Results.Info(ctx); err != nil {
		return fmt.Errorf("stream %s: %w", ResultsStream, err)
	}
	return nil
}

// IsConflict reports whether a KV Create or Update lost a race: the key
// exists, or its revision moved. Replicated buckets report a lost update as
// ErrKeyRevisionMismatch, single-copy ones as ErrKeyExists.
func IsConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
