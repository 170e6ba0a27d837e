package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/mrcluster/mrcluster/internal/coordinator"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/service"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
	"github.com/mrcluster/mrcluster/internal/view"
	"github.com/mrcluster/mrcluster/internal/worker"
)

// ProcessCPU is the CPU time this process has used so far, user and
// system: what the benchmark divides by the jobs a run made, to say what
// a job costs whatever the machine's other load did to the rate.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// OwnCode is the cost of small jobs in the cluster's own code, with no
// NATS and no HTTP: the read model, the coordinator, a pool of 4 workers
// and the service's submit, as a server runs them, on the memory store
// (package memstore, which the unit tests use). n one-partition noop jobs
// from clients concurrent callers of the service, batch at a time, until
// the read model sees every one finished. It returns jobs per second and
// the process's CPU time per job: what a job costs above the store, which
// a redesign of the store alone cannot take away.
func OwnCode(ctx context.Context, n, clients, batch int) (rate float64, cpu time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st := memstore.New(memstore.Config{})
	log := slog.New(slog.DiscardHandler)
	v := view.New(view.Config{Store: st, Hub: event.NewHub(), Logger: log})
	if err := v.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer func() { _ = v.Stop(context.Background()) }()
	select {
	case <-v.Ready():
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	ds := &dataset.Store{KV: st.Datasets, Blocks: st.Blocks}
	c := coordinator.New(coordinator.Config{Store: st, Datasets: ds, Kinds: kinds.Builtin(0), MaxAttempts: 3, Logger: log,
		Running: v.Running, Unqueued: v.Unqueued})
	if err := c.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer func() { _ = c.Stop(context.Background()) }()
	p := worker.New(worker.Config{Store: st, Datasets: ds, Kinds: kinds.Builtin(0), Concurrency: 4, Name: "bench", Logger: log})
	if err := p.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer func() { _ = p.Stop(context.Background()) }()
	svc := service.New(service.Config{Coordinator: c, View: v, Datasets: ds, Kinds: kinds.Builtin(0), MaxPartitions: 100})

	n = n / (clients * batch) * clients * batch
	cpu0, start := ProcessCPU(), time.Now()
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for sent := 0; sent < n/clients; sent += batch {
				specs := make([]job.Spec, batch)
				for i := range specs {
					specs[i] = job.Spec{Kind: "noop", Partitions: 1}
				}
				var err error
				if batch == 1 {
					_, err = svc.Submit(ctx, specs[0], nil)
				} else {
					_, err = svc.SubmitBatch(ctx, specs, "", nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, fmt.Errorf("submit: %w", err)
	}
	for {
		changed := v.Changed() // before the count, so that no change falls between
		if v.Unfinished() == 0 {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("%d jobs not finished: %w", v.Unfinished(), ctx.Err())
		}
	}
	return float64(n) / time.Since(start).Seconds(), (ProcessCPU() - cpu0) / time.Duration(n), nil
}
