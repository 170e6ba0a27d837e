package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrNoRedis is returned by Asynq when redis-server is not on the PATH:
// make bench installs nothing.
var ErrNoRedis = errors.New("no redis-server on the PATH")

// Asynq measures the peer a user would otherwise pick, Asynq on Redis,
// with the shape of SmallJobs with batch 1: clients concurrent clients,
// each enqueuing one no-op task at a time, run by workers workers. Redis
// runs as Asynq users run it durably: an append-only file, fsynced every
// second. It runs the module in internal/bench/peer, so that mrcluster's
// module does not depend on Asynq; dir is that module's directory.
func Asynq(ctx context.Context, dir string, n, clients, workers int) (float64, error) {
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		return 0, ErrNoRedis
	}
	data, err := os.MkdirTemp("", "mrcluster-redis")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(data)
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	srv := exec.CommandContext(ctx, redis, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start redis-server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("redis-server did not listen on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd := exec.CommandContext(ctx, "go", "run", ".", "-redis", addr, "-tasks", strconv.Itoa(n),
		"-clients", strconv.Itoa(clients), "-workers", strconv.Itoa(workers))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("run the Asynq peer in %s: %w", dir, err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}

// PeerDir is the directory of the peer module, from the repository root
// (where make bench runs).
var PeerDir = filepath.Join("internal", "bench", "peer")

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
