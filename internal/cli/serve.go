package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/httpapi"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// serveConfig is the configuration of `serve`, and the flags that set it.
type serveConfig struct {
	app.Config
	origins, level, format string
	kindLimits, proxies    string
	tokenFile              string
	loopbackOrigins        bool
	fs                     *flag.FlagSet
	sources                map[string]string // flag name → where its value came from
}

func serveFlags(name string, stderr io.Writer) *serveConfig {
	c := &serveConfig{Config: app.DefaultConfig()}
	cfg := &c.Config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", "", "TOML file of settings, named as the flags (flags and MRCLUSTER_* beat it)")
	fs.StringVar(&cfg.Addr, flags.Addr, cfg.Addr, "HTTP API address")
	fs.StringVar(&cfg.DataDir, flags.DataDir, cfg.DataDir, "directory of the embedded NATS server's JetStream storage")
	fs.IntVar(&cfg.Workers, flags.Workers, cfg.Workers, "in-process workers")
	fs.StringVar(&cfg.NATSListen, flags.NATSListen, cfg.NATSListen, "client address of the embedded NATS server, for remote workers (port 0 picks a free one)")
	fs.StringVar(&cfg.NATSURL, flags.NATS, "", "URL of an external NATS server or cluster; when set, no embedded server starts")
	fs.Float64Var(&cfg.SleepScale, flags.SleepScale, cfg.SleepScale, "multiplies the sleeps of the short and long kinds (0.001: a thousand times faster)")
	fs.IntVar(&cfg.MaxPartitions, flags.MaxPartitions, cfg.MaxPartitions, "largest partition count a job may ask for")
	fs.StringVar(&c.origins, flags.AllowOrigin, "", "comma-separated browser origins allowed to call the API besides its own and the loopback ones (scheme://host:port, host:* for any port, * for all)")
	fs.StringVar(&c.proxies, flags.TrustedProxy, "", "comma-separated addresses or networks (10.0.0.5, 10.0.0.0/8) of reverse proxies in front of the API: a request from one counts as from the client its X-Forwarded-For (or Forwarded) names, for the bounds per client (submit rate, uploads, websockets)")
	fs.StringVar(&c.kindLimits, flags.KindLimit, "", "limits of kinds set at start, ';'-separated: NAME=concurrency:N,rate:N/s (e.g. grep=concurrency:4,rate:100/s;wordcount=concurrency:2)")
	fs.BoolVar(&c.loopbackOrigins, "allow-loopback-origins", true, "allow pages from loopback addresses (http(s)://localhost:*, 127.0.0.1:*, [::1]:*) to call the API; false leaves only --allow-origin and the server's own")
	fs.DurationVar(&cfg.AckWait, flags.AckWait, cfg.AckWait, "how long a task may go without a sign of life from its worker before another worker gets it")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGINT/SIGTERM, how long running tasks may take to finish")
	fs.StringVar(&c.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.AuthToken, flags.AuthToken, "", "token required (as Authorization: Bearer <token>) of every request that changes something")
	fs.StringVar(&c.tokenFile, flags.AuthTokenFile, "", "file holding the --auth-token")
	fs.BoolVar(&cfg.AuthRead, "auth-read", false, "require the token for reads and websockets too (health probes excepted)")
	fs.BoolVar(&cfg.Insecure, flags.Insecure, false, "allow serving beyond loopback without --auth-token")
	fs.StringVar(&cfg.NATSToken, flags.NATSToken, "", "token of the NATS client port; an embedded server listening beyond loopback makes one in --data-dir if unset")
	fs.Float64Var(&cfg.SubmitRate, flags.SubmitRate, cfg.SubmitRate, "submissions a second allowed to each client address (0: no limit)")
	fs.IntVar(&cfg.SubmitBurst, "submit-burst", cfg.SubmitBurst, "submissions a client may make at once before --submit-rate applies")
	fs.IntVar(&cfg.MaxAttempts, flags.MaxAttempts, cfg.MaxAttempts, "times a task may run before its failure (an error or a panic) fails its job")
	fs.IntVar(&cfg.MaxLostRuns, flags.MaxLostRuns, cfg.MaxLostRuns, "runs of a task in a row that may end with their worker lost (crashed, killed, cut off) before the task is taken for what kills its workers and fails its job (0: no bound)")
	fs.DurationVar(&cfg.RetryBackoff, "retry-backoff", cfg.RetryBackoff, "wait before a failed task's second attempt; doubles with each attempt, up to a minute")
	fs.IntVar(&cfg.MaxQueuedTasks, flags.MaxQueuedTasks, cfg.MaxQueuedTasks, "tasks allowed to wait in the cluster; a submit beyond gets 429 (0: no limit)")
	fs.IntVar(&cfg.MaxWebsockets, flags.MaxWebsockets, cfg.MaxWebsockets, "websockets (dashboards' events, the seed's live pages) open at once; one beyond gets 429 (0: no limit)")
	fs.IntVar(&cfg.MaxUnfinishedJobs, flags.MaxUnfinishedJobs, cfg.MaxUnfinishedJobs, "jobs allowed unfinished (scheduled, queued or running) in the cluster, each held in every server's memory; a submit beyond gets 429 (0: no limit)")
	fs.Var(mib{&cfg.MaxFileSize}, flags.MaxFileMB, "largest dataset file an upload may store, in MiB (0: no limit)")
	fs.Var(mib{&cfg.SortBuffer}, flags.SortBuffer, "memory of one map task's output before it spills to --temp-dir, in MiB")
	fs.StringVar(&cfg.TempDir, "temp-dir", "", "directory of map spills (default: the system's temporary directory)")
	fs.StringVar(&cfg.ServerName, "server-name", "", "name of this server in a cluster, unique there (default: host name and --cluster-listen port)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "name of a cluster of servers to form with --routes (none: a server alone)")
	fs.StringVar(&cfg.ClusterListen, flags.ClusterListen, "127.0.0.1:6222", "address of this server's cluster routes, with --cluster-name")
	fs.Func(flags.Routes, "comma-separated route URLs of the other servers, nats://HOST:PORT (their --cluster-listen)", func(v string) error {
		cfg.Routes = nil
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				cfg.Routes = append(cfg.Routes, r)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.NATSTLSCert, flags.NATSTLSCert, "", "PEM certificate: the embedded NATS server's client port and routes then speak TLS only")
	fs.StringVar(&cfg.NATSTLSKey, flags.NATSTLSKey, "", "PEM key of --nats-tls-cert")
	fs.StringVar(&cfg.NATSTLSCA, flags.NATSTLSCA, "", "PEM CA that routes verify each other with, and that verifies the server of --nats")
	fs.StringVar(&cfg.TLSCert, flags.TLSCert, "", "PEM certificate (its chain after it): the HTTP API then serves HTTPS only; read again when the file changes")
	fs.StringVar(&cfg.TLSKey, flags.TLSKey, "", "PEM private key of --tls-cert")
	fs.StringVar(&cfg.DebugAddr, flags.DebugAddr, "", "loopback address to serve Go's profiles on (/debug/pprof/: goroutines, heap, CPU), e.g. 127.0.0.1:6060 (none when empty)")
	fs.IntVar(&cfg.Replicas, "replicas", 0, "copies of each stream, bucket and object store across the cluster (0: 3 with two or more routes, else 1 per server)")
	fs.DurationVar(&cfg.Retention, flags.Retention, cfg.Retention, "how long a finished job, its task history and its output are kept (0: for ever)")
	fs.BoolVar(&cfg.GroupBatches, flags.GroupBatches, cfg.GroupBatches, "store small jobs (one task, no input data, a kind without limits, not paused) in groups of up to 256, one record and one archive copy for them all: a batch's, and the single submits without an Idempotency-Key that come together; each is still a job of its own to clients")
	fs.IntVar(&cfg.RecentJobs, flags.RecentJobs, cfg.RecentJobs, "finished jobs kept whole in memory, beside the unfinished ones; older ones are read from the store when asked for")
	fs.DurationVar(&cfg.ArchiveAfter, flags.ArchiveAfter, cfg.ArchiveAfter, "how long a finished job's record stays in the jobs bucket once appended to the archive stream, which then alone holds it (JetStream keeps memory for every key of a bucket); 0 keeps finished records in the bucket: about a fifth faster for bursts of small jobs, and JetStream's memory grows by about 200 bytes per finished job")
	fs.DurationVar(&cfg.BackupAfter, "backup-after", cfg.BackupAfter, "near the end of a phase, start a backup copy of a task running longer than this and twice the phase's median (0: never)")
	fs.BoolVar(&cfg.AcceptDamagedState, flags.AcceptDamagedState, false, "start even when the store does not hold what it held at the last stop (damaged or truncated files), going on with what is left and logging what is lost")
	fs.Var(mib{&cfg.WasmMemory}, flags.WasmMemory, "memory of one instance of an uploaded kind's WebAssembly module, in MiB")
	fs.Var(mib{&cfg.MaxKindSize}, flags.MaxKindSize, "largest WebAssembly module a kind may be uploaded with, in MiB")
	fs.DurationVar(&cfg.TaskTimeout, flags.TaskTimeout, cfg.TaskTimeout, "time limit of one attempt of a task (0: none for built-in kinds, 1h for uploaded ones)")
	fs.DurationVar(&cfg.PriorityAging, flags.PriorityAging, cfg.PriorityAging, "longest a lower priority's waiting tasks are passed over while higher ones keep the workers busy (0: 10s)")
	fs.Var(mib{&cfg.MemoryLimit}, flags.MemoryLimit, memLimitUsage)
	c.fs = fs
	return c
}

// load parses args, the environment and the configuration file.
func (c *serveConfig) load(args []string) error {
	var err error
	if c.sources, err = parseWithFile(c.fs, args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", c.fs.Name(), c.fs.Args())
	}
	c.AllowOrigins = splitList(c.origins)
	if c.TrustedProxies, err = httpapi.ParseTrustedProxies(splitList(c.proxies)); err != nil {
		return err
	}
	if c.KindLimits, err = parseKindLimits(c.kindLimits); err != nil {
		return err
	}
	if c.loopbackOrigins {
		c.AllowOrigins = append(slices.Clone(httpapi.DefaultAllowOrigins), c.AllowOrigins...)
	}
	if c.ClusterName != "" {
		if c.ServerName == "" {
			host, _ := os.Hostname()
			_, port, _ := net.SplitHostPort(c.ClusterListen)
			c.ServerName = host + "-" + port
		}
		if !natsx.IsLoopback(c.ClusterListen) && c.NATSToken == "" && c.NATSURL == "" {
			return fmt.Errorf("--cluster-listen %s is beyond loopback: give every server of the cluster the same --nats-token, which routes and workers present", c.ClusterListen)
		}
	}
	if c.tokenFile != "" {
		if c.AuthToken != "" {
			return fmt.Errorf("set --auth-token or --auth-token-file, not both")
		}
		data, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("--auth-token-file: %w", err)
		}
		if c.AuthToken = strings.TrimSpace(string(data)); c.AuthToken == "" {
			return fmt.Errorf("--auth-token-file %s is empty", c.tokenFile)
		}
	}
	return c.Validate()
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, registry func(float64) *job.Registry) error {
	c := serveFlags("serve", stderr)
	if err := c.load(args); err != nil {
		return err
	}
	cfg := c.Config
	cfg.Kinds = registry(cfg.SleepScale)
	logger, err := newLogger(stderr, c.level, c.format)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	app.Version = version()
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		return err
	}
	// For people and scripts; the logs, on stderr, may be JSON.
	fmt.Fprintf(stdout, "mrcluster %s serving on %s (NATS for remote workers: %s)\n", app.Version, srv.URL(), srv.NATSURL())
	if u := srv.DebugURL(); u != "" {
		fmt.Fprintf(stdout, "Go profiles on %s\n", u)
	}
	if t := srv.NATSToken(); t != "" && cfg.NATSToken == "" {
		fmt.Fprintf(stdout, "remote workers need --nats-token %s (kept in %s)\n", t, filepath.Join(cfg.DataDir, "nats-token"))
	}
	select {
	case <-ctx.Done():
		logger.Info("stopping: finishing running tasks, queued tasks stay queued", "timeout", cfg.ShutdownTimeout)
	case err := <-srv.Done():
		logger.Error("HTTP server stopped", "err", err)
	case err := <-srv.Broken():
		// No orderly stop: what it would wait for is what is stuck. The
		// store opens as after a crash; running tasks run again.
		logger.Error("mrcluster starts again in a new process", "err", err)
		if rerr := reexec(); rerr != nil {
			return fmt.Errorf("%w; and %w", err, rerr)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	_ = srv.Stop(sctx)
	logger.Info("stopped")
	return nil
}

// showConfig prints the configuration serve would run with, and where each
// value comes from.
func showConfig(args []string, stdout, stderr io.Writer) error {
	c := serveFlags("config", stderr)
	if err := c.load(args); err != nil {
		return err
	}
	// A configuration file serve reads back (--config): numbers and
	// booleans bare, the rest quoted, secrets given commented out.
	fmt.Fprintln(stdout, "# mrcluster serve settings: the effective value of each, and where it came from.")
	fmt.Fprintln(stdout, "# Use as a file: mrcluster config > mrcluster.toml; mrcluster serve --config mrcluster.toml")
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	c.fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		v := f.Value.String()
		line := fmt.Sprintf("%s = %s", f.Name, tomlValue(f.Value, v))
		if masked := mask(f.Name, v); masked != v {
			line = fmt.Sprintf("# %s = %q (hidden: set it here or in %s)", f.Name, masked, envName(f.Name))
		}
		fmt.Fprintf(tw, "%s\t# %s\n", line, c.sources[f.Name])
	})
	return tw.Flush()
}

// tomlValue writes v, the value of a flag, as TOML: bare when the flag
// holds a boolean or a number, quoted otherwise.
func tomlValue(f flag.Value, v string) string {
	if b, ok := f.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return v
	}
	switch f.(type) {
	case mib:
		return v
	}
	switch fmt.Sprintf("%T", f) {
	case "*flag.intValue", "*flag.int64Value", "*flag.uintValue", "*flag.float64Value":
		return v
	}
	return strconv.Quote(v)
}

// mask hides the values of settings that hold secrets.
func mask(name, value string) string {
	for _, w := range []string{"token", "secret", "password", "key"} {
		if strings.Contains(name, w) && value != "" {
			return "****"
		}
	}
	return value
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

// parseKindLimits reads --kind-limit: NAME=concurrency:N,rate:R;…
func parseKindLimits(s string) (map[string]app.KindLimit, error) {
	out := map[string]app.KindLimit{}
	for _, item := range strings.Split(s, ";") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, spec, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--%s %q: give NAME=concurrency:N,rate:N/s", flags.KindLimit, item)
		}
		var l app.KindLimit
		for _, part := range strings.Split(spec, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), ":")
			switch k {
			case "concurrency":
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("--%s %s: concurrency must be a whole number, got %q", flags.KindLimit, name, v)
				}
				l.Concurrency = n
			case "rate":
				l.Rate = v
			default:
				return nil, fmt.Errorf("--%s %s: unknown limit %q; use concurrency:N and rate:N/s", flags.KindLimit, name, k)
			}
		}
		out[strings.TrimSpace(name)] = l
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func version() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
		if v := info.Main.Version; v != "" && v != "(devel)" {
			return v
		}
	}
	return "dev"
}

// mib parses a flag given in MiB into a byte count.
// mib is a flag of a size in bytes given in MiB; it shows its value,
// default included, in MiB.
// memLimitUsage describes --memory-limit-mb of serve and worker.
const memLimitUsage = "soft memory limit of the process in MiB: the Go collector works harder near it and hands free memory back sooner; it rises while the live data needs more (0: none; GOMEMLIMIT in the environment wins)"

type mib struct{ dst *int64 }

func (m mib) String() string {
	if m.dst == nil {
		return "0"
	}
	return strconv.FormatInt(*m.dst>>20, 10)
}

func (m mib) Set(v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return fmt.Errorf("want a whole number of MiB, got %q", v)
	}
	*m.dst = n << 20
	return nil
}
