// Package cli is the mrcluster command line: `mrcluster serve` runs a
// server with an embedded NATS JetStream and workers, `mrcluster worker`
// runs workers alone, and the other commands are a client of the HTTP API.
// cmd/mrcluster and programs with kinds of their own (package mapreduce)
// run it.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

const usage = `mrcluster — a map-reduce job cluster on NATS JetStream

Usage:
  mrcluster serve   [flags]          run a server: HTTP API, embedded NATS, workers
  mrcluster worker  --nats URL       run workers in a process of their own, joined through NATS
  mrcluster submit  KIND N [--wait]  submit a job of N partitions (map tasks)
  mrcluster submit  wordcount --input books --partitions 8 --reducers 4 --wait
  mrcluster dataset put NAME FILE…   upload files into a dataset (also: dataset ls [NAME], cat NAME FILE, rm NAME [FILE…])
  mrcluster kind put NAME FILE.wasm  upload a kind of your own as a WebAssembly module (also: kind ls, rm, pause, resume, limit NAME)
  mrcluster kinds                    list the kinds jobs can be submitted as, with their parameters
  mrcluster schedule add NAME --cron "*/5 * * * *" KIND N   a job at every tick (also: schedule ls, show, pause, resume, rm)
  mrcluster wait    ID…              follow jobs to their end: exit 0 when all succeeded, 1 when not (- reads ids from standard input)
  mrcluster output  ID               print a finished job's output
  mrcluster jobs    [--state S]      list jobs, newest first (--kind K; --limit N, 0 for all)
  mrcluster job     ID [--tasks]     show one job (--tasks: every attempt of its tasks)
  mrcluster cancel  ID…              cancel jobs (- reads their ids from standard input)
  mrcluster cancel  --kind K         cancel every unfinished job of a kind (--state S: of a state, or both)
  mrcluster retry   ID… [--wait]     run failed or canceled jobs' unfinished tasks again, each in the same job
  mrcluster rerun   ID               run a finished job again: a new job of the same spec
  mrcluster delete  ID…              delete finished jobs, their history and their output (- as cancel)
  mrcluster status                   show workers and the queue
  mrcluster config  [flags]          print the configuration serve would use, and its sources
  mrcluster version                  print the version

Every flag can also be set in the environment as MRCLUSTER_<FLAG>, e.g.
MRCLUSTER_ADDR=0.0.0.0:8080, and serve's in a TOML file given with --config.
A flag beats the environment, which beats the file, which beats the default.
The client commands find the server in --server or MRCLUSTER_SERVER
(default http://127.0.0.1:8080), its token in --token or MRCLUSTER_TOKEN, the
CA of an https server's certificate in --tls-ca or MRCLUSTER_TLS_CA (when not
the system's), and print JSON with -o json; these may also come before the
command (mrcluster --server URL jobs). Run "mrcluster COMMAND -h" for its flags.
`

// Main runs the command line with os.Args and exits; extra kinds join the
// built-in ones in serve and worker.
func Main(extra ...job.Kind) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	registry := func(scale float64) *job.Registry {
		r := kinds.Builtin(scale)
		for _, k := range extra {
			r.Register(k)
		}
		return r
	}
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, registry)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0) // -h or --help: the help was asked for, and given
	}
	var exit exitError
	if errors.As(err, &exit) {
		os.Exit(int(exit))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mrcluster:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a status and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run runs one command; registry makes the kinds of serve and worker.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, registry func(sleepScale float64) *job.Registry) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	args, err := commandFirst(args)
	if err != nil {
		return err
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr, registry)
	case "worker":
		return runWorker(ctx, args, stdout, stderr, registry)
	case "config":
		return showConfig(args, stdout, stderr)
	case "submit":
		return submit(ctx, args, stdout, stderr)
	case "dataset":
		return datasetCmd(ctx, args, stdout, stderr)
	case "kind":
		return kindCmd(ctx, args, stdout, stderr)
	case "schedule":
		return scheduleCmd(ctx, args, stdout, stderr)
	case "kinds":
		return kindCmd(ctx, append([]string{"ls"}, args...), stdout, stderr)
	case "wait":
		return waitCmd(ctx, args, stdout, stderr)
	case "rerun":
		return rerunJob(ctx, args, stdout, stderr)
	case "retry":
		return retryJob(ctx, args, stdout, stderr)
	case "output":
		return output(ctx, args, stdout, stderr)
	case "jobs":
		return listJobs(ctx, args, stdout, stderr)
	case "job":
		return showJob(ctx, args, stdout, stderr)
	case "cancel":
		return cancelJob(ctx, args, stdout, stderr)
	case "delete":
		return deleteJob(ctx, args, stdout, stderr)
	case "status":
		return status(ctx, args, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "mrcluster", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	if meant := closest(cmd, commands); meant != "" {
		return fmt.Errorf("unknown command %q (did you mean %q?)", cmd, meant)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// parse parses a client command's args into fs, then fills every flag not
// given on the command line from MRCLUSTER_<FLAG>.
func parse(fs *flag.FlagSet, args []string) error {
	_, err := parseWithFile(fs, args)
	return err
}

// leadingFlags are the client commands' flags a user may give before the
// command, as with kubectl or docker: mrcluster --server URL jobs.
var leadingFlags = map[string]bool{"server": true, "token": true, "o": true, flags.TLSCA: true}

// commandFirst moves the flags given before the command to just after it,
// where the command's flags are parsed: mrcluster --server URL jobs
// --state failed runs jobs --server URL --state failed.
func commandFirst(args []string) ([]string, error) {
	var lead []string
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && !slices.Contains([]string{"-h", "--help", "--version"}, args[i]) {
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !leadingFlags[name] {
			return nil, fmt.Errorf("%s before the command: give the command first, then its flags (mrcluster COMMAND %s …); run mrcluster -h for the commands", args[i], args[i])
		}
		n := 1
		if !hasValue {
			n = 2
		}
		if i+n > len(args) {
			return nil, fmt.Errorf("%s needs a value, then a command: mrcluster %s VALUE COMMAND …", args[i], args[i])
		}
		lead = append(lead, args[i:i+n]...)
		i += n
	}
	if len(lead) == 0 {
		return args, nil
	}
	if i == len(args) {
		return nil, fmt.Errorf("no command after %s; run mrcluster -h for the commands", strings.Join(lead, " "))
	}
	// A command of subcommands parses its flags after the subcommand.
	cmd := 1
	if subcommands[args[i]] && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
		cmd = 2
	}
	out := append(slices.Clone(args[i:i+cmd]), lead...)
	return append(out, args[i+cmd:]...), nil
}

// subcommands are the commands whose first argument is a subcommand.
var subcommands = map[string]bool{"dataset": true, "kind": true, "schedule": true}
