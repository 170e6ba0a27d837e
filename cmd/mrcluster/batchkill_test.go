package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
)

// Kill the server with SIGKILL while clients submit batches, each under an
// Idempotency-Key, and start it again: each client's retry of its batch is
// answered that batch's jobs, and the store holds those jobs and no other
// (a batch the killed server had stored in part is completed, not left
// beside a new one), and every one of them runs, once.
func TestSIGKILLDuringBatchSubmitsKeepsEachBatchWhole(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--submit-rate", "0"}
	p := start(t, dir, nil, args...)
	specs := make([]client.Spec, 200)
	for i := range specs {
		specs[i] = client.Spec{Kind: "noop", Partitions: 1}
	}
	var mu sync.Mutex
	var keys []string
	answered := map[string][]string{}
	first := make(chan struct{}, 1)
	var clients sync.WaitGroup
	for c := range 4 {
		clients.Go(func() {
			api := client.New(p.url, "")
			api.SubmitRetries = -1
			for n := 0; ; n++ {
				key := fmt.Sprintf("batch-%d-%d", c, n)
				mu.Lock()
				keys = append(keys, key)
				mu.Unlock()
				jobs, err := api.SubmitBatchWithKey(context.Background(), specs, key)
				if err != nil {
					return // the server was killed: this batch is sent again below
				}
				mu.Lock()
				for _, j := range jobs {
					answered[key] = append(answered[key], j.ID)
				}
				mu.Unlock()
				select {
				case first <- struct{}{}:
				default:
				}
			}
		})
	}
	apitest.Recv(t, first, "a first batch to be answered")
	time.Sleep(300 * time.Millisecond)
	p.kill(t)
	clients.Wait()

	p2 := start(t, dir, nil, args...)
	api := client.New(p2.url, "")
	api.SubmitRetries = -1
	ctx := apitest.Context(t)
	want := map[string]bool{}
	unanswered := 0
	var resent []string // the jobs answered after the restart
	for _, key := range keys {
		if answered[key] == nil {
			unanswered++
			for {
				jobs, err := api.SubmitBatchWithKey(ctx, specs, key)
				if err == nil {
					for _, j := range jobs {
						answered[key] = append(answered[key], j.ID)
						resent = append(resent, j.ID)
					}
					break
				}
				if !strings.Contains(err.Error(), "503") {
					t.Fatalf("the retry of batch %s after the restart: %v", key, err)
				}
				select {
				case <-ctx.Done():
					t.Fatalf("batch %s is still not answered: %v", key, err)
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
		if len(answered[key]) != len(specs) {
			t.Fatalf("batch %s was answered %d jobs; want %d", key, len(answered[key]), len(specs))
		}
		for _, id := range answered[key] {
			want[id] = true
		}
	}
	if len(want) != len(keys)*len(specs) {
		t.Fatalf("%d distinct jobs answered for %d batches of %d", len(want), len(keys), len(specs))
	}
	// Every job stored is one that was answered, and each one succeeds.
	for {
		stored, succeeded := 0, 0
		cursor := ""
		for {
			l, err := api.Jobs(ctx, client.ListOptions{Limit: 500, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range l.Jobs {
				if !want[j.ID] {
					t.Fatalf("job %s is stored, and no client was answered it (%d batches sent again after the restart)", j.ID, unanswered)
				}
				stored++
				if j.State == client.Succeeded {
					succeeded++
				}
			}
			if cursor = l.NextCursor; cursor == "" {
				break
			}
		}
		if stored != len(want) {
			t.Fatalf("%d jobs stored; want the %d answered", stored, len(want))
		}
		if succeeded == stored {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d jobs succeeded", succeeded, stored)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A completed batch's tasks were queued by the killed server: none of
	// them runs twice, but for a task whose delivery the killed server
	// forgot (checkRanOnce).
	killed := p.pool(t)
	for _, id := range resent {
		checkRanOnce(t, p2.url, id, redelivered{killed: []string{killed}})
	}
	t.Logf("%d batches, %d of them sent again after the restart, %d of those stored in part by the killed server and completed by the retry",
		len(keys), unanswered, strings.Count(p2.out.String(), "a retry stored the jobs"))
}
