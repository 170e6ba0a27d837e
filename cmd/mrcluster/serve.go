package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/mrcluster/mrcluster/internal/app"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := app.DefaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "HTTP API address")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the embedded NATS server's JetStream storage")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "in-process workers")
	fs.StringVar(&cfg.NATSListen, "nats-listen", cfg.NATSListen, "client address of the embedded NATS server, for remote workers (port 0 picks a free one)")
	fs.StringVar(&cfg.NATSURL, "nats", "", "URL of an external NATS server or cluster; when set, no embedded server starts")
	fs.Float64Var(&cfg.SleepScale, "sleep-scale", cfg.SleepScale, "multiplies the sleeps of the short and long kinds (0.001: a thousand times faster)")
	fs.IntVar(&cfg.MaxPartitions, "max-partitions", cfg.MaxPartitions, "largest partition count a job may ask for")
	origins := fs.String("allow-origin", strings.Join(cfg.AllowOrigins, ","), "comma-separated browser origins allowed to call the API besides its own (scheme://host:port, host:* for any port, * for all)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", cfg.AckWait, "how long a task may go without a sign of life from its worker before another worker gets it")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGINT/SIGTERM, how long running tasks may take to finish")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	cfg.AllowOrigins = splitList(*origins)
	logger, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	app.Version = version()
	srv, err := app.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "mrcluster %s serving on %s (NATS for remote workers: %s)\n", app.Version, srv.URL(), srv.NATSURL())
	select {
	case <-ctx.Done():
		logger.Info("stopping: finishing running tasks, queued tasks stay queued", "timeout", cfg.ShutdownTimeout)
	case err := <-srv.Done():
		logger.Error("HTTP server stopped", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	srv.Close(sctx)
	logger.Info("stopped")
	return nil
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
