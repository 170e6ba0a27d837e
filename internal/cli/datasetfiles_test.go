package cli

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
)

// A pipeline from the command line: a word count's output stored as a
// dataset on the server (--from-job), read back, and read by the next
// job; standard input stored as a file (-, --as).
func TestDatasetPutFromAJobAndFromStandardInput(t *testing.T) {
	srv := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer func(r io.Reader) { stdin = r }(stdin)
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := datasetCmd(ctx, append(args, "--server", srv.URL()), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	stdin = strings.NewReader("the cat\nthe dog\n")
	if _, errOut, err := run("put", "pets", "-", "--as", "pets.txt"); err != nil || !strings.Contains(errOut, "stored standard input as pets/pets.txt") {
		t.Fatalf("put - --as pets.txt: %v, %q", err, errOut)
	}
	if _, _, err := run("put", "pets", "-"); err == nil || !strings.Contains(err.Error(), "--as FILE") {
		t.Fatalf("put - without --as: %v", err)
	}
	if _, _, err := run("put", "pets", "a.txt", "--as", "b.txt"); err == nil || !strings.Contains(err.Error(), "stored under its own name") {
		t.Fatalf("put of a path with --as: %v", err)
	}
	c := client.New(srv.URL(), "")
	j, err := c.Submit(ctx, client.Spec{Kind: "wordcount", Input: []string{"pets"}, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = c.Wait(ctx, j.ID, nil); err != nil || j.State != client.Succeeded {
		t.Fatalf("the word count: %+v, %v", j, err)
	}
	if _, errOut, err := run("put", "counts", "--from-job", j.ID); err != nil || !strings.Contains(errOut, "stored the output of job "+j.ID+" as counts/"+j.ID+".txt (18 bytes)") {
		t.Fatalf("put counts --from-job: %v, %q", err, errOut)
	}
	if out, _, err := run("cat", "counts", j.ID+".txt"); err != nil || out != "cat 1\ndog 1\nthe 2\n" {
		t.Fatalf("cat of the stored output: %q, %v", out, err)
	}
	if _, _, err := run("put", "counts", "a.txt", "--from-job", j.ID); err == nil || !strings.Contains(err.Error(), "takes the dataset's name alone") {
		t.Fatalf("put with files and --from-job: %v", err)
	}
	if _, _, err := run("put", "counts", "--from-job", "wordcount_nothere"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("put --from-job of a job that does not exist: %v", err)
	}
	next, err := c.Submit(ctx, client.Spec{Kind: "grep", Input: []string{"counts"}, Partitions: 1, Params: map[string]any{"pattern": "^the "}})
	if err != nil {
		t.Fatal(err)
	}
	if next, err = c.Wait(ctx, next.ID, nil); err != nil || next.State != client.Succeeded {
		t.Fatalf("the job over the stored output: %+v, %v", next, err)
	}
	var out strings.Builder
	if err := c.Output(ctx, next.ID, &out); err != nil || out.String() != j.ID+".txt:3 the 2\n" {
		t.Fatalf("a grep of the stored output: %q, %v", out.String(), err)
	}
}
