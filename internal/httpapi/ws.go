package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
)

// Websocket pacing: at most one snapshot per MinInterval, and one at least
// every KeepAlive even when nothing changed; the events' stats at most
// every StatsInterval, when they changed.
const (
	MinInterval   = 100 * time.Millisecond
	KeepAlive     = 5 * time.Second
	StatsInterval = time.Second
	writeTimeout  = 10 * time.Second
)

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// accept upgrades the request; the origin was checked by ServeHTTP. The
// returned context ends when the client goes away or the server closes.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, context.Context, context.CancelFunc, bool) {
	ip := s.clientIP(r)
	if max := s.cfg.MaxWebsockets; max > 0 && s.clients.Add(1) > int64(max) {
		// Each costs about 110 KB and a snapshot or an event at every
		// change: 5,000 held by one client took 580 MB.
		s.clients.Add(-1)
		s.writeError(w, r, job.Errorf(job.EBusy, "the server has %d websockets open, the most --%s allows: close some (each dashboard tab holds one) or raise it", max, flags.MaxWebsockets))
		return nil, nil, nil, false
	} else if max <= 0 {
		s.clients.Add(1)
	} else if per := perClientWebsockets(max); !s.sockIPs.add(ip, per) {
		// One client holding the server's every websocket kept every
		// other dashboard out.
		s.clients.Add(-1)
		s.writeError(w, r, job.Errorf(job.EBusy, "this client (%s) has %d websockets open, the most one client may hold (a tenth of --%s, at least 10): close some (each dashboard tab holds one)", ip, per, flags.MaxWebsockets))
		return nil, nil, nil, false
	}
	gone := func() {
		s.clients.Add(-1)
		if s.cfg.MaxWebsockets > 0 {
			s.sockIPs.done(ip)
		}
	}
	opts := &websocket.AcceptOptions{InsecureSkipVerify: true}
	if s.cfg.AuthToken != "" {
		// A browser that sent its token as a subprotocol wants it back.
		opts.Subprotocols = []string{"bearer." + s.cfg.AuthToken}
	}
	c, err := websocket.Accept(w, r, opts)
	if err != nil {
		gone()
		s.log.Debug("websocket upgrade failed", "path", r.URL.Path, "err", err)
		return nil, nil, nil, false
	}
	s.sockets.Add(1)
	ctx, cancel := context.WithCancel(c.CloseRead(context.WithoutCancel(r.Context())))
	stop := context.AfterFunc(s.closing, cancel)
	return c, ctx, func() {
		stop()
		cancel()
		gone()
		s.sockets.Done()
	}, true
}

// perClientWebsockets is how many of the server's most websockets one
// client (an IP address) may hold: a tenth, at least 10 (all, when fewer).
func perClientWebsockets(most int) int { return max(most/10, min(most, 10)) }

// clientCounts counts what each client holds; the zero value is ready.
type clientCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// add counts one more for client ip, unless it holds limit already.
func (c *clientCounts) add(ip string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip] >= limit {
		return false
	}
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[ip]++
	return true
}

// done counts one less for client ip.
func (c *clientCounts) done(ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}

// snapshots sends snapshot() at connect, then again whenever the view
// changes, coalesced to at most one per MinInterval, and at least every
// KeepAlive.
func (s *Server) snapshots(w http.ResponseWriter, r *http.Request, snapshot func() any) {
	c, ctx, done, ok := s.accept(w, r)
	if !ok {
		return
	}
	defer done()
	defer c.CloseNow()
	keep := time.NewTimer(KeepAlive)
	defer keep.Stop()
	var last []byte
	force := true
	for {
		changed := s.cfg.View.Changed()
		data, err := json.Marshal(snapshot())
		if err != nil {
			s.log.Error("encode websocket snapshot", "path", r.URL.Path, "err", err)
			return
		}
		if force || !bytes.Equal(data, last) {
			if err := write(ctx, c, data); err != nil {
				return
			}
			last, force = data, false
			keep.Reset(KeepAlive)
			if !pause(ctx, MinInterval) {
				return
			}
		}
		select {
		case <-ctx.Done():
			c.Close(websocket.StatusGoingAway, "server stopping")
			return
		case <-changed:
		case <-keep.C:
			force = true
		}
	}
}

// events streams typed events. A client too slow to keep up is told to
// reload ("resync") instead of holding up the others.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		s.writeError(w, r, errUpgradeRequired(r))
		return
	}
	c, ctx, done, ok := s.accept(w, r)
	if !ok {
		return
	}
	defer done()
	defer c.CloseNow()
	sub := s.cfg.Hub.Subscribe(1024)
	defer s.cfg.Hub.Unsubscribe(sub)
	last, lastAt := s.stats(), time.Now()
	if writeEvent(ctx, c, event.Event{Type: "hello", Data: last}) != nil {
		return
	}
	// The stats go again once a second when they changed (a page holds
	// only the newest jobs, and shows the cluster's counts from here), and
	// every KeepAlive in any case.
	tick := time.NewTicker(StatsInterval)
	defer tick.Stop()
	for {
		var ev event.Event
		select {
		case <-ctx.Done():
			c.Close(websocket.StatusGoingAway, "server stopping")
			return
		case ev = <-sub.C:
		case <-tick.C:
			st := s.stats()
			if st == last && time.Since(lastAt) < KeepAlive {
				continue
			}
			last, lastAt = st, time.Now()
			ev = event.Event{Type: "cluster.stats", Data: st}
		}
		if sub.Lagged() {
			if writeEvent(ctx, c, event.Event{Type: "resync"}) != nil {
				return
			}
		}
		if writeEvent(ctx, c, ev) != nil {
			return
		}
	}
}

// Stats is the data of the hello and cluster.stats events: the whole
// cluster's, where a page holds only its newest jobs.
type Stats struct {
	WorkersBusy  int              `json:"workers_busy"`
	WorkersTotal int              `json:"workers_total"`
	QueueDepth   int              `json:"queue_depth"`
	JobsRunning  int              `json:"jobs_running"`
	JobsQueued   int              `json:"jobs_queued"`
	Jobs         client.JobCounts `json:"jobs"`
}

func (s *Server) stats() Stats {
	var st Stats
	for _, w := range s.cfg.View.Workers() {
		st.WorkersTotal++
		if w.Busy {
			st.WorkersBusy++
		}
	}
	st.QueueDepth = s.cfg.View.QueueDepth()
	st.Jobs = s.jobCounts()
	st.JobsRunning, st.JobsQueued = st.Jobs.Running, st.Jobs.Queued
	return st
}

// jobCounts counts the cluster's jobs by state, from the view's counters.
func (s *Server) jobCounts() client.JobCounts {
	counts := s.cfg.View.Counts()
	c := client.JobCounts{
		Scheduled: counts[job.Scheduled], Queued: counts[job.Queued], Running: counts[job.Running],
		Succeeded: counts[job.Succeeded], Failed: counts[job.Failed], Canceled: counts[job.Canceled],
	}
	for _, n := range counts {
		c.Total += n
	}
	return c
}

func writeEvent(ctx context.Context, c *websocket.Conn, ev event.Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return write(ctx, c, data)
}

func write(ctx context.Context, c *websocket.Conn, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, data)
}

func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
