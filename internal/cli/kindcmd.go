package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/mrcluster/mrcluster/client"
)

// limits describes a kind's limits for a person.
func limits(k client.Kind) string {
	var out []string
	if k.Concurrency > 0 {
		out = append(out, fmt.Sprintf("at most %d at once", k.Concurrency))
	}
	if k.Rate != "" {
		out = append(out, "at most "+k.Rate)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

// kindCmd runs "mrcluster kind put|ls|rm": kinds uploaded as WebAssembly
// modules.
func kindCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = `usage: mrcluster kind put NAME FILE.wasm [--description D] | ls | rm NAME | pause NAME | resume NAME | limit NAME [--concurrency N] [--rate R]   [--server URL] [--token T] [-o json]
  put NAME FILE.wasm  upload a WebAssembly module as kind NAME (its next version, when NAME exists)
  ls                  list the kinds, built in and uploaded, with their parameters (also: mrcluster kinds)
  rm NAME             delete an uploaded kind that no unfinished job uses
  pause NAME          in the whole cluster, start no task of kind NAME (its waiting tasks leave the queue; running ones finish)
  resume NAME         queue the waiting tasks of kind NAME's jobs again
  limit NAME          in the whole cluster, run at most --concurrency tasks of kind NAME at once and start at most
                      --rate a second or minute ("100/s", "10/m"); 0 and "" lift them`
	sub, args, err := subcommand("kind", "put, ls, rm, pause, resume or limit", use, args, stdout, stderr)
	if sub == "" {
		return err
	}
	fs, server := clientFlags("kind "+sub, stderr)
	description := fs.String("description", "", "with put: the kind's description (default: the module's own)")
	concurrency := fs.Int("concurrency", 0, "with limit: most tasks of the kind running at once in the cluster (0: no limit)")
	rate := fs.String("rate", "", "with limit: most tasks of the kind started per second or minute, e.g. 100/s or 10/m (empty: no limit)")
	fs.Usage = func() { fmt.Fprintln(stderr, use); fs.PrintDefaults() }
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	switch sub {
	case "put":
		if len(pos) != 2 {
			fs.Usage()
			return fmt.Errorf("kind put needs a kind name and one .wasm file")
		}
		var k client.Kind
		err := withFile(pos[1], func(f *os.File, size int64) (err error) {
			k, err = c.PutKind(ctx, pos[0], *description, f, size)
			return err
		})
		if err != nil {
			return fmt.Errorf("upload %s: %w", pos[1], explain(err))
		}
		if asJSON {
			return printJSON(stdout, k)
		}
		fmt.Fprintf(stdout, "kind %s version %d (module %.12s, %d bytes)\n", k.Name, k.Version, k.Hash, k.Size)
		return nil
	case "ls":
		kinds, err := c.Kinds(ctx)
		if err != nil {
			return explain(err)
		}
		if asJSON {
			return printJSON(stdout, map[string]any{"kinds": kinds})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tVERSION\tMODULE\tBYTES\tUPLOADED\tSTATE\tLIMITS\tPARAMS\tDESCRIPTION")
		for _, k := range kinds {
			version, module, size, at := "built in", "-", "-", "-"
			if k.Uploaded {
				version, module, size = fmt.Sprint(k.Version), k.Hash[:min(12, len(k.Hash))], fmt.Sprint(k.Size)
				if k.UploadedAt != nil {
					at = k.UploadedAt.Local().Format("2006-01-02 15:04:05")
				}
			}
			var params []string
			for _, p := range k.Params {
				if p.Required {
					params = append(params, p.Name)
				} else {
					params = append(params, p.Name+"?")
				}
			}
			state := "active"
			if k.Paused {
				state = "paused"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, version, module, size, at, state, limits(k), strings.Join(params, ","), k.Description)
		}
		return tw.Flush()
	case "rm":
		if len(pos) != 1 {
			fs.Usage()
			return fmt.Errorf("kind rm needs one kind name")
		}
		return explain(c.DeleteKind(ctx, pos[0]))
	case "limit":
		if len(pos) != 1 {
			fs.Usage()
			return fmt.Errorf("kind limit needs one kind name, then --concurrency N and/or --rate R")
		}
		k, err := c.SetKindLimits(ctx, pos[0], client.KindLimits{Concurrency: *concurrency, Rate: *rate})
		if err != nil {
			return explain(err)
		}
		if asJSON {
			return printJSON(stdout, k)
		}
		fmt.Fprintf(stdout, "kind %s: %s\n", k.Name, limits(k))
		return nil
	case "pause", "resume":
		if len(pos) != 1 {
			fs.Usage()
			return fmt.Errorf("kind %s needs one kind name", sub)
		}
		change := c.PauseKind
		if sub == "resume" {
			change = c.ResumeKind
		}
		k, err := change(ctx, pos[0])
		if err != nil {
			return explain(err)
		}
		if asJSON {
			return printJSON(stdout, k)
		}
		if k.Paused {
			fmt.Fprintf(stdout, "kind %s paused: none of its tasks starts until mrcluster kind resume %s\n", k.Name, k.Name)
		} else {
			fmt.Fprintf(stdout, "kind %s resumed: its jobs' waiting tasks are queued again\n", k.Name)
		}
		return nil
	}
	fmt.Fprintln(stderr, use)
	return fmt.Errorf("unknown kind subcommand %q: use put, ls, rm, pause, resume or limit", sub)
}
