package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/view"
)

// client talks to a server's /api/v1.
type client struct {
	base  string
	token string
	http  *http.Client
}

// target is where a client command sends its requests.
type target struct {
	server, token *string
}

func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, target) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, target{
		server: fs.String("server", "http://127.0.0.1:8080", "URL of a mrcluster server"),
		token:  fs.String("token", "", "the server's --auth-token, when it has one"),
	}
}

func newClient(t target) *client {
	return &client{base: strings.TrimRight(*t.server, "/"), token: *t.token, http: &http.Client{Timeout: 30 * time.Second}}
}

// do sends a request and decodes a JSON answer into out; an error answer
// becomes an error carrying the server's message.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	return c.doWith(ctx, method, path, nil, body, out)
}

// submitRetries is how often a submit is sent again after the server said
// to try again (503) or could not be reached.
const submitRetries = 4

// submitJob submits a job with an idempotency key of its own, and sends it
// again under the same key while the server is unavailable: a retry of a
// submit that was stored after all answers its job instead of a second one.
func (c *client) submitJob(ctx context.Context, body, out any) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := http.Header{"Idempotency-Key": {hex.EncodeToString(b[:])}}
	wait := 500 * time.Millisecond
	for try := 0; ; try++ {
		err := c.doWith(ctx, http.MethodPost, "/api/v1/jobs", h, body, out)
		var u *unavailableError
		if err == nil || try == submitRetries || !errors.As(err, &u) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// unavailableError is an answer worth retrying: 503, or no answer at all.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

func (c *client) doWith(ctx context.Context, method, path string, header http.Header, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.send(req, c.http)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// send sends req with the token; an error answer becomes an error carrying
// the server's message.
func (c *client) send(req *http.Request, hc *http.Client) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &unavailableError{fmt.Errorf("cannot reach the server at %s (is it running? set --server): %w", c.base, err)}
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	err = fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		err = fmt.Errorf("%s (%s)", e.Error.Message, resp.Status)
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		err = &unavailableError{err}
	}
	return nil, err
}

func submit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("submit", stderr)
	wait := fs.Bool("wait", false, "wait for the job to finish, showing its progress")
	params := fs.String("params", "", "job parameters as a JSON object")
	input := fs.String("input", "", "the datasets a data kind reads, comma-separated")
	partitions := fs.Int("partitions", 0, "the number of map tasks (or give it after KIND)")
	reducers := fs.Int("reducers", 0, "the number of reduce tasks of a data kind (default 1)")
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
	body := map[string]any{"kind": pos[0], "partitions": n}
	if *params != "" {
		body["params"] = json.RawMessage(*params)
	}
	if len(param) > 0 {
		if *params != "" {
			return fmt.Errorf("give either --params or --param, not both")
		}
		m := map[string]string{}
		for _, p := range param {
			k, v, _ := strings.Cut(p, "=")
			m[k] = v
		}
		body["params"] = m
	}
	if *input != "" {
		body["input"] = strings.Split(*input, ",")
	}
	if *reducers != 0 {
		body["reducers"] = *reducers
	}
	c := newClient(server)
	var j view.Job
	if err := c.submitJob(ctx, body, &j); err != nil {
		return err
	}
	if !*wait {
		fmt.Fprintln(stdout, j.ID)
		return nil
	}
	fmt.Fprintf(stderr, "submitted %s\n", j.ID)
	return waitJob(ctx, c, j.ID, stdout, stderr)
}

// waitJob follows a job until it finishes: a progress bar on a terminal,
// a line per change otherwise. It fails unless the job succeeds.
func waitJob(ctx context.Context, c *client, id string, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	last := ""
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var j view.Job
		if err := c.do(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
			return err
		}
		line := progress(j, tty)
		if tty {
			fmt.Fprintf(stderr, "\r%s", line)
		} else if line != last {
			fmt.Fprintln(stderr, line)
		}
		last = line
		if j.State.Terminal() {
			if tty {
				fmt.Fprintln(stderr)
			}
			if j.State != job.Succeeded {
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func progress(j view.Job, bar bool) string {
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
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *state != "" {
		q.Set("state", *state)
	}
	var page struct {
		Jobs []view.Job `json:"jobs"`
	}
	if err := newClient(server).do(ctx, http.MethodGet, "/api/v1/jobs?"+q.Encode(), nil, &page); err != nil {
		return err
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
	var j json.RawMessage
	if err := newClient(server).do(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
		return err
	}
	var out bytes.Buffer
	_ = json.Indent(&out, j, "", "  ")
	fmt.Fprintln(stdout, out.String())
	return nil
}

func cancelJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("cancel", args, stderr)
	if err != nil {
		return err
	}
	var j view.Job
	if err := newClient(server).do(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, &j); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s\n", j.ID, j.State)
	return nil
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("status", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	c := newClient(server)
	var workers struct {
		Workers []job.WorkerStatus `json:"workers"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/workers", nil, &workers); err != nil {
		return err
	}
	var queue struct {
		Depth int              `json:"depth"`
		Jobs  []view.QueuedJob `json:"jobs"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/queue", nil, &queue); err != nil {
		return err
	}
	busy := 0
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tHOST\tSTATE\tJOB\tPARTITION\tDONE")
	for _, w := range workers.Workers {
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
	fmt.Fprintf(stdout, "\n%d of %d workers busy; %d tasks queued", busy, len(workers.Workers), queue.Depth)
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
