package cli

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/flags"
)

// target is where a client command sends its requests, and how it
// prints what it gets back.
type target struct {
	server, token *string
	format        *string // -o: text or json
	ca            *caFile // --tls-ca
}

// clientFlags are the flags of every client command: --server and --token
// (also MRCLUSTER_SERVER and MRCLUSTER_TOKEN), and -o.
func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, target) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ca := &caFile{}
	fs.Var(ca, flags.TLSCA, "PEM CA certificate that an https --server's certificate is verified against (the system's CAs otherwise)")
	return fs, target{
		server: fs.String("server", "http://127.0.0.1:8080", "URL of a mrcluster server"),
		token:  fs.String(flags.Token, "", "the server's --auth-token, when it has one"),
		format: fs.String("o", "text", "output: text, for people, or json, the API's resources"),
		ca:     ca,
	}
}

// caFile is --tls-ca: the PEM certificates an https server's certificate
// is verified against, read when the flag is set.
type caFile struct {
	path  string
	roots *x509.CertPool
}

func (c *caFile) String() string {
	if c == nil {
		return ""
	}
	return c.path
}

func (c *caFile) Set(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		return fmt.Errorf("%s holds no PEM certificate: give the CA certificate that signed the server's --%s", path, flags.TLSCert)
	}
	c.path, c.roots = path, roots
	return nil
}

// json reports whether the command should print JSON; any other format
// than text and json is an error.
func (t target) json() (bool, error) {
	switch *t.format {
	case "text", "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fmt.Errorf("-o %q: use text or json", *t.format)
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) error {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(out))
	return err
}

func newClient(t target) *client.Client {
	c := client.New(*t.server, *t.token)
	if t.ca != nil && t.ca.roots != nil {
		c.HTTP = client.HTTPWithRoots(t.ca.roots)
	}
	return c
}

// explain adds to an error of the client what to do about it, in the
// command line's terms.
func explain(err error) error {
	var cert *client.CertificateError
	if errors.As(err, &cert) {
		return fmt.Errorf("%w; give the CA certificate that signed it with --%s (or %s)", err, flags.TLSCA, flags.Env(flags.TLSCA))
	}
	var u *client.UnreachableError
	if errors.As(err, &u) {
		return fmt.Errorf("%w (is it running? set --server or MRCLUSTER_SERVER)", err)
	}
	var e *client.Error
	if errors.As(err, &e) && e.Status == http.StatusUnauthorized {
		return fmt.Errorf("%w; pass the server's --auth-token with --token", err)
	}
	if errors.As(err, &e) {
		if m := paramRequired.FindStringSubmatch(e.Message); m != nil {
			return fmt.Errorf("--param %s=… is required for kind %s:%s", m[1], m[2], m[3])
		}
	}
	return err
}

// paramRequired is the API's error for a missing parameter, which the
// command line names as its flag.
var paramRequired = regexp.MustCompile(`^params\.(\S+) is required for kind "([^"]+)":(.*)$`)

// specFlags are the flags of a job spec: submit's and schedule add's.
type specFlags struct {
	params, input       *string
	partitions, reducer *int
	priority            *int
	maxAttempts         *int
	timeout             *time.Duration
	param               []string
}

func newSpecFlags(fs *flag.FlagSet) *specFlags {
	f := &specFlags{
		params:      fs.String("params", "", "job parameters as a JSON object"),
		input:       fs.String("input", "", "the datasets a data kind reads, comma-separated"),
		partitions:  fs.Int("partitions", 0, "the number of map tasks (or give it after KIND); with --input, the cluster chooses it when not given: a task per 64 MiB of input, at least one per worker"),
		reducer:     fs.Int("reducers", 0, "the number of reduce tasks of a data kind (default 1)"),
		priority:    fs.Int("priority", 0, "1 (low) to 4 (high): a waiting task of a higher priority starts first (default 2)"),
		maxAttempts: fs.Int(flags.MaxAttempts, 0, "times each task may run before its failure (an error or a panic) fails the job, 1 to 100 (default: the server's --max-attempts)"),
		timeout:     fs.Duration("timeout", 0, "time limit of each attempt of each task, e.g. 90s (an attempt past it fails, and is retried as any failure)"),
	}
	fs.Func("param", "one job parameter as NAME=VALUE, e.g. --param pattern=whale (repeatable); VALUE is sent as a string: give numbers, booleans or lists in --params", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("--param needs NAME=VALUE, got %q", v)
		}
		f.param = append(f.param, v)
		return nil
	})
	return f
}

// spec makes the job spec of the flags and the positional KIND
// [PARTITIONS]; cmd names the command in errors.
func (f *specFlags) spec(cmd string, pos []string, usage func()) (client.Spec, error) {
	n := *f.partitions
	var err error
	switch {
	case len(pos) == 2 && n != 0:
		return client.Spec{}, fmt.Errorf("give the partition count once: %s after the kind, or --partitions %d", pos[1], n)
	case len(pos) == 2:
		if n, err = strconv.Atoi(pos[1]); err != nil {
			return client.Spec{}, fmt.Errorf("the partition count after the kind must be a whole number, got %q", pos[1])
		}
	case len(pos) == 0:
		usage()
		return client.Spec{}, fmt.Errorf("%s needs a kind: mrcluster %s KIND N (mrcluster kinds lists them)", cmd, cmd)
	case len(pos) > 2:
		usage()
		return client.Spec{}, fmt.Errorf("%s takes a kind and a partition count, got %d arguments: %q", cmd, len(pos), pos)
	case n == 0 && *f.input == "":
		// A data job may leave it to the cluster: a split per 64 MiB of
		// its input, at least one per worker.
		usage()
		return client.Spec{}, fmt.Errorf("%s needs a partition count: mrcluster %s %s N, or --partitions N", cmd, cmd, pos[0])
	}
	spec := client.Spec{Kind: pos[0], Partitions: n, Reducers: *f.reducer, Priority: *f.priority, MaxAttempts: *f.maxAttempts}
	if *f.timeout > 0 {
		spec.Timeout = f.timeout.String()
	}
	if *f.params != "" {
		d := json.NewDecoder(strings.NewReader(*f.params))
		d.UseNumber()
		if err := d.Decode(&spec.Params); err != nil || spec.Params == nil {
			return client.Spec{}, fmt.Errorf("--params must be a JSON object, e.g. --params '{\"pattern\":\"whale\"}', got %q", *f.params)
		}
	}
	if len(f.param) > 0 {
		if *f.params != "" {
			return client.Spec{}, fmt.Errorf("give either --params or --param, not both")
		}
		spec.Params = map[string]any{}
		for _, p := range f.param {
			k, v, _ := strings.Cut(p, "=")
			spec.Params[k] = v
		}
	}
	if *f.input != "" {
		spec.Input = strings.Split(*f.input, ",")
	}
	return spec, nil
}

func submit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("submit", stderr)
	wait := fs.Bool("wait", false, "wait for the job to finish, showing its progress (with --count or --file: for every job, showing how many finished; exit 1 unless all succeeded)")
	sf := newSpecFlags(fs)
	delay := fs.Duration("delay", 0, "run the job this long from now (scheduled until then), e.g. 10m")
	at := fs.String("at", "", "run the job at this time, RFC 3339 (2026-12-24T18:00:00Z); scheduled until then")
	count := fs.Int("count", 1, "submit this many jobs of the spec at once (in batches of 1,000), printing their ids; a batch the cluster has no room for (429) is sent again once it has")
	key := fs.String("idempotency-key", "", "a key of your own for this submit: the same command run again with it within a day is answered the jobs it submitted, and submits nothing again (with --count or --file: each batch that went in; a run cut short goes on where it stopped)")
	file := fs.String("file", "", "submit the job specs of this file (- for standard input) in batches of 1,000, printing their ids: JSON objects as the API takes them, one a line or in an array, or {\"jobs\":[…]}; a batch the cluster has no room for (429) is sent again once it has")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrcluster submit KIND [PARTITIONS] [--partitions N] [--input DATASET,…] [--reducers R] [--param NAME=VALUE]… [--priority 1-4] [--max-attempts N] [--timeout D] [--delay D | --at T] [--count N] [--wait] [--idempotency-key KEY] [--server URL]")
		fmt.Fprintln(stderr, "       mrcluster submit --file SPECS.jsonl [--wait] [--idempotency-key KEY] [--server URL]")
		fs.PrintDefaults()
	}
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	if *file != "" {
		var other []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "file" && f.Name != "server" && f.Name != "token" && f.Name != "o" && f.Name != "idempotency-key" && f.Name != "wait" {
				other = append(other, "--"+f.Name)
			}
		})
		if len(pos) > 0 || len(other) > 0 {
			return fmt.Errorf("--file holds whole job specs: give it alone (with --server, --token, --idempotency-key, --wait), not with %s", strings.Join(append(pos, other...), " "))
		}
		if err := checkKey(*key); err != nil {
			return err
		}
		c := newClient(server)
		ids, err := submitFile(ctx, &busy{c: c, stderr: stderr, key: *key}, *file, stdout)
		if err != nil || !*wait {
			return err
		}
		return waitMany(ctx, c, ids, asJSON, false, stdout, stderr)
	}
	spec, err := sf.spec("submit", pos, fs.Usage)
	if err != nil {
		return err
	}
	switch {
	case *delay > 0 && *at != "":
		return fmt.Errorf("give --delay or --at, not both")
	case *delay > 0:
		spec.Delay = delay.String()
	case *at != "":
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return fmt.Errorf("--at %q: give a time in RFC 3339, such as 2026-12-24T18:00:00Z", *at)
		}
		spec.RunAt = &t
	}
	if err := checkKey(*key); err != nil {
		return err
	}
	c := newClient(server)
	if *count != 1 {
		if *count < 1 {
			return fmt.Errorf("--count must be 1 or more; got --count %d", *count)
		}
		ids, err := submitMany(ctx, &busy{c: c, stderr: stderr, key: *key}, spec, *count, *wait, stdout)
		if err != nil || !*wait {
			return err
		}
		return waitMany(ctx, c, ids, asJSON, false, stdout, stderr)
	}
	// A key of the command's own when none is given (as the client's
	// Submit makes), so that a submit whose answer never came can be
	// asked again under it.
	k := *key
	if k == "" {
		k = newKey()
	}
	j, err := c.SubmitWithKey(ctx, spec, k)
	if client.IsUnavailable(err) {
		// The server may have stored the job and stopped answering
		// before its answer went out (seen: a server killed by the job's
		// own task a moment after it stored it).
		return fmt.Errorf("%w; if the server took the submit before it stopped answering, the job is stored: run the same command again with --idempotency-key %s to be answered that job rather than submit a second one", explain(err), k)
	}
	if err != nil {
		return explain(err)
	}
	if asJSON && !*wait {
		return printJSON(stdout, j)
	}
	// The id first, on stdout, wait or not: a script reads it there.
	fmt.Fprintln(stdout, j.ID)
	if !*wait {
		return nil
	}
	return waitJob(ctx, c, j.ID, asJSON, stdout, stderr)
}

// waitCmd runs "mrcluster wait ID…": it follows jobs to their end and
// exits 0 when every one succeeded, 1 when one failed or was canceled.
// One job's progress is shown as submit --wait shows it; many jobs' (ids,
// or - for those of standard input) as how many finished, each job's
// final state printed at the end.
func waitCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("wait", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrcluster wait JOB_ID… [--server URL] [--token T]   (- reads the ids from standard input, one a line: mrcluster submit noop 1 --count 100 | mrcluster wait -)")
		fs.PrintDefaults()
	}
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	if len(pos) == 1 && pos[0] != "-" {
		return waitJob(ctx, c, pos[0], asJSON, stdout, stderr)
	}
	ids, err := jobIDs(pos)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		if slices.Contains(pos, "-") {
			fmt.Fprintln(stderr, "mrcluster: no job ids on standard input; nothing to wait for")
			return nil
		}
		fs.Usage()
		return fmt.Errorf("wait takes job ids, got none")
	}
	return waitMany(ctx, c, ids, asJSON, true, stdout, stderr)
}

// waitMany follows many jobs to their end (client.WaitAll): how many
// finished, by state, on stderr (a line that rewrites itself on a
// terminal, else a line every progressEvery at most), then the jobs that
// did not succeed, with their errors. With states, stdout gets each job's
// id and final state in the order of ids; with asJSON, the finished jobs'
// resources as a JSON array instead. It fails unless every job succeeded.
func waitMany(ctx context.Context, c *client.Client, ids []string, asJSON, states bool, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	sayWaitingOut(c, stderr, tty)
	counts := map[client.State]int{}
	total := len(slices.Compact(slices.Sorted(slices.Values(ids))))
	line := func() string {
		n := counts[client.Succeeded] + counts[client.Failed] + counts[client.Canceled]
		return fmt.Sprintf("%d/%d jobs finished: %d succeeded, %d failed, %d canceled", n, total, counts[client.Succeeded], counts[client.Failed], counts[client.Canceled])
	}
	var printed time.Time
	last := ""
	// Without -o json only each job's state is kept, and the error of
	// those that did not succeed: a wait for a million jobs would have
	// held a gigabyte of their resources.
	var jobs []client.Job
	ended := map[string]client.State{}
	errs := map[string]string{}
	progress := func(j client.Job) {
		counts[j.State]++
		switch now := time.Now(); {
		case tty && now.Sub(printed) >= 100*time.Millisecond:
			// Ten times a second at most: thousands of jobs a second
			// would each write to the terminal.
			fmt.Fprintf(stderr, "\r%s", line())
			printed = now
		case tty:
		case now.Sub(printed) >= progressEvery:
			last = line()
			fmt.Fprintln(stderr, last)
			printed = now
		}
	}
	var err error
	if asJSON {
		jobs, err = c.WaitAll(ctx, ids, progress)
	} else {
		err = c.WaitEach(ctx, ids, func(j client.Job) {
			progress(j)
			ended[j.ID] = stateOf(j.State)
			if j.State != client.Succeeded && j.Error != "" {
				errs[j.ID] = j.Error
			}
		})
	}
	if tty {
		fmt.Fprintf(stderr, "\r%s\n", line())
	}
	if err != nil {
		return fmt.Errorf("%w; %s", explain(err), line())
	}
	if l := line(); !tty && l != last {
		fmt.Fprintln(stderr, l)
	}
	if asJSON {
		for _, j := range jobs {
			ended[j.ID] = j.State
			if j.Error != "" {
				errs[j.ID] = j.Error
			}
		}
	}
	const shown = 20
	bad := 0
	seen := make(map[string]bool)
	for _, id := range ids {
		st := ended[id]
		if st == client.Succeeded || seen[id] {
			continue
		}
		seen[id] = true
		if bad++; bad <= shown {
			if e := errs[id]; e != "" {
				fmt.Fprintf(stderr, "%s %s: %s\n", id, st, e)
			} else {
				fmt.Fprintf(stderr, "%s %s\n", id, st)
			}
		}
	}
	if bad > shown {
		fmt.Fprintf(stderr, "… and %d more jobs that did not succeed (mrcluster jobs --state failed, --state canceled)\n", bad-shown)
	}
	switch {
	case asJSON:
		if err := printJSON(stdout, jobs); err != nil {
			return err
		}
	case states:
		for _, id := range ids {
			fmt.Fprintf(stdout, "%s %s\n", id, ended[id])
		}
	}
	if bad > 0 {
		return exitError(1)
	}
	return nil
}

// stateOf is st as one of the client's constants, so that a wait for
// many jobs keeps no string of its own for each one's state.
func stateOf(st client.State) client.State {
	for _, c := range []client.State{client.Succeeded, client.Failed, client.Canceled} {
		if st == c {
			return c
		}
	}
	return st
}

// busyWait is how long a bulk submit waits before it first sends again a
// batch the server refused for want of room; the wait doubles while it is
// refused, up to busyMaxWait (vars: tests shorten them). A cluster at its
// bound makes room as fast as it finishes jobs, thousands a second: a
// fixed wait of 5 s let a batch of 1,000 in only every 5 s.
var busyWait, busyMaxWait = 200 * time.Millisecond, 5 * time.Second

// busy submits the batches of a bulk submit. While the server answers 429
// (its queue or its unfinished jobs at their bounds, or this client over
// its rate) it waits and sends the batch again: nothing of a refused batch
// was stored. A file of a million specs, more than a cluster takes at
// once, then goes in as the cluster makes room, instead of stopping at
// the bound. It says why it waits on stderr, at most once a minute, and
// waits until its context ends (Ctrl-C). A batch larger than the cluster
// could ever take (413: more jobs than --max-unfinished-jobs, more tasks
// than --max-queued-tasks, a body over the server's limit) is sent again
// in halves, and the next batches no larger than what went in.
type busy struct {
	c      *client.Client
	stderr io.Writer
	said   time.Time
	// key, when set, is the user's idempotency key: each batch is sent
	// under a key of its own made of it and the batch's place (batchKey).
	key string
	// most is the largest batch the server is sent (0: what the caller
	// gives), lowered when it answers that one could never be admitted.
	most int
}

// submit submits specs, the specs from number from on of the whole
// submit, in several batches when the server takes fewer at once. On an
// error it returns the jobs of the batches that went in: they are the
// first specs', and the batch that failed starts after them.
func (b *busy) submit(ctx context.Context, from int, specs []client.Spec) ([]client.Job, error) {
	var out []client.Job
	for len(specs) > 0 {
		n := len(specs)
		if b.most > 0 {
			n = min(n, b.most)
		}
		jobs, err := b.send(ctx, batchKey(b.key, from+len(out), n), specs[:n])
		var e *client.Error
		if errors.As(err, &e) && e.Status == http.StatusRequestEntityTooLarge && n > 1 {
			b.most = n / 2
			fmt.Fprintf(b.stderr, "mrcluster: the server takes no batch of %d jobs (%s); sending batches of %d\n", n, e.Message, b.most)
			continue
		}
		if err == nil && len(jobs) != n {
			err = fmt.Errorf("the server answered %d jobs for a batch of %d specs", len(jobs), n)
		}
		if err != nil {
			return out, err
		}
		out = append(out, jobs...)
		specs = specs[n:]
	}
	return out, nil
}

// newKey is an idempotency key of the command's own.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// maxKey bounds the user's idempotency key: the server takes 255 bytes,
// and a batch's key adds its place.
const maxKey = 200

func checkKey(key string) error {
	if len(key) > maxKey {
		return fmt.Errorf("--idempotency-key is %d bytes long; give at most %d", len(key), maxKey)
	}
	return nil
}

// batchKey is the idempotency key of the batch of n specs from spec number
// from on, under the user's key ("" without one: the client makes one per
// request). Run again, the same command sends the same batches under the
// same keys, and the server answers those that went in with their jobs;
// a spec changed meanwhile makes its batch's key a mismatch (422).
func batchKey(key string, from, n int) string {
	if key == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d+%d", key, from, n)
}

// send sends one batch, again while the server has no room for it.
func (b *busy) send(ctx context.Context, key string, specs []client.Spec) ([]client.Job, error) {
	wait := busyWait
	for {
		var jobs []client.Job
		var err error
		if key != "" {
			jobs, err = b.c.SubmitBatchWithKey(ctx, specs, key)
		} else {
			jobs, err = b.c.SubmitBatch(ctx, specs)
		}
		if !client.IsBusy(err) {
			return jobs, err
		}
		if time.Since(b.said) >= time.Minute {
			fmt.Fprintf(b.stderr, "mrcluster: waiting for the cluster to make room, then going on (Ctrl-C stops): %v\n", err)
			b.said = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, busyMaxWait)
	}
}

// resume tells how to go on after a bulk submit cut short.
func (b *busy) resume() string {
	if b.key != "" {
		return "run the same command again, with the same --idempotency-key, to go on: what went in is answered, not submitted again"
	}
	return "running the whole command again would submit those again; with --idempotency-key it would go on where it stopped"
}

// submitMany submits n jobs of spec in batches, printing their ids, and
// returns them when keep is set (a wait follows them).
func submitMany(ctx context.Context, c *busy, spec client.Spec, n int, keep bool, stdout io.Writer) ([]string, error) {
	const batch = 1000
	var ids []string
	for sent := 0; sent < n; {
		specs := make([]client.Spec, min(n-sent, batch))
		for i := range specs {
			specs[i] = spec
		}
		jobs, err := c.submit(ctx, sent, specs)
		for _, j := range jobs {
			fmt.Fprintln(stdout, j.ID)
			if keep {
				ids = append(ids, j.ID)
			}
		}
		sent += len(jobs)
		switch {
		case err != nil && sent == 0:
			return nil, explain(err)
		case err != nil:
			return nil, fmt.Errorf("%w; %d of the %d jobs were submitted (their ids are printed above); %s", explain(err), sent, n, c.resume())
		}
	}
	return ids, nil
}

// fileSpec is a job spec of a --file, and where it starts there.
type fileSpec struct {
	spec client.Spec
	line int
}

// maxSpecFile bounds a --file: a million specs of a few hundred bytes.
const maxSpecFile = 512 << 20

// readSpecs reads the job specs of r: JSON values one after the other,
// each a spec, an array of specs, or a batch body {"jobs":[…]}. An unknown
// field is an error naming the spec, as the API's would be.
func readSpecs(r io.Reader) ([]fileSpec, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSpecFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSpecFile {
		return nil, fmt.Errorf("the file is over %d MiB: split it", maxSpecFile>>20)
	}
	var out []fileSpec
	d := json.NewDecoder(bytes.NewReader(data))
	line, counted := 1, int64(0) // lines are counted once, not from the start at each value
	for {
		// The line where the next value starts: past the spaces.
		off := d.InputOffset()
		for off < int64(len(data)) && strings.ContainsRune(" \t\r\n", rune(data[off])) {
			off++
		}
		line += bytes.Count(data[counted:off], []byte("\n"))
		counted = off
		var raw json.RawMessage
		if err := d.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("line %d: not JSON: %v", line, err)
		}
		var list []json.RawMessage
		switch {
		case raw[0] == '[':
			_ = json.Unmarshal(raw, &list)
		case raw[0] == '{' && hasJobs(raw):
			var body struct{ Jobs []json.RawMessage }
			if err := json.Unmarshal(raw, &body); err != nil {
				return nil, fmt.Errorf("line %d: \"jobs\" must be an array of job specs: %v", line, err)
			}
			list = body.Jobs
		default:
			list = []json.RawMessage{raw}
		}
		for _, one := range list {
			var spec client.Spec
			sd := json.NewDecoder(bytes.NewReader(one))
			sd.DisallowUnknownFields()
			if err := sd.Decode(&spec); err != nil {
				return nil, fmt.Errorf("spec %d (line %d): %v", len(out)+1, line, err)
			}
			out = append(out, fileSpec{spec, line})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no job spec in it: give JSON objects such as {\"kind\":\"noop\",\"partitions\":1}, one a line")
	}
	return out, nil
}

// hasJobs reports whether the JSON object raw is a batch body: a "jobs"
// field and no "kind".
func hasJobs(raw json.RawMessage) bool {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return false
	}
	_, jobs := fields["jobs"]
	_, kind := fields["kind"]
	return jobs && !kind
}

// batchIndex reads the index the API names in a batch's error: "jobs[12]: …".
var batchIndex = regexp.MustCompile(`^jobs\[(\d+)\]: (.*)$`)

// submitFile submits the specs of path (- for standard input) in batches
// of 1,000, printing their ids, and returns them. Each batch is all or
// nothing; an error says which spec the server refused and how many were
// submitted before.
func submitFile(ctx context.Context, c *busy, path string, stdout io.Writer) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	specs, err := readSpecs(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	const batch = 1000
	ids := make([]string, 0, len(specs))
	for done := 0; done < len(specs); {
		part := specs[done:min(done+batch, len(specs))]
		list := make([]client.Spec, len(part))
		for i, s := range part {
			list[i] = s.spec
		}
		jobs, err := c.submit(ctx, done, list)
		for _, j := range jobs {
			fmt.Fprintln(stdout, j.ID)
			ids = append(ids, j.ID)
		}
		// The batch that failed starts after the jobs that went in.
		part, done = part[len(jobs):], done+len(jobs)
		if err != nil {
			before := "nothing was submitted"
			if done > 0 {
				before = fmt.Sprintf("the jobs of the %d specs before its batch were submitted (their ids are printed above); %s", done, c.resume())
				if c.key == "" {
					before += fmt.Sprintf(", or submit the specs from spec %d on (line %d)", done+1, part[0].line)
				}
			}
			var e *client.Error
			if errors.As(err, &e) {
				if m := batchIndex.FindStringSubmatch(e.Message); m != nil {
					i, _ := strconv.Atoi(m[1])
					if i < len(part) {
						return nil, fmt.Errorf("%s: spec %d (line %d): %s; %s", path, done+i+1, part[i].line, m[2], before)
					}
				}
			}
			return nil, fmt.Errorf("%w; %s", explain(err), before)
		}
	}
	return ids, nil
}

// waitJob follows a job until it finishes: a progress bar on a terminal;
// otherwise (a log, a pipe) a line at each change of state or phase and
// at most one every progressEvery between them, so that a job of
// thousands of tasks writes tens of lines, not thousands. It fails unless
// the job succeeds. With asJSON it prints the finished job's resource
// instead of its result.
func waitJob(ctx context.Context, c *client.Client, id string, asJSON bool, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	sayWaitingOut(c, stderr, tty)
	last, stage := "", ""
	var printed time.Time
	j, err := c.Wait(ctx, id, func(j client.Job) {
		line := progress(j, tty)
		now := time.Now()
		switch {
		case tty:
			fmt.Fprintf(stderr, "\r%s", line)
		case line == last:
		case string(j.State)+j.Phase != stage || now.Sub(printed) >= progressEvery:
			fmt.Fprintln(stderr, line)
			stage, printed = string(j.State)+j.Phase, now
		}
		last = line
	})
	if err != nil {
		return explain(err)
	}
	if tty {
		fmt.Fprintln(stderr)
	}
	if asJSON {
		if err := printJSON(stdout, j); err != nil {
			return err
		}
		if j.State != client.Succeeded {
			return exitError(1)
		}
		return nil
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

// sayWaitingOut makes c's waits say on stderr, the first time and then
// at most once a minute, that the server does not answer and they wait
// for it: a restart is waited out, a server gone for good until Ctrl-C.
func sayWaitingOut(c *client.Client, stderr io.Writer, tty bool) {
	var mu sync.Mutex
	var said time.Time
	c.WaitingOut = func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(said) < time.Minute {
			return
		}
		said = time.Now()
		if tty {
			fmt.Fprintln(stderr) // below the progress line
		}
		fmt.Fprintf(stderr, "mrcluster: %v; still waiting for the server to answer (Ctrl-C to stop)\n", err)
	}
}

// progressEvery paces waitJob's lines when they are not on a terminal.
const progressEvery = 2 * time.Second

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

// maxPage is the most jobs the API lists in one page.
const maxPage = 500

func listJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("jobs", stderr)
	state := fs.String("state", "", "only jobs in this state")
	kind := fs.String("kind", "", "only jobs of this kind")
	limit := fs.Int("limit", 20, "how many jobs, newest first (0: all), read 500 a page")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *limit < 0 {
		return fmt.Errorf("--limit must be 0 (all) or more, got %d", *limit)
	}
	asJSON, err := server.json()
	if err != nil {
		return err
	}
	c := newClient(server)
	// Page by page, each printed as it comes: --limit 0 over a history of
	// 200,000 jobs held them all (hundreds of MB) before printing a line.
	// The JSON is that of one list all the same.
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if asJSON {
		fmt.Fprint(stdout, "{\n  \"jobs\": [")
	} else {
		fmt.Fprintln(tw, "ID\tKIND\tSTATE\tDONE\tCREATED\tRESULT")
	}
	listed, cursor := 0, ""
	for {
		ask := maxPage
		if *limit > 0 {
			ask = min(ask, *limit-listed)
		}
		page, err := c.Jobs(ctx, client.ListOptions{State: client.State(*state), Kind: *kind, Limit: ask, Cursor: cursor})
		if err != nil {
			return explain(err)
		}
		for _, j := range page.Jobs {
			if asJSON {
				data, err := json.MarshalIndent(j, "    ", "  ")
				if err != nil {
					return err
				}
				sep := ","
				if listed == 0 {
					sep = ""
				}
				fmt.Fprintf(stdout, "%s\n    %s", sep, data)
			} else {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", j.ID, j.Kind, j.State, j.Tasks.Done, j.Tasks.Total, j.CreatedAt.Local().Format(time.DateTime), resultOf(j))
			}
			listed++
		}
		if !asJSON {
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		cursor = page.NextCursor
		if cursor == "" || *limit > 0 && listed >= *limit {
			break
		}
	}
	if asJSON {
		end := "]\n}\n"
		if cursor != "" {
			next, _ := json.Marshal(cursor)
			end = fmt.Sprintf("],\n  \"next_cursor\": %s\n}\n", next)
		}
		if listed > 0 {
			fmt.Fprint(stdout, "\n  ")
		}
		_, err := fmt.Fprint(stdout, end)
		return err
	}
	return nil
}

func oneID(name string, args []string, stderr io.Writer) (string, target, error) {
	fs, server := clientFlags(name, stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: mrcluster %s JOB_ID [--server URL] [--token T]\n", name)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return "", target{}, err
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", target{}, fmt.Errorf("%s takes one job id, got %d arguments", name, len(pos))
	}
	return pos[0], server, nil
}

func showJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("job", stderr)
	withTasks := fs.Bool("tasks", false, "also list every finished attempt of the job's tasks (phase, partition, attempt, worker, state, time, value or error), as the dashboard's task table; with -o json, the API's tasks resource alone")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrcluster job JOB_ID [--tasks] [--server URL] [--token T]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return fmt.Errorf("job takes one job id, got %d arguments", len(pos))
	}
	id := pos[0]
	asJSON, err := server.json()
	if err != nil {
		return err
	}
	c := newClient(server)
	j, err := c.Job(ctx, id)
	if err != nil {
		return explain(err)
	}
	var tasks []client.TaskAttempt
	unfinished := j.State == client.Queued || j.State == client.Running
	if *withTasks || unfinished && !asJSON {
		if tasks, err = c.Tasks(ctx, id); err != nil {
			return explain(err)
		}
	}
	switch {
	case asJSON && *withTasks:
		return printJSON(stdout, struct {
			Tasks []client.TaskAttempt `json:"tasks"`
		}{tasks})
	case asJSON:
		return printJSON(stdout, j)
	}
	if err := summary(stdout, j, time.Now()); err != nil {
		return err
	}
	if unfinished {
		waiting(stdout, tasks)
	}
	if !*withTasks {
		return nil
	}
	fmt.Fprintln(stdout)
	return taskTable(stdout, tasks)
}

// waiting names the tasks of an unfinished job whose last attempt was
// interrupted (the store failed under it, or had no room for its output)
// and that have not finished since: why the job waits.
func waiting(w io.Writer, tasks []client.TaskAttempt) {
	type task struct {
		phase string
		n     int
	}
	last := map[task]client.TaskAttempt{}
	var order []task
	for _, a := range tasks {
		k := task{a.Phase, a.Partition}
		if prev, ok := last[k]; !ok {
			order = append(order, k)
		} else if prev.State == "done" || a.FinishedAt.Before(prev.FinishedAt) {
			continue
		}
		last[k] = a
	}
	for _, k := range order {
		if a := last[k]; a.State == "interrupted" {
			name := "partition"
			if k.phase != "" {
				name = k.phase
			}
			fmt.Fprintf(w, "waiting        %s %d, interrupted at %s: %s\n", name, k.n, a.FinishedAt.Local().Format(time.TimeOnly), oneLine(a.Error, 200))
		}
	}
}

// oneLine is text on one line, cut to most runes.
func oneLine(text string, most int) string {
	text = strings.Join(strings.Fields(text), " ")
	if r := []rune(text); len(r) > most {
		text = string(r[:most-1]) + "…"
	}
	return text
}

// taskTable prints a job's task attempts for a person: a run that did not
// count says so, an error is cut to a line.
func taskTable(w io.Writer, tasks []client.TaskAttempt) error {
	if len(tasks) == 0 {
		_, err := fmt.Fprintln(w, "no task has finished an attempt yet")
		return err
	}
	tasks = slices.Clone(tasks)
	reduce := func(t client.TaskAttempt) int {
		if t.Phase == "reduce" {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(tasks, func(a, b client.TaskAttempt) int { return cmp.Compare(reduce(a), reduce(b)) }) // the maps first
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tTASK\tATTEMPT\tWORKER\tSTATE\tTOOK\tVALUE OR ERROR")
	for _, t := range tasks {
		phase, worker, state := t.Phase, t.Worker, t.State
		if phase == "" {
			phase = "map"
		}
		if worker == "" {
			worker = "-"
		}
		if t.Superseded {
			state += " (did not count)"
		}
		if t.Backup {
			state += " (backup)"
		}
		what := strconv.FormatInt(t.Value, 10)
		switch {
		case t.Error != "":
			what = oneLine(t.Error, 100)
		case t.Phase != "":
			what = "-"
			if t.Counters != nil {
				what = fmt.Sprintf("%d records out", max(t.Counters.MapOutputRecords, t.Counters.ReduceOutputRecords))
			}
		}
		took := time.Duration(t.DurationMS * float64(time.Millisecond))
		if took >= time.Millisecond {
			took = took.Round(time.Millisecond)
		} else {
			took = took.Round(time.Microsecond)
		}
		tookText := took.String()
		if t.State == "lost" {
			// Its end was never heard: how long it ran is not known, at
			// most from its start (when the server saw its worker run it)
			// to when its loss was noticed.
			if tookText = "-"; t.DurationMS > 0 {
				tookText = "≤" + took.String()
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", phase, t.Partition, t.Attempt, worker, state, tookText, what)
	}
	return tw.Flush()
}

// resultOf is a job's result in a few words, for tables.
func resultOf(j client.Job) string {
	switch {
	case j.Error != "":
		return fmt.Sprintf("%.60s", j.Error)
	case j.Result != nil:
		return "sum " + strconv.FormatInt(j.Result.Sum, 10)
	case j.Counters != nil && j.State == client.Succeeded:
		return fmt.Sprintf("%d output lines", j.Counters.ReduceOutputRecords)
	}
	return "-"
}

// summary prints a job for a person: what it is, where it stands, what it
// gave.
func summary(w io.Writer, j client.Job, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	at := func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format("2006-01-02 15:04:05.000"), now.Sub(*t).Round(time.Second))
	}
	created := j.CreatedAt
	state := string(j.State)
	if j.Phase != "" && !j.State.Terminal() {
		state += ", " + j.Phase + " phase"
	}
	fmt.Fprintf(tw, "job\t%s\n", j.ID)
	fmt.Fprintf(tw, "kind\t%s\n", j.Kind)
	if j.RerunOf != "" {
		fmt.Fprintf(tw, "rerun of\t%s\n", j.RerunOf)
	}
	if j.Retries > 0 {
		fmt.Fprintf(tw, "retries\t%d\n", j.Retries)
	}
	if j.Schedule != "" && j.Tick != nil {
		fmt.Fprintf(tw, "schedule\t%s, tick %s\n", j.Schedule, j.Tick.Local().Format(time.DateTime))
	}
	fmt.Fprintf(tw, "state\t%s\n", state)
	if j.Priority != 0 && j.Priority != 2 {
		fmt.Fprintf(tw, "priority\t%d\n", j.Priority)
	}
	if j.MaxAttempts > 0 {
		fmt.Fprintf(tw, "attempts\tup to %d per task\n", j.MaxAttempts)
	}
	fmt.Fprintf(tw, "created\t%s\n", at(&created))
	fmt.Fprintf(tw, "started\t%s\n", at(j.StartedAt))
	fmt.Fprintf(tw, "finished\t%s\n", at(j.FinishedAt))
	if j.StartedAt != nil && j.FinishedAt != nil {
		fmt.Fprintf(tw, "took\t%s\n", j.FinishedAt.Sub(*j.StartedAt).Round(time.Millisecond))
	}
	t := j.Tasks
	fmt.Fprintf(tw, "tasks\t%d/%d done, %d running, %d queued\n", t.Done, t.Total, t.Running, t.Queued)
	if j.RunAt != nil {
		fmt.Fprintf(tw, "runs at\t%s\n", j.RunAt.Local().Format("2006-01-02 15:04:05"))
	}
	if j.Timeout != "" {
		fmt.Fprintf(tw, "timeout\t%s per task attempt\n", j.Timeout)
	}
	if len(j.Input) > 0 {
		fmt.Fprintf(tw, "input\t%s (%d map tasks, %d reduce tasks)\n", strings.Join(j.Input, ", "), j.Partitions, j.Reducers)
	}
	var params map[string]any
	if len(j.Params) > 0 && json.Unmarshal(j.Params, &params) == nil {
		keys := make([]string, 0, len(params))
		for k := range params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "param %s\t%v\n", k, params[k])
		}
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", j.Error)
	}
	if j.Result != nil {
		fmt.Fprintf(tw, "sum\t%d (of %d values)\n", j.Result.Sum, len(j.Result.Values))
	}
	if c := j.Counters; c != nil {
		fmt.Fprintf(tw, "read\t%d bytes, %d records\n", c.InputBytes, c.InputRecords)
		fmt.Fprintf(tw, "wrote\t%d map outputs, %d output lines (mrcluster output %s)\n", c.MapOutputRecords, c.ReduceOutputRecords, j.ID)
	}
	if line := reduceInputs(j.ReduceInputBytes); line != "" {
		fmt.Fprintf(tw, "reduce input\t%s\n", line)
	}
	if j.ExpiresAt != nil {
		fmt.Fprintf(tw, "expires\t%s\n", j.ExpiresAt.Local().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

// reduceInputs says how the map output is spread over the reducers: the
// smallest, median and largest input, and the largest's reducer when it
// reads 4 times the median or more (a hot key).
func reduceInputs(in []int64) string {
	if len(in) < 2 {
		return ""
	}
	sorted := slices.Sorted(slices.Values(in))
	median, most := sorted[len(sorted)/2], sorted[len(sorted)-1]
	line := fmt.Sprintf("%d to %d bytes per reducer, median %d", sorted[0], most, median)
	if most >= 4*median && most > 0 {
		hot := slices.Index(in, most)
		if median > 0 {
			line += fmt.Sprintf("; reducer %d reads %.0f times the median: a hot key", hot, float64(most)/float64(median))
		} else {
			line += fmt.Sprintf("; reducer %d reads nearly all of it: a hot key", hot)
		}
	}
	return line
}

// cancelJob runs "mrcluster cancel ID…": each job canceled, its id and
// state printed; or "mrcluster cancel --kind K --state S": every unfinished
// job of the kind, the state or both canceled, a thousand a request.
func cancelJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("cancel", stderr)
	kind := fs.String("kind", "", "cancel every unfinished job of this kind (with --state: of both)")
	state := fs.String("state", "", "cancel every job in this state: scheduled, queued or running (with --kind: of both)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrcluster cancel JOB_ID… [--server URL] [--token T]   (- reads the ids from standard input, one a line)")
		fmt.Fprintln(stderr, "       mrcluster cancel --kind KIND [--state STATE]   or   mrcluster cancel --state STATE: every unfinished job that matches")
		fs.PrintDefaults()
	}
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	if *kind == "" && *state == "" {
		return forEachJob(ctx, c, fs, "cancel", "canceled", pos, asJSON, stdout, stderr, func(ctx context.Context, c *client.Client, id string, asJSON bool) (string, error) {
			j, err := c.Cancel(ctx, id)
			return jobLine(j, err, asJSON, fmt.Sprintf("%s %s", j.ID, j.State))
		})
	}
	if len(pos) > 0 {
		fs.Usage()
		return fmt.Errorf("cancel takes job ids or --kind/--state, not both")
	}
	all := client.CanceledJobs{Canceled: []string{}}
	for {
		got, err := c.CancelJobs(ctx, *kind, client.State(*state))
		if err != nil {
			if len(all.Canceled) > 0 {
				fmt.Fprintf(stderr, "mrcluster: %d jobs canceled before the error\n", len(all.Canceled))
			}
			return explain(err)
		}
		all.Canceled = append(all.Canceled, got.Canceled...)
		all.Failed = append(all.Failed, got.Failed...)
		if !asJSON {
			for _, id := range got.Canceled {
				fmt.Fprintln(stdout, id, "canceled")
			}
		}
		// Another round only while this one moved: jobs that cannot be
		// canceled would match again for ever.
		if !got.More || len(got.Canceled) == 0 {
			all.More = got.More
			break
		}
	}
	if asJSON {
		return printJSON(stdout, all)
	}
	for _, f := range all.Failed {
		fmt.Fprintf(stderr, "mrcluster: job %s not canceled: %s\n", f.ID, f.Error)
	}
	what := strings.TrimSpace(strings.Join([]string{*state, *kind}, " "))
	switch {
	case len(all.Failed) > 0:
		return fmt.Errorf("%d of the %s jobs not canceled (above); %d canceled", len(all.Failed), what, len(all.Canceled))
	case len(all.Canceled) == 0:
		fmt.Fprintf(stderr, "mrcluster: no unfinished %s jobs; nothing to cancel\n", what)
	}
	return nil
}

// jobLine is the line a command on many jobs prints for job j: its
// resource as JSON with asJSON, else text; nothing when err is set.
func jobLine(j client.Job, err error, asJSON bool, text string) (string, error) {
	switch {
	case err != nil:
		return "", err
	case asJSON:
		out, err := json.MarshalIndent(j, "", "  ")
		return string(out), err
	}
	return text, nil
}

// rerunJob runs "mrcluster rerun ID": a new job of a finished job's spec,
// whose id it prints.
func rerunJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("rerun", args, stderr)
	if err != nil {
		return err
	}
	asJSON, err := server.json()
	if err != nil {
		return err
	}
	j, err := newClient(server).Rerun(ctx, id)
	if err != nil {
		return explain(err)
	}
	if asJSON {
		return printJSON(stdout, j)
	}
	fmt.Fprintln(stdout, j.ID)
	return nil
}

// retryJob runs "mrcluster retry ID…": the unfinished tasks of failed or
// canceled jobs run again, each in its own job; with --wait it follows
// them to their end (one job as submit --wait does, many as wait does).
func retryJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("retry", stderr)
	wait := fs.Bool("wait", false, "wait for the retried jobs to finish, showing their progress; exit 1 unless all succeeded")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mrcluster retry ID… [--wait] [--server URL]: run the failed or canceled tasks of jobs again, each in the same job (- reads the ids from standard input, one a line)")
		fs.PrintDefaults()
	}
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	if *wait && len(pos) == 1 && pos[0] != "-" {
		j, err := c.Retry(ctx, pos[0])
		if err != nil {
			return explain(err)
		}
		return waitJob(ctx, c, j.ID, asJSON, stdout, stderr)
	}
	var mu sync.Mutex
	var retried []string
	err = forEachJob(ctx, c, fs, "retry", "retried", pos, asJSON, stdout, stderr, func(ctx context.Context, c *client.Client, id string, asJSON bool) (string, error) {
		j, err := c.Retry(ctx, id)
		if err == nil {
			mu.Lock()
			retried = append(retried, j.ID)
			mu.Unlock()
		}
		return jobLine(j, err, asJSON, fmt.Sprintf("%s %s (retry %d)", j.ID, j.State, j.Retries))
	})
	if !*wait || len(retried) == 0 {
		return err
	}
	// Those that could not be retried were said above; the others are
	// followed to their end all the same.
	werr := waitMany(ctx, c, retried, asJSON, false, stdout, stderr)
	return cmp.Or(err, werr)
}

// deleteJob runs "mrcluster delete ID…".
func deleteJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return eachJob(ctx, "delete", "deleted", args, stdout, stderr, func(ctx context.Context, c *client.Client, id string, _ bool) (string, error) {
		if err := c.Delete(ctx, id); err != nil {
			return "", err
		}
		return id + " deleted", nil
	})
}

// stdin is what "-" reads (a var: tests give their own).
var stdin io.Reader = os.Stdin

// eachJobAtOnce is how many requests a command on many jobs has in flight.
const eachJobAtOnce = 8

// eachJob runs a command on every job its arguments name: ids, or "-" for
// the ids of standard input, the first word of each line (the output of
// submit --count, of jobs, of cancel). It prints each job's line in the
// order given, a failure on stderr, and goes on; with one id the error is
// the command's.
func eachJob(ctx context.Context, name, done string, args []string, stdout, stderr io.Writer, do func(ctx context.Context, c *client.Client, id string, asJSON bool) (string, error)) error {
	fs, server := clientFlags(name, stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: mrcluster %s JOB_ID… [--server URL] [--token T]   (- reads the ids from standard input, one a line)\n", name)
		fs.PrintDefaults()
	}
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	return forEachJob(ctx, newClient(server), fs, name, done, pos, asJSON, stdout, stderr, do)
}

// jobIDs are the job ids pos names: each one, and for "-" the first word
// of each line of standard input (the output of submit --count, of jobs,
// of cancel).
func jobIDs(pos []string) ([]string, error) {
	var ids []string
	for _, p := range pos {
		if p != "-" {
			ids = append(ids, p)
			continue
		}
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			// "ID" heads the table of mrcluster jobs.
			if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] != "ID" {
				ids = append(ids, f[0])
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading job ids from standard input: %w", err)
		}
	}
	return ids, nil
}

// forEachJob is eachJob once the command's flags are parsed: pos are its
// arguments, the ids or "-".
func forEachJob(ctx context.Context, c *client.Client, fs *flag.FlagSet, name, done string, pos []string, asJSON bool, stdout, stderr io.Writer, do func(ctx context.Context, c *client.Client, id string, asJSON bool) (string, error)) error {
	ids, err := jobIDs(pos)
	if err != nil {
		return err
	}
	if len(ids) == 0 && slices.Contains(pos, "-") {
		// A pipe of no jobs (mrcluster jobs --state failed | mrcluster
		// retry -, with none failed) has nothing to do, as xargs -r.
		fmt.Fprintf(stderr, "mrcluster: no job ids on standard input; nothing to %s\n", name)
		return nil
	}
	if len(ids) == 0 {
		fs.Usage()
		return fmt.Errorf("%s takes job ids, got none", name)
	}
	if len(ids) == 1 && pos[0] != "-" {
		line, err := do(ctx, c, ids[0], asJSON)
		if err != nil {
			return explain(err)
		}
		fmt.Fprintln(stdout, line)
		return nil
	}
	failed := 0
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 4*eachJobAtOnce)]
		ids = ids[len(chunk):]
		lines, errs := make([]string, len(chunk)), make([]error, len(chunk))
		var wg sync.WaitGroup
		next := make(chan int)
		for range min(eachJobAtOnce, len(chunk)) {
			wg.Go(func() {
				for i := range next {
					lines[i], errs[i] = do(ctx, c, chunk[i], asJSON)
				}
			})
		}
		for i := range chunk {
			next <- i
		}
		close(next)
		wg.Wait()
		for i, id := range chunk {
			if errs[i] != nil {
				failed++
				fmt.Fprintf(stderr, "mrcluster: %s: %v\n", id, explain(errs[i]))
				continue
			}
			fmt.Fprintln(stdout, lines[i])
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped: %w (%d jobs not %s, besides those printed)", err, len(ids), done)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of the jobs were not %s (said above)", failed, done)
	}
	return nil
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, server := clientFlags("status", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	asJSON, err := server.json()
	if err != nil {
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
	if asJSON {
		return printJSON(stdout, map[string]any{"workers": workers, "queue": queue})
	}
	// Why waiting tasks do not start: a kind paused, or limited.
	kinds, err := c.Kinds(ctx)
	if err != nil {
		return explain(err)
	}
	paused := map[string]bool{}
	var held, limited []string
	for _, k := range kinds {
		if k.Paused {
			paused[k.Name] = true
			since := ""
			if k.PausedSince != nil {
				since = " since " + k.PausedSince.Local().Format(time.DateTime)
			}
			held = append(held, k.Name+since)
		}
		if l := limits(k); l != "-" {
			limited = append(limited, k.Name+" ("+l+")")
		}
	}
	busy := 0
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tHOST\tSTATE\tJOB\tPARTITION\tDONE")
	for _, w := range workers {
		state, part, jobID := "idle", "-", w.JobID
		if !w.Busy && w.WaitsAlone != "" {
			// A task whose last runs were lost with their worker: its
			// pool lets its other tasks end before it runs it.
			state, jobID = "waits to run alone", w.WaitsAlone
		}
		if w.Busy {
			busy++
			state, part = "busy", strconv.Itoa(w.Partition)
			if w.Phase == "reduce" {
				part = "reduce " + part
			}
			if w.Progress != nil {
				part += fmt.Sprintf(" (%.0f%%)", 100**w.Progress)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", w.Key, w.Host, state, jobID, part, w.TasksDone)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d of %d workers busy; %d tasks queued", busy, len(workers), queue.Depth)
	for i, q := range queue.Jobs {
		if i == statusQueued {
			fmt.Fprintf(stdout, "\n  … and %s more jobs with tasks waiting (GET /api/v1/queue lists them)", moreJobs(len(queue.Jobs)-i, queue.More))
			break
		}
		why := ""
		if paused[q.Kind] {
			why = " (kind paused)"
		}
		fmt.Fprintf(stdout, "\n  %s: %d%s", q.Job, q.Waiting, why)
	}
	n := queue.Counts
	fmt.Fprintf(stdout, "\njobs: %d in all: %d scheduled, %d queued, %d running, %d succeeded, %d failed, %d canceled\n",
		n.Total, n.Scheduled, n.Queued, n.Running, n.Succeeded, n.Failed, n.Canceled)
	if len(held) > 0 {
		fmt.Fprintf(stdout, "kinds paused, their tasks waiting until resumed (mrcluster kind resume NAME): %s\n", strings.Join(held, ", "))
	}
	if len(limited) > 0 {
		fmt.Fprintf(stdout, "kinds limited: %s\n", strings.Join(limited, ", "))
	}
	if room := queue.StoreRoom; room != nil {
		fmt.Fprintf(stdout, "store: room for %s more", mebibytes(*room))
		if *room < lowRoom {
			fmt.Fprint(stdout, "; a task whose output is larger waits for room, then fails its job: delete datasets or finished jobs (mrcluster delete), or give the servers' data directories more disk")
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

// lowRoom is the store's room under which status says what it means.
const lowRoom = 1 << 30

// mebibytes writes n bytes in MiB, or GiB from 10 GiB.
func mebibytes(n int64) string {
	if n >= 10<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// statusQueued bounds the jobs with waiting tasks that status names.
const statusQueued = 10

// moreJobs says how many more jobs a list cut short holds: n, or more
// than n when the server's own list was cut short too.
func moreJobs(n int, more bool) string {
	if more {
		return fmt.Sprintf("over %d", n)
	}
	return strconv.Itoa(n)
}

// parseInterspersed parses args into fs, letting flags come after the
// positional arguments, which it returns.
// The flags are parsed, and the environment read, even when there are no
// arguments at all: every command takes its server and token the same way.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := negativeArg(fs, args); err != nil {
		return nil, err
	}
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// negativeArg reports an argument such as -3 that is no flag's value: the
// flag package would say "flag provided but not defined: -3" and print
// every flag, where the user gave a count below 1 (mrcluster submit noop
// -3).
func negativeArg(fs *flag.FlagSet, args []string) error {
	for i, a := range args {
		if a == "--" {
			return nil
		}
		if _, err := strconv.ParseFloat(a, 64); err != nil || !strings.HasPrefix(a, "-") {
			continue
		}
		if i > 0 && strings.HasPrefix(args[i-1], "-") && !strings.Contains(args[i-1], "=") {
			if f := fs.Lookup(strings.TrimLeft(args[i-1], "-")); f != nil {
				if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
					continue // the value of the flag before it
				}
			}
		}
		return fmt.Errorf("%s: a negative number is not allowed here (an argument beginning with - is read as a flag, and there is no flag %s)", a, a)
	}
	return nil
}
