package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
)

// dataset runs "mrcluster dataset put|ls|cat|rm".
func datasetCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = `usage: mrcluster dataset put NAME FILE… | put NAME --from-job ID | ls [NAME] | cat NAME FILE | rm NAME [FILE…]   [--server URL] [--token T] [-o json]
  put NAME FILE…  upload files into dataset NAME (made if new; a file of the same name is replaced),
                  each under its base name ("My Book (2).txt" as it is), a character a file name cannot hold
                  (/ \ : , * ? " < > | and control characters) as '-' ("a:b.txt" is stored as a-b.txt);
                  - reads standard input, stored under --as NAME
  put NAME --from-job ID [--as FILE]
                  store a succeeded job's output as a file of dataset NAME (ID.txt unless --as), on the server:
                  the next job's input (mrcluster submit wordcount --input NAME)
  ls              list the datasets
  ls NAME         list the files of dataset NAME
  cat NAME FILE   print a file of a dataset as it was uploaded
  rm NAME         delete a dataset and its files
  rm NAME FILE…   delete files of a dataset (the dataset keeps the others)`
	sub, args, err := subcommand("dataset", "put, ls, cat or rm", use, args, stdout, stderr)
	if sub == "" {
		return err
	}
	fs, server := clientFlags("dataset "+sub, stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, use); fs.PrintDefaults() }
	var fromJob, as *string
	if sub == "put" {
		fromJob = fs.String("from-job", "", "store this succeeded job's output as a file of the dataset, on the server")
		as = fs.String("as", "", "the stored file's name: of --from-job's output (ID.txt when not given), or of standard input (-)")
	}
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	switch sub {
	case "put":
		if *fromJob != "" {
			if len(pos) != 1 {
				fs.Usage()
				return fmt.Errorf("dataset put --from-job takes the dataset's name alone, not files")
			}
			name := *as
			if name == "" {
				name = *fromJob + ".txt"
			}
			d, err := c.PutFileFromJob(ctx, pos[0], name, *fromJob)
			if err != nil {
				return fmt.Errorf("store the output of job %s: %w", *fromJob, explain(err))
			}
			for _, f := range d.Files {
				if f.Name == name {
					fmt.Fprintf(stderr, "stored the output of job %s as %s/%s (%d bytes)\n", *fromJob, pos[0], name, f.Size)
				}
			}
			return nil
		}
		if len(pos) < 2 {
			fs.Usage()
			return fmt.Errorf("dataset put needs a dataset name and at least one file (or --from-job ID)")
		}
		if slices.Contains(pos[1:], "-") {
			if len(pos) != 2 || *as == "" {
				fs.Usage()
				return fmt.Errorf("dataset put NAME - reads one file from standard input: name it with --as FILE")
			}
			if _, err := c.PutFile(ctx, pos[0], *as, stdin, -1); err != nil {
				return fmt.Errorf("upload standard input as %s/%s: %w", pos[0], *as, explain(err))
			}
			fmt.Fprintf(stderr, "stored standard input as %s/%s\n", pos[0], *as)
			return nil
		}
		if *as != "" {
			fs.Usage()
			return fmt.Errorf("--as names standard input's file (-) or --from-job's; a file given by its path is stored under its own name")
		}
		names, err := storedNames(pos[1:])
		if err != nil {
			return err
		}
		for i, path := range pos[1:] {
			if err := putFile(ctx, c, pos[0], path, names[i], stderr); err != nil {
				return err
			}
		}
		return nil
	case "ls":
		if len(pos) > 1 {
			fs.Usage()
			return fmt.Errorf("dataset ls takes at most one dataset name")
		}
		if len(pos) == 1 {
			return listFiles(ctx, c, pos[0], asJSON, stdout)
		}
		datasets, err := c.Datasets(ctx)
		if err != nil {
			return explain(err)
		}
		if asJSON {
			return printJSON(stdout, map[string]any{"datasets": datasets})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DATASET\tFILES\tBYTES\tUPDATED")
		for _, d := range datasets {
			n := d.FileCount
			if n == 0 { // a server of an earlier version
				n = len(d.Files)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", d.Name, n, d.Size, d.UpdatedAt.Local().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	case "cat":
		if len(pos) != 2 {
			fs.Usage()
			return fmt.Errorf("dataset cat needs a dataset name and a file name")
		}
		return explain(c.GetFile(ctx, pos[0], pos[1], stdout))
	case "rm":
		if len(pos) == 0 {
			fs.Usage()
			return fmt.Errorf("dataset rm needs a dataset name, and the files to delete of it if not all")
		}
		if len(pos) == 1 {
			return explain(c.DeleteDataset(ctx, pos[0]))
		}
		for _, file := range pos[1:] {
			if err := c.DeleteFile(ctx, pos[0], file); err != nil {
				return explain(err)
			}
		}
		return nil
	}
	fmt.Fprintln(stderr, use)
	return fmt.Errorf("unknown dataset subcommand %q: use put, ls, cat or rm", sub)
}

// listFiles prints the files of dataset name.
func listFiles(ctx context.Context, c *client.Client, name string, asJSON bool, stdout io.Writer) error {
	d, err := c.Dataset(ctx, name)
	if err != nil {
		return explain(err)
	}
	if asJSON {
		return printJSON(stdout, d)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tBYTES\tBLOCKS\tUPLOADED")
	for _, f := range d.Files {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", f.Name, f.Size, len(f.Lines), f.UploadedAt.Local().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

// subcommand splits a "mrcluster NAME SUB …" command's arguments: sub is
// empty when there is none (an error naming them) or help was asked for
// (use printed, nil).
func subcommand(name, subs, use string, args []string, stdout, stderr io.Writer) (sub string, rest []string, err error) {
	switch {
	case len(args) == 0:
		fmt.Fprintln(stderr, use)
		return "", nil, fmt.Errorf("%s needs a subcommand: %s", name, subs)
	case isHelp(args[0]):
		fmt.Fprintln(stdout, use)
		return "", nil, nil
	}
	return args[0], args[1:], nil
}

// parseClient parses a client command's flags and positional arguments,
// and reads -o.
func parseClient(fs *flag.FlagSet, server target, args []string) (pos []string, asJSON bool, err error) {
	if pos, err = parseInterspersed(fs, args); err != nil {
		return nil, false, err
	}
	asJSON, err = server.json()
	return pos, asJSON, err
}

// isHelp reports whether a subcommand's place holds a request for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// storedName is the name the file at path is stored under: its base name,
// each character a dataset's file name cannot hold made '-', as the
// dashboard's upload does ("a:b.txt" is a-b.txt), and no dot or space
// first or last, nor a dot beside another. What is still no file name (too
// long) the server refuses, naming it.
func storedName(path string) string {
	base := filepath.Base(path)
	name := []rune(strings.ToValidUTF8(base, "-"))
	for i, c := range name {
		if !job.FileNameRune(c) {
			name[i] = '-'
		}
	}
	s := string(name)
	for strings.Contains(s, "..") {
		s = strings.ReplaceAll(s, "..", ".")
	}
	if s = strings.Trim(s, ". "); s == "" {
		return base
	}
	return s
}

// storedNames are the paths' storedName, each once: two files stored under
// one name in one upload would leave only the second.
func storedNames(paths []string) ([]string, error) {
	names := make([]string, len(paths))
	seen := map[string]string{}
	for i, path := range paths {
		names[i] = storedName(path)
		if other, ok := seen[names[i]]; ok {
			return nil, fmt.Errorf("%s and %s would both be stored as %s, the second over the first: upload them to two datasets, or rename one", other, path, names[i])
		}
		seen[names[i]] = path
	}
	return names, nil
}

// withFile calls fn with the file at path, open, and its size.
func withFile(path string, fn func(f *os.File, size int64) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return fn(f, st.Size())
}

// putFile uploads the file at path into dataset ds as name, sending it
// again while the server answers 503 (its store electing a leader, or
// refusing writes for a moment), as often as the client's reads are.
func putFile(ctx context.Context, c *client.Client, ds, path, name string, stderr io.Writer) error {
	var size int64
	tty := isTerminal(stderr)
	err := client.Again(ctx, c.Retries, func() error {
		return withFile(path, func(f *os.File, n int64) error {
			size = n
			var r io.Reader = f
			if tty && n >= showUploadFrom {
				r = &uploading{r: f, path: path, total: n, out: stderr}
			}
			_, err := c.PutFile(ctx, ds, name, r, n)
			return err
		})
	})
	if tty && size >= showUploadFrom {
		fmt.Fprint(stderr, "\r\033[K") // the progress line goes
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, explain(err))
	}
	fmt.Fprintf(stderr, "stored %s as %s/%s (%d bytes)\n", path, ds, name, size)
	return nil
}

// showUploadFrom is the size from which an upload to a terminal shows how
// far it has come: a large file takes a minute at tens of MB a second.
const showUploadFrom = 16 << 20

// uploading reads a file being uploaded and rewrites a line on a terminal
// with how much of it was sent, ten times a second at most.
type uploading struct {
	r       io.Reader
	path    string
	total   int64
	sent    int64
	out     io.Writer
	printed time.Time
}

func (u *uploading) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	u.sent += int64(n)
	if now := time.Now(); now.Sub(u.printed) >= 100*time.Millisecond || err == io.EOF {
		u.printed = now
		fmt.Fprintf(u.out, "\r\033[Kuploading %s: %d%% (%s of %s)", u.path, u.sent*100/max(u.total, 1), inMiB(u.sent), inMiB(u.total))
	}
	return n, err
}

// inMiB says n bytes in MiB, one decimal.
func inMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// output runs "mrcluster output JOB": the job's output on stdout.
func output(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("output", args, stderr)
	if err != nil {
		return err
	}
	return explain(newClient(server).Output(ctx, id, stdout))
}
