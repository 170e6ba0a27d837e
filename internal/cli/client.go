package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/flags"
)

// target is where a client command sends its requests.
type target struct {
	server, token *string
}

func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, target) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, target{
		server: fs.String("server", "http://127.0.0.1:8080", "URL of a mrcluster server"),
		token:  fs.String(flags.Token, "", "the server's --auth-token, when it has one"),
	}
}

func newClient(t target) *client.Client {
	return client.New(*t.server, *t.token)
}

// explain adds to an error of the client what to do about it, in the
// command line's terms.
func explain(err error) error {
	var u *client.UnreachableError
	if errors.As(err, &u) {
		return fmt.Errorf("%w (is it running? set --server)", err)
	}
	var e *client.Error
	if errors.As(err, &e) && e.Status == http.StatusUnauthorized {
		return fmt.Errorf("%w; pass the server's --auth-token with --token", err)
	}
	return err
}

func submit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("submit", stderr)
	wait := fs.Bool("wait", false, "wait for the job to finish, showing its progress")
	params := fs.String("params", "", "job parameters as a JSON object")
	input := fs.String("input", "", "the datasets a data kind reads, comma-separated")
	partitions := fs.Int("partitions", 0, "the number of map tasks (or give it after KIND)")
	reducers := fs.Int("reducers", 0, "the number of reduce tasks of a data kind (default 1)")
	count := fs.Int("count", 1, "submit this many jobs of the spec at once (in batches of 1,000), printing their ids")
	var param []string
	fs.Func("param", "one job parameter as NAME=VALUE, e.g. --param pattern=whale (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("--param needs NAME=VALUE, got %q", v)
		}
		param = append(param, v)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrcluster submit KIND [PARTITIONS] [--partitions N] [--input DATASET,…] [--reducers R] [--param NAME=VALUE]… [--wait] [--server URL]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	n := *partitions
	switch {
	case len(pos) == 2 && n == 0:
		if n, err = strconv.Atoi(pos[1]); err != nil {
			return fmt.Errorf("partition count must be an integer, got %q", pos[1])
		}
	case len(pos) != 1 || n == 0:
		fs.Usage()
		return fmt.Errorf("submit needs a kind and a partition count (KIND N or KIND --partitions N), got %q", pos)
	}
	spec := client.Spec{Kind: pos[0], Partitions: n, Reducers: *reducers}
	if *params != "" {
		d := json.NewDecoder(strings.NewReader(*params))
		d.UseNumber()
		if err := d.Decode(&spec.Params); err != nil || spec.Params == nil {
			return fmt.Errorf("--params must be a JSON object, e.g. --params '{\"pattern\":\"whale\"}', got %q", *params)
		}
	}
	if len(param) > 0 {
		if *params != "" {
			return fmt.Errorf("give either --params or --param, not both")
		}
		spec.Params = map[string]any{}
		for _, p := range param {
			k, v, _ := strings.Cut(p, "=")
			spec.Params[k] = v
		}
	}
	if *input != "" {
		spec.Input = strings.Split(*input, ",")
	}
	c := newClient(server)
	if *count != 1 {
		if *count < 1 || *wait {
			return fmt.Errorf("--count must be 1 or more, and --wait follows one job only; got --count %d", *count)
		}
		return submitMany(ctx, c, spec, *count, stdout)
	}
	j, err := c.Submit(ctx, spec)
	if err != nil {
		return explain(err)
	}
	if !*wait {
		fmt.Fprintln(stdout, j.ID)
		return nil
	}
	fmt.Fprintf(stderr, "submitted %s\n", j.ID)
	return waitJob(ctx, c, j.ID, stdout, stderr)
}

// submitMany submits n jobs of spec in batches, printing their ids.
func submitMany(ctx context.Context, c *client.Client, spec client.Spec, n int, stdout io.Writer) error {
	const batch = 1000
	for n > 0 {
		specs := make([]client.Spec, min(n, batch))
		for i := range specs {
			specs[i] = spec
		}
		jobs, err := c.SubmitBatch(ctx, specs)
		if err != nil {
			return explain(err)
		}
		for _, j := range jobs {
			fmt.Fprintln(stdout, j.ID)
		}
		n -= len(specs)
	}
	return nil
}

// waitJob follows a job until it finishes: a progress bar on a terminal,
// a line per change otherwise. It fails unless the job succeeds.
func waitJob(ctx context.Context, c *client.Client, id string, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	last := ""
	j, err := c.Wait(ctx, id, func(j client.Job) {
		line := progress(j, tty)
		if tty {
			fmt.Fprintf(stderr, "\r%s", line)
		} else if line != last {
			fmt.Fprintln(stderr, line)
		}
		last = line
	})
	if err != nil {
		return explain(err)
	}
	if tty {
		fmt.Fprintln(stderr)
	}
	if j.State != client.Succeeded {
		if j.Error != "" {
			fmt.Fprintln(stderr, "error:", j.Error)
		}
		return exitError(1)
	}
	if j.Counters != nil {
		c := j.Counters
		fmt.Fprintf(stderr, "read %d bytes in %d records; %d map outputs; %d output records (mrcluster output %s)\n",
			c.InputBytes, c.InputRecords, c.MapOutputRecords, c.ReduceOutputRecords, j.ID)
		for _, l := range j.Preview {
			fmt.Fprintln(stdout, l)
		}
		return nil
	}
	out, _ := json.Marshal(j.Result)
	fmt.Fprintln(stdout, string(out))
	return nil
}

func progress(j client.Job, bar bool) string {
	t := j.Tasks
	if !bar {
		phase := ""
		if j.Phase != "" && !j.State.Terminal() {
			phase = " (" + j.Phase + ")"
		}
		return fmt.Sprintf("%s %s%s: %d/%d done, %d running, %d queued", j.ID, j.State, phase, t.Done, t.Total, t.Running, t.Queued)
	}
	const width = 30
	filled := 0
	if t.Total > 0 {
		filled = t.Done * width / t.Total
	}
	return fmt.Sprintf("[%s%s] %d/%d %-9s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), t.Done, t.Total, j.State)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func listJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("jobs", stderr)
	state := fs.String("state", "", "only jobs in this state")
	limit := fs.Int("limit", 20, "how many jobs")
	if err := parse(fs, args); err != nil {
		return err
	}
	page, err := newClient(server).Jobs(ctx, client.ListOptions{State: client.State(*state), Limit: *limit})
	if err != nil {
		return explain(err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tDONE\tCREATED\tSUM")
	for _, j := range page.Jobs {
		sum := "-"
		if j.Result != nil {
			sum = strconv.FormatInt(j.Result.Sum, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", j.ID, j.State, j.Tasks.Done, j.Tasks.Total, j.CreatedAt.Local().Format(time.DateTime), sum)
	}
	return tw.Flush()
}

func oneID(name string, args []string, stderr io.Writer) (string, target, error) {
	fs, server := clientFlags(name, stderr)
	var id string
	for len(args) > 0 {
		if err := parse(fs, args); err != nil {
			return "", target{}, err
		}
		if fs.NArg() == 0 {
			break
		}
		if id != "" {
			return "", target{}, fmt.Errorf("%s takes one job id", name)
		}
		id, args = fs.Arg(0), fs.Args()[1:]
	}
	if id == "" {
		return "", target{}, fmt.Errorf("usage: mrcluster %s JOB_ID [--server URL]", name)
	}
	return id, server, nil
}

func showJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("job", args, stderr)
	if err != nil {
		return err
	}
	j, err := newClient(server).Job(ctx, id)
	if err != nil {
		return explain(err)
	}
	out, _ := json.MarshalIndent(j, "", "  ")
	fmt.Fprintln(stdout, string(out))
	return nil
}

func cancelJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("cancel", args, stderr)
	if err != nil {
		return err
	}
	j, err := newClient(server).Cancel(ctx, id)
	if err != nil {
		return explain(err)
	}
	fmt.Fprintf(stdout, "%s %s\n", j.ID, j.State)
	return nil
}

func deleteJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("delete", args, stderr)
	if err != nil {
		return err
	}
	if err := newClient(server).Delete(ctx, id); err != nil {
		return explain(err)
	}
	fmt.Fprintf(stdout, "%s deleted\n", id)
	return nil
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("status", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	c := newClient(server)
	workers, err := c.Workers(ctx)
	if err != nil {
		return explain(err)
	}
	queue, err := c.Queue(ctx)
	if err != nil {
		return explain(err)
	}
	busy := 0
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tHOST\tSTATE\tJOB\tPARTITION\tDONE")
	for _, w := range workers {
		state, part := "idle", "-"
		if w.Busy {
			busy++
			state, part = "busy", strconv.Itoa(w.Partition)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", w.Key, w.Host, state, w.JobID, part, w.TasksDone)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d of %d workers busy; %d tasks queued", busy, len(workers), queue.Depth)
	for _, q := range queue.Jobs {
		fmt.Fprintf(stdout, "\n  %s: %d", q.Job, q.Waiting)
	}
	fmt.Fprintln(stdout)
	return nil
}

// parseInterspersed parses args into fs, letting flags come after the
// positional arguments, which it returns.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return pos, nil
}
