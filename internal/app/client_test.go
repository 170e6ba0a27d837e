package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
)

// The public client's types are the API's: every answer decodes into them
// with no field left over, and a Go program driving a job through the
// client sees what the HTTP API says.
func TestPublicClientCoversTheAPI(t *testing.T) {
	b := setup(t)
	c := b.client().API()
	ctx := apitest.Context(t)
	text := "the cat\nthe dog\n"
	if _, err := c.PutFile(ctx, "pets", "a.txt", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	wc, err := c.Submit(ctx, client.Spec{Kind: "wordcount", Input: []string{"pets"}, Partitions: 2, Reducers: 2})
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	wc, err = c.Wait(ctx, wc.ID, func(client.Job) { seen++ })
	if err != nil || wc.State != client.Succeeded || seen == 0 {
		t.Fatalf("wait: %v, %s after %d reads", err, apitest.Describe(wc), seen)
	}
	var out bytes.Buffer
	if err := c.Output(ctx, wc.ID, &out); err != nil || out.String() != "cat 1\ndog 1\nthe 2\n" {
		t.Fatalf("output: %v %q", err, out.String())
	}
	noop := b.submit(t, "noop", 3)
	b.await(t, noop.ID, terminal)

	strict := func(path string, v any) {
		t.Helper()
		r := b.do(t, http.MethodGet, path, "")
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		d := json.NewDecoder(bytes.NewReader(r.Body))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			t.Fatalf("GET %s does not decode into the client's %T: %v\n%s", path, v, err, r.Body)
		}
	}
	strict("/api/v1/jobs/"+wc.ID, new(client.Job))
	strict("/api/v1/jobs/"+noop.ID, new(client.Job))
	strict("/api/v1/jobs?limit=10", new(client.JobList))
	strict("/api/v1/jobs/"+wc.ID+"/tasks", new(struct {
		Tasks []client.TaskAttempt `json:"tasks"`
	}))
	strict("/api/v1/workers", new(struct {
		Workers []client.Worker `json:"workers"`
	}))
	strict("/api/v1/queue", new(client.Queue))
	strict("/api/v1/kinds", new(struct {
		Kinds []client.Kind `json:"kinds"`
	}))
	strict("/api/v1/datasets", new(struct {
		Datasets []client.Dataset `json:"datasets"`
	}))
	strict("/api/v1/datasets/pets", new(client.Dataset))

	tasks, err := c.Tasks(ctx, wc.ID)
	if err != nil || len(tasks) != 4 {
		t.Fatalf("tasks: %v, %d attempts; want 2 maps and 2 reduces", err, len(tasks))
	}
	if _, err := c.Job(ctx, "noop_nope"); !client.IsNotFound(err) {
		t.Fatalf("a job that does not exist: %v; want a not-found error", err)
	}
	_, err = c.Submit(ctx, client.Spec{Kind: "nope", Partitions: 1})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, `unknown kind "nope"`) {
		t.Fatalf("submit of an unknown kind: %v", err)
	}
	if err := c.DeleteDataset(ctx, "pets"); err != nil {
		t.Fatal(err)
	}
	if ds, err := c.Datasets(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("datasets after delete: %v %+v", err, ds)
	}
}
