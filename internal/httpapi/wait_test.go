package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/view"
)

// queuedService answers every job as queued, and says when it is read.
type queuedService struct {
	recordService
	read chan struct{}
}

func (s queuedService) Job(_ context.Context, id string) (client.Job, error) {
	select {
	case s.read <- struct{}{}:
	default:
	}
	return client.Job{ID: id, Kind: "noop", State: client.Queued}, nil
}

// A GET that waits for a job's end is answered, with the job's state, as
// the server leaves (its http.Server's Shutdown would wait for it): not
// once its wait is over.
func TestAWaitingGetIsAnsweredWhenTheServerLeaves(t *testing.T) {
	svc := queuedService{read: make(chan struct{}, 1)}
	s := New(Config{Service: svc, View: view.New(view.Config{}), Hub: event.NewHub(), Kinds: kinds.Builtin(0),
		Ready: func(context.Context) error { return nil }, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(s)
	defer srv.Close()
	type answer struct {
		status int
		job    client.Job
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 2 * MaxJobWait}).Get(srv.URL + "/api/v1/jobs/noop_a?wait=" + MaxJobWait.String())
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		var a answer
		a.status, a.err = resp.StatusCode, json.NewDecoder(resp.Body).Decode(&a.job)
		done <- a
	}()
	<-svc.read // the request is in its wait
	<-svc.read // and read the job again
	// The client's next wait, past its most, is answered at once.
	defer jobWaitsPerClient.Store(jobWaitsPerClient.Swap(1))
	begun := time.Now()
	resp, err := (&http.Client{Timeout: 2 * MaxJobWait}).Get(srv.URL + "/api/v1/jobs/noop_b?wait=" + MaxJobWait.String())
	if err != nil || resp.StatusCode != http.StatusOK || time.Since(begun) > MaxJobWait/2 {
		t.Fatalf("a wait past the client's most: %v %v after %v; want the job at once", resp, err, time.Since(begun))
	}
	resp.Body.Close()
	s.Leave()
	select {
	case a := <-done:
		if a.err != nil || a.status != http.StatusOK || a.job.State != client.Queued {
			t.Fatalf("the waiting GET answered %d %+v %v; want 200 and the job queued", a.status, a.job, a.err)
		}
	case <-time.After(MaxJobWait / 2):
		t.Fatal("the waiting GET was not answered as the server left")
	}
}
