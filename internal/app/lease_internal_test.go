package app

import (
	"context"
	"testing"
	"time"
)

// The reconcile lease is one server's at a time: another takes it only
// once it expired or was given back, and a holder whose lease was taken
// over after it expired does not give back the new holder's.
func TestLeaseIsOneServers(t *testing.T) {
	srv := startInternal(t, func(cfg *Config) { cfg.Workers = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv := srv.store.Ports.Health
	now := time.Now()

	releaseA, ok := takeLease(ctx, kv, "lease.test", "a", now)
	if !ok {
		t.Fatal("a could not take a free lease")
	}
	if _, ok := takeLease(ctx, kv, "lease.test", "b", now.Add(leaseFor-time.Second)); ok {
		t.Fatal("b took the lease a holds")
	}
	releaseA()
	releaseB, ok := takeLease(ctx, kv, "lease.test", "b", now)
	if !ok {
		t.Fatal("b could not take the lease a gave back")
	}
	// b dies holding it: c takes it once it expired.
	releaseC, ok := takeLease(ctx, kv, "lease.test", "c", now.Add(leaseFor+time.Second))
	if !ok {
		t.Fatal("c could not take the lease b let expire")
	}
	releaseB() // late: c's lease stays
	if _, ok := takeLease(ctx, kv, "lease.test", "d", now.Add(leaseFor+2*time.Second)); ok {
		t.Fatal("d took the lease c holds, after b gave back the one it had lost")
	}
	releaseC()
	if _, ok := takeLease(ctx, kv, "lease.test", "d", now.Add(leaseFor+2*time.Second)); !ok {
		t.Fatal("d could not take the lease c gave back")
	}
}
