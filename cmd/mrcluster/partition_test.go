package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/job"
)

// Partitions: three servers, each in a network namespace of its own on one
// bridge, while clients submit jobs. Each server is cut off from the other
// two in turn, then the cuts flap every few seconds, then one server can
// send but not receive. After the last heal every acknowledged job ends
// correctly within two minutes, no worker stays busy, and no submit waited
// past its deadline. Needs root, ip and iptables (CI has them); skipped
// with a message elsewhere.

// netns is the test's own network: a bridge and one namespace a server.
type netns struct {
	t      *testing.T
	prefix string
	subnet string // "10.213.N"
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
	}
}

func newNetns(t *testing.T, n int) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition test: needs root for network namespaces (CI runs as root)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("partition test: %s is not installed (.ci/run installs iproute2 and iptables)", tool)
		}
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	nw := &netns{t: t, prefix: "mrp" + hex.EncodeToString(b[:]), subnet: fmt.Sprintf("10.213.%d", 1+mrand.IntN(250))}
	if out, err := exec.Command("ip", "link", "add", nw.prefix+"b", "type", "bridge").CombinedOutput(); err != nil {
		t.Skipf("partition test: cannot make a bridge here (%v %s)", err, out)
	}
	t.Cleanup(func() {
		for i := range n {
			_ = exec.Command("ip", "netns", "del", nw.ns(i)).Run()
		}
		_ = exec.Command("ip", "link", "del", nw.prefix+"b").Run()
	})
	run(t, "ip", "addr", "add", nw.subnet+".254/24", "dev", nw.prefix+"b")
	run(t, "ip", "link", "set", nw.prefix+"b", "up")
	for i := range n {
		ns, host, peer := nw.ns(i), fmt.Sprintf("%sh%d", nw.prefix, i), fmt.Sprintf("%sp%d", nw.prefix, i)
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		run(t, "ip", "link", "set", peer, "netns", ns)
		run(t, "ip", "link", "set", host, "master", nw.prefix+"b")
		run(t, "ip", "link", "set", host, "up")
		run(t, "ip", "netns", "exec", ns, "ip", "addr", "add", nw.ip(i)+"/24", "dev", peer)
		run(t, "ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	}
	return nw
}

func (nw *netns) ns(i int) string { return fmt.Sprintf("%sn%d", nw.prefix, i) }
func (nw *netns) ip(i int) string { return fmt.Sprintf("%s.%d", nw.subnet, i+1) }

// cut drops what server i receives from (and, unless onlyIn, sends to) the
// other servers; the clients on the bridge still reach it.
func (nw *netns) cut(i int, others []int, onlyIn bool) {
	for _, j := range others {
		run(nw.t, "ip", "netns", "exec", nw.ns(i), "iptables", "-A", "INPUT", "-s", nw.ip(j), "-j", "DROP")
		if !onlyIn {
			run(nw.t, "ip", "netns", "exec", nw.ns(i), "iptables", "-A", "OUTPUT", "-d", nw.ip(j), "-j", "DROP")
		}
	}
}

func (nw *netns) heal(n int) {
	for i := range n {
		run(nw.t, "ip", "netns", "exec", nw.ns(i), "iptables", "-F")
	}
}

// spawnIn starts the binary in network namespace ns; ready waits for it.
func spawnIn(t *testing.T, ns string, args ...string) (*proc, <-chan []string) {
	t.Helper()
	return spawnWith(t, []string{"ip", "netns", "exec", ns}, servingLine, nil, args...)
}

func TestPartitions(t *testing.T) {
	t.Parallel()
	nw := newNetns(t, 3)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://%s:6222", nw.ip(i)))
	}
	urls := make([]string, 3)
	procs := make([]*proc, 3)
	waits := make([]<-chan []string, 3)
	for i := range 3 {
		urls[i] = fmt.Sprintf("http://%s:8080", nw.ip(i))
		procs[i], waits[i] = spawnIn(t, nw.ns(i), "serve", "--addr", nw.ip(i)+":8080", "--insecure", "--nats-listen", nw.ip(i)+":4222",
			"--nats-token", "partition-test", "--data-dir", t.TempDir(),
			"--cluster-name", "parts", "--cluster-listen", nw.ip(i)+":6222", "--routes", strings.Join(routes, ","),
			"--server-name", fmt.Sprintf("n%d", i), "--workers", "2", "--ack-wait", "2s", "--sleep-scale", "0.01",
			"--retry-backoff", "100ms", "--submit-rate", "0")
	}
	for i, p := range procs {
		p.ready(t, waits[i])
	}

	var mu sync.Mutex
	var jobs []acked
	var slowest time.Duration
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for c := range 3 {
		clients.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				spec := map[string]any{"kind": "short", "partitions": 1 + mrand.IntN(6)}
				var b [8]byte
				_, _ = rand.Read(b[:])
				key := hex.EncodeToString(b[:])
				for try := range 30 {
					var j client.Job
					start := time.Now()
					status, err := chaosDo("POST", urls[(c+n+try)%3]+"/api/v1/jobs", key, spec, &j)
					took := time.Since(start)
					mu.Lock()
					slowest = max(slowest, took)
					mu.Unlock()
					if err == nil {
						mu.Lock()
						jobs = append(jobs, acked{id: j.ID, kind: j.Kind, partitions: j.Partitions})
						mu.Unlock()
						break
					}
					if status == http.StatusBadRequest {
						t.Errorf("a valid spec refused: %v", err)
						return
					}
					time.Sleep(300 * time.Millisecond)
				}
			}
		})
	}
	others := func(i int) []int {
		var o []int
		for j := range 3 {
			if j != i {
				o = append(o, j)
			}
		}
		return o
	}
	// Each server cut off in turn.
	for i := range 3 {
		time.Sleep(3 * time.Second)
		nw.cut(i, others(i), false)
		time.Sleep(8 * time.Second)
		nw.heal(3)
	}
	// Flapping cuts.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		i := mrand.IntN(3)
		nw.cut(i, others(i), false)
		time.Sleep(time.Duration(2000+mrand.IntN(3000)) * time.Millisecond)
		nw.heal(3)
		time.Sleep(time.Duration(1000+mrand.IntN(2000)) * time.Millisecond)
	}
	// A server that can send but not receive.
	nw.cut(0, others(0), true)
	time.Sleep(15 * time.Second)
	nw.heal(3)
	healed := time.Now()
	time.Sleep(2 * time.Second)
	close(stop)
	clients.Wait()
	mu.Lock()
	t.Logf("%d jobs acknowledged; the slowest submit answer took %s", len(jobs), slowest)
	// The server answers a submit within 4 s (plus up to 2 s waiting for
	// its read model); the margin is for a loaded machine, not for a hang,
	// which the client's 10 s timeout would show.
	if slowest > 9*time.Second {
		t.Errorf("a submit waited %s, past the server's deadline (4 s, and 2 s for the read model)", slowest)
	}
	mu.Unlock()

	for _, a := range jobs {
		var j client.Job
		for {
			_, err := chaosDo("GET", urls[1]+"/api/v1/jobs/"+a.id, "", nil, &j)
			if err == nil && j.State.Terminal() {
				break
			}
			if time.Since(healed) > 2*time.Minute {
				for _, u := range urls {
					var o client.Job
					var h struct{ Tasks []job.TaskResult }
					_, jerr := chaosDo("GET", u+"/api/v1/jobs/"+a.id, "", nil, &o)
					_, terr := chaosDo("GET", u+"/api/v1/jobs/"+a.id+"/tasks", "", nil, &h)
					t.Logf("server %s: job %s %s %+v (%v); its task history (%v): %+v", u, a.id, o.State, o.Tasks, jerr, terr, h.Tasks)
				}
				t.Fatalf("acknowledged job %s is %s two minutes after the last heal (%v): %+v", a.id, j.State, err, j.Tasks)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if j.State != client.Succeeded || j.Result == nil || j.Result.Sum != int64(a.partitions) {
			t.Fatalf("acknowledged job %s: %s, result %+v, error %q", a.id, j.State, j.Result, j.Error)
		}
		checkRanOnce(t, urls[1], a.id, redelivered{clustered: true, others: []string{urls[0], urls[2]}})
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var w struct{ Workers []job.WorkerStatus }
		_, err := chaosDo("GET", urls[1]+"/api/v1/workers", "", nil, &w)
		busy := 0
		for _, s := range w.Workers {
			if s.Busy {
				busy++
			}
		}
		if err == nil && busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after every job ended, %d workers are still busy (%v): %+v", busy, err, w.Workers)
		}
	}
}
