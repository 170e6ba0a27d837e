package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/mrcluster/mrcluster/internal/dataset"
)

// dataset runs "mrcluster dataset put|ls|rm".
func datasetCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: mrcluster dataset put NAME FILE… | ls | rm NAME   [--server URL] [--token T]"
	if len(args) == 0 {
		fmt.Fprintln(stderr, use)
		return fmt.Errorf("dataset needs a subcommand: put, ls or rm")
	}
	sub, args := args[0], args[1:]
	fs, server := clientFlags("dataset "+sub, stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, use); fs.PrintDefaults() }
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	switch sub {
	case "put":
		if len(pos) < 2 {
			fs.Usage()
			return fmt.Errorf("dataset put needs a dataset name and at least one file")
		}
		for _, path := range pos[1:] {
			if err := c.putFile(ctx, pos[0], path, stderr); err != nil {
				return err
			}
		}
		return nil
	case "ls":
		var out struct {
			Datasets []dataset.Dataset `json:"datasets"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/datasets", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DATASET\tFILES\tBYTES\tUPDATED")
		for _, d := range out.Datasets {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", d.Name, len(d.Files), d.Size, d.UpdatedAt.Local().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	case "rm":
		if len(pos) != 1 {
			fs.Usage()
			return fmt.Errorf("dataset rm needs one dataset name")
		}
		return c.do(ctx, http.MethodDelete, "/api/v1/datasets/"+url.PathEscape(pos[0]), nil, nil)
	}
	fmt.Fprintln(stderr, use)
	return fmt.Errorf("unknown dataset subcommand %q", sub)
}

// putFile uploads the file at path into dataset ds under its base name.
func (c *client) putFile(ctx context.Context, ds, path string, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	name := filepath.Base(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/api/v1/datasets/"+url.PathEscape(ds)+"/files/"+url.PathEscape(name), f)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	resp, err := c.send(req, http.DefaultClient) // no timeout: files may be large
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	resp.Body.Close()
	fmt.Fprintf(stderr, "stored %s as %s/%s (%d bytes)\n", path, ds, name, st.Size())
	return nil
}

// output runs "mrcluster output JOB": the job's output on stdout.
func output(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, server, err := oneID("output", args, stderr)
	if err != nil {
		return err
	}
	c := newClient(server)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/jobs/"+url.PathEscape(id)+"/output", nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req, http.DefaultClient)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(stdout, resp.Body)
	return err
}
