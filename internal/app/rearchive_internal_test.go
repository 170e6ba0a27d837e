package app

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
)

// A job that finished and whose archived copy the store then lost (seen
// once in a cluster's partition test: the stream's leader after the heal
// lacked a message its replicas had delivered) is archived again from the
// server's read model once its bucket record has expired: after a spell of
// store trouble, after a leader election of a job stream, or when a read
// does not find it. Its reads work again instead of answering 503, then
// 404, for good, and other servers learn its end.
func TestALostArchivedCopyIsMendedAfterStoreTrouble(t *testing.T) {
	for name, trouble := range map[string]func(*Server){
		// A spell of refusals, as the store probe reports one.
		"refused writes": func(srv *Server) {
			srv.health.set("test: the store does not take writes")
			srv.health.set("")
		},
		// A job stream's leader elected, as JetStream's advisory says.
		"an election": func(srv *Server) { srv.elected.Store(time.Now().UnixNano()) },
		// Nothing: a read of the job finds it missing.
		"a read": nil,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mendAfter(t, trouble)
		})
	}
}

func mendAfter(t *testing.T, trouble func(*Server)) {
	srv := startInternal(t, func(cfg *Config) { cfg.ArchiveAfter = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	resp, err := http.Post(srv.URL()+"/api/v1/jobs", "application/json", strings.NewReader(`{"kind":"noop","partitions":3}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %v %v", resp, err)
	}
	var sub struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&sub)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for {
		// Taken before the read: a change between the two would be
		// missed (a job that finished then waited for a change that
		// never came, make test on 2026-12-07).
		changed := srv.view.Changed()
		if st, ok := srv.view.State(sub.ID); ok && st.Terminal() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s did not finish", sub.ID)
		case <-changed:
		}
	}

	// The copy is lost behind the server's back, and its record leaves
	// the bucket: the store has the job no more.
	info, err := srv.store.Archive.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("the archive: %+v, %v; want the job's copy alone", info, err)
	}
	jobs := srv.store.Ports.Jobs
	if err := jobs.Archive.Remove(ctx, info.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := jobs.KV.Get(ctx, sub.ID); errors.Is(err, store.ErrNotFound) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the job's record did not leave the bucket")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if j, _, err := jobs.Get(ctx, sub.ID); err == nil {
		t.Fatalf("the job read from the store with its copy lost: %+v; want an error", j)
	}

	if trouble != nil {
		trouble(srv)
		for {
			if j, _, err := jobs.Get(ctx, sub.ID); err == nil && j.State.Terminal() {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("the job was not archived again after the trouble")
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if code, body := get(t, srv.URL()+"/api/v1/jobs/"+sub.ID+"/tasks"); code != http.StatusOK {
		t.Fatalf("the task history: %d %s; want it readable", code, body)
	}
	if info, err := srv.store.Archive.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("the archive once mended: %+v, %v; want one copy of the job", info.State, err)
	}
	if code, body := get(t, srv.URL()+"/metrics"); code != http.StatusOK || !strings.Contains(body, "\nmrcluster_jobs_rearchived_total 1\n") {
		t.Fatalf("metrics: %d; want mrcluster_jobs_rearchived_total 1 in:\n%s", code, body)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
