// Package abuse throws bounded amounts of bad traffic at a real server:
// malformed requests, slow clients, oversized bodies, websocket floods and
// wrong tokens. It runs alone in its test binary so that goleak sees only
// this server's goroutines.
package abuse

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

const token = "abuse-test-token"

func TestAbuse(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := app.DefaultConfig()
	cfg.Addr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Kinds = kinds.Builtin(0.001)
	cfg.AuthToken = token
	cfg.ShutdownTimeout = 10 * time.Second
	srv, err := app.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		http.DefaultClient.CloseIdleConnections()
	}()
	base := srv.URL()
	c := apitest.Client{URL: base}
	hc := &http.Client{Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()

	var mu sync.Mutex
	statuses := map[int]int{}
	send := func(method, path string, body []byte, auth string) {
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			return // a path the client itself refuses to send
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			return
		}
		resp.Body.Close()
		mu.Lock()
		statuses[resp.StatusCode]++
		mu.Unlock()
	}

	// Slow clients: connections that never finish their headers.
	var slow []net.Conn
	for range 50 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /short/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
		slow = append(slow, conn)
	}
	// Websocket floods: many clients that connect and vanish.
	for i := range 100 {
		path := []string{"/queue", "/status", "/results", "/workerStatus", "/api/v1/events"}[i%5]
		ws, _, err := websocket.Dial(apitest.Context(t), "ws"+strings.TrimPrefix(base, "http")+path, nil)
		if err != nil {
			t.Fatalf("websocket %s: %v", path, err)
		}
		ws.CloseNow()
	}

	// Meanwhile, real jobs.
	var jobs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			body := `{"kind":"short","partitions":4}`
			req, _ := http.NewRequest("POST", base+"/api/v1/jobs", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				continue
			}
			var j struct{ ID string }
			_ = jsonDecode(resp, &j)
			if resp.StatusCode == http.StatusAccepted {
				mu.Lock()
				jobs = append(jobs, j.ID)
				mu.Unlock()
			}
		}
	}()

	// Thousands of malformed requests and wrong tokens, from 8 clients.
	rng := rand.New(rand.NewPCG(1, 2))
	type req struct {
		method, path string
		body         []byte
		auth         string
	}
	var reqs []req
	paths := []string{"/short/", "/long/", "/api/v1/jobs", "/api/v1/jobs/", "/api/v1/jobs/x/cancel", "/queue", "/status", "/%zz", "/api/v1/jobs?limit=", "/api/v1/jobs?state=", "/" + strings.Repeat("a", 5000)}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH"}
	for range 3000 {
		r := req{method: methods[rng.IntN(len(methods))], path: paths[rng.IntN(len(paths))]}
		junk := make([]byte, rng.IntN(64))
		for i := range junk {
			junk[i] = byte(rng.IntN(256))
		}
		switch rng.IntN(4) {
		case 0:
			r.path += string(junk)
		case 1:
			r.body = junk
		case 2:
			r.body = []byte(`{"kind":"short","partitions":` + fmt.Sprint(rng.Int64()) + `}`)
		}
		switch rng.IntN(3) {
		case 0:
			r.auth = "Bearer wrong"
		case 1:
			r.auth = "Bearer " + token
		}
		reqs = append(reqs, r)
	}
	for range 20 {
		huge := append(append([]byte(`{"kind":"`), bytes.Repeat([]byte("x"), 5<<20)...), `"}`...)
		reqs = append(reqs, req{method: "POST", path: "/api/v1/jobs", body: huge, auth: "Bearer " + token})
	}
	work := make(chan req)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for r := range work {
				send(r.method, r.path, r.body, r.auth)
			}
		})
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	<-done
	for _, conn := range slow {
		conn.Close()
	}

	for code, n := range statuses {
		if code >= 500 {
			t.Errorf("%d answers with status %d", n, code)
		}
	}
	if statuses[401] == 0 || statuses[400] == 0 || statuses[413] == 0 || statuses[404] == 0 || statuses[405] == 0 {
		t.Errorf("statuses seen: %v; want 400, 401, 404, 405 and 413 among them", statuses)
	}
	if len(jobs) != 10 {
		t.Fatalf("%d of 10 jobs accepted during the abuse", len(jobs))
	}
	for _, id := range jobs {
		j := c.Await(t, id, func(j client.Job) bool { return j.State.Terminal() })
		if j.State != client.Succeeded || j.Result.Sum != 4 {
			t.Fatalf("a job accepted during the abuse: %s", apitest.Describe(j))
		}
	}
	t.Logf("statuses: %v", statuses)
}
