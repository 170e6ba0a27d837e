// Package natsx sets up mrcluster's substrate: the embedded NATS server, the
// connection to it (or to an external cluster) and the JetStream streams,
// consumers and buckets. It is the only package that imports NATS server code.
package natsx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the streams, buckets, consumers and subjects. They are the
// contract between servers and workers, wherever they run.
const (
	TasksStream      = "MR_TASKS"
	ResultsStream    = "MR_RESULTS"
	JobsBucket       = "mr_jobs"
	WorkersBucket    = "mr_workers"
	DatasetsBucket   = "mr_datasets" // KV: a dataset's manifest (its files)
	BlocksBucket     = "mr_blocks"   // object store: the blocks of dataset files
	ShuffleBucket    = "mr_shuffle"  // object store: map outputs, by job and attempt
	OutputBucket     = "mr_output"   // object store: reduce outputs, by job and attempt
	ShuffleRetention = 7 * 24 * time.Hour
	WorkersConsumer  = "workers"
	CoordConsumer    = "coordinator"
	TaskSubject      = "mr.task."    // + job id
	ResultSubject    = "mr.result."  // + job id; a message holds results of that job
	StartedSubject   = "mr.started." // + job id; core NATS, not stored; a list of starts
	CancelSubject    = "mr.cancel."  // + job id; core NATS, not stored
	StopSubject      = "mr.stop."    // + job id.phase.partition: stop the other copies of a finished task
	WorkerTTL        = 15 * time.Second
	ResultsRetention = 7 * 24 * time.Hour
)

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv   *server.Server
	token string
}

// StartEmbedded starts a NATS server with JetStream file storage under
// dataDir, listening for clients on listen ("host:port"; port 0 picks a free
// one). With a token, every client must present it.
func StartEmbedded(dataDir, listen, token string, logger *slog.Logger) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: port is not a number", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "mrcluster",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
	}
	if token != "" {
		opts.Authorization = token
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not become ready on %s within 30s (is the port taken? set --nats-listen)", listen)
	}
	logger.Info("embedded NATS server ready", "client_url", srv.ClientURL(), "store_dir", opts.StoreDir)
	return &Embedded{srv: srv, token: token}, nil
}

// ClientURL is the address remote workers connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Connect opens an in-process connection: no socket, same client code path.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1)}
	if e.token != "" {
		opts = append(opts, nats.Token(e.token))
	}
	return nats.Connect("", opts...)
}

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// Dial connects to an external NATS server or cluster at url, retrying for
// ever in the background when it goes away.
func Dial(url, name, token string, logger *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	return nats.Connect(url, append(opts,
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
	)...)
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
	Jobs    jetstream.KeyValue
	Workers jetstream.KeyValue

	Datasets jetstream.KeyValue
	Blocks   jetstream.ObjectStore
	Shuffle  jetstream.ObjectStore
	Output   jetstream.ObjectStore
}

// StoreConfig tunes the resources Setup creates.
type StoreConfig struct {
	// AckWait is how long a task may run without a sign of life from its
	// worker before it is given to another worker.
	AckWait time.Duration
}

// Setup creates or updates every stream, bucket and consumer mrcluster uses.
// It is idempotent: every server runs it at start.
func Setup(ctx context.Context, nc *nats.Conn, cfg StoreConfig) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open JetStream: %w", err)
	}
	s := &Store{JS: js}
	if s.Tasks, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        TasksStream,
		Description: "tasks waiting for a worker (work queue: a task leaves when a worker acks it)",
		Subjects:    []string{TaskSubject + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", TasksStream, err)
	}
	if s.Results, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        ResultsStream,
		Description: "task results, one message per finished attempt; the per-task history of every job",
		Subjects:    []string{ResultSubject + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      ResultsRetention,
	}); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", ResultsStream, err)
	}
	if s.Jobs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      JobsBucket,
		Description: "job records, one key per job id",
		History:     1,
		Storage:     jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", JobsBucket, err)
	}
	if s.Workers, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      WorkersBucket,
		Description: "worker liveness and status; an entry expires when its worker stops heartbeating",
		History:     1,
		TTL:         WorkerTTL,
		Storage:     jetstream.MemoryStorage,
	}); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", WorkersBucket, err)
	}
	if s.Datasets, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      DatasetsBucket,
		Description: "dataset manifests: the files of each dataset and their blocks",
		History:     1,
		Storage:     jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", DatasetsBucket, err)
	}
	for _, o := range []struct {
		dst  *jetstream.ObjectStore
		name string
		desc string
		age  time.Duration
	}{
		{&s.Blocks, BlocksBucket, "blocks of dataset files", 0},
		{&s.Shuffle, ShuffleBucket, "intermediate map outputs; deleted when their job ends, or after 7 days", ShuffleRetention},
		{&s.Output, OutputBucket, "job outputs, one object per reduce task", 0},
	} {
		if *o.dst, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: o.name, Description: o.desc, TTL: o.age, Storage: jetstream.FileStorage,
		}); err != nil {
			return nil, fmt.Errorf("create object store %s: %w", o.name, err)
		}
	}
	ackWait := cfg.AckWait
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	if _, err = s.Tasks.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       WorkersConsumer,
		Description:   "shared by every worker",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 20000,
	}); err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", WorkersConsumer, TasksStream, err)
	}
	if _, err = s.Results.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       CoordConsumer,
		Description:   "applies task results to job records",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 20000,
	}); err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", CoordConsumer, ResultsStream, err)
	}
	return s, nil
}

// Open binds to the resources a server's Setup created, without changing
// them: what a worker does.
func Open(ctx context.Context, nc *nats.Conn) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open JetStream: %w", err)
	}
	s := &Store{JS: js}
	if s.Tasks, err = js.Stream(ctx, TasksStream); err != nil {
		return nil, fmt.Errorf("open stream %s (has a server set up the cluster?): %w", TasksStream, err)
	}
	if s.Results, err = js.Stream(ctx, ResultsStream); err != nil {
		return nil, fmt.Errorf("open stream %s: %w", ResultsStream, err)
	}
	if s.Jobs, err = js.KeyValue(ctx, JobsBucket); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", JobsBucket, err)
	}
	if s.Workers, err = js.KeyValue(ctx, WorkersBucket); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", WorkersBucket, err)
	}
	if s.Datasets, err = js.KeyValue(ctx, DatasetsBucket); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", DatasetsBucket, err)
	}
	for _, o := range []struct {
		dst  *jetstream.ObjectStore
		name string
	}{{&s.Blocks, BlocksBucket}, {&s.Shuffle, ShuffleBucket}, {&s.Output, OutputBucket}} {
		if *o.dst, err = js.ObjectStore(ctx, o.name); err != nil {
			return nil, fmt.Errorf("open object store %s: %w", o.name, err)
		}
	}
	return s, nil
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
