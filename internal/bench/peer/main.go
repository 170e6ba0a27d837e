// Command peer measures Asynq on Redis the way make bench measures
// mrcluster's small jobs: clients concurrent clients each enqueue one
// no-op task at a time, a server with as many workers as mrcluster's
// default runs them, and the rate is tasks from the first enqueue until
// the last one ran. It is a module of its own so that mrcluster's own
// module does not depend on Asynq or Redis. make bench runs it when
// redis-server is on the PATH:
//
//	go run . -redis 127.0.0.1:6379 -tasks 20000 -clients 16 -workers 4
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

func main() {
	addr := flag.String("redis", "127.0.0.1:6379", "address of the Redis server")
	tasks := flag.Int("tasks", 20000, "tasks to enqueue")
	clients := flag.Int("clients", 16, "concurrent clients, each enqueuing one task at a time")
	workers := flag.Int("workers", 4, "the server's concurrency")
	flag.Parse()
	rate, err := run(*addr, *tasks, *clients, *workers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		os.Exit(1)
	}
	fmt.Printf("%.0f\n", rate)
}

func run(addr string, n, clients, workers int) (float64, error) {
	redis := asynq.RedisClientOpt{Addr: addr}
	var done atomic.Int64
	all := make(chan struct{})
	per := n / clients
	total := int64(per * clients)
	srv := asynq.NewServer(redis, asynq.Config{
		Concurrency: workers,
		Logger:      quiet{},
		// As mrcluster's workers, take the next task at once.
		TaskCheckInterval: 10 * time.Millisecond,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
		if done.Add(1) == total {
			close(all)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return 0, err
	}
	defer srv.Shutdown()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			c := asynq.NewClient(redis)
			defer c.Close()
			for range per {
				if _, err := c.Enqueue(asynq.NewTask("noop", nil), asynq.MaxRetry(2)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("%d of %d tasks ran in 5 minutes", done.Load(), total)
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// quiet drops Asynq's logs but its errors.
type quiet struct{}

func (quiet) Debug(...any) {}
func (quiet) Info(...any)  {}
func (quiet) Warn(...any)  {}
func (quiet) Error(args ...any) {
	log.Print(args...)
}
func (quiet) Fatal(args ...any) { log.Fatal(args...) }
