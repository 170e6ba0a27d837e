package app

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/metrics"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// registerGauges adds the metrics read from the cluster's state at scrape
// time: the queue, the workers, tasks and jobs by state, websocket clients,
// uploads, the store's room (room, storeRoom's) and the size of every
// JetStream stream.
func (s *Server) registerGauges(m *metrics.Metrics, room func() (int64, error)) {
	v := s.view
	m.Register(
		metrics.GaugeFunc("mrcluster_queue_depth", "Tasks waiting for a worker.", nil, func() float64 {
			return float64(v.QueueDepth())
		}),
		metrics.GaugeFunc("mrcluster_tasks", "Tasks of unfinished jobs, by state.", prometheus.Labels{"state": "queued"}, func() float64 {
			q, _ := v.TaskTotals()
			return float64(q)
		}),
		metrics.GaugeFunc("mrcluster_tasks", "Tasks of unfinished jobs, by state.", prometheus.Labels{"state": "running"}, func() float64 {
			_, r := v.TaskTotals()
			return float64(r)
		}),
		metrics.GaugeFunc("mrcluster_workers", "Live workers in the cluster.", nil, func() float64 {
			return float64(len(v.Workers()))
		}),
		metrics.GaugeFunc("mrcluster_workers_busy", "Live workers running a task.", nil, func() float64 {
			busy := 0
			for _, w := range v.Workers() {
				if w.Busy {
					busy++
				}
			}
			return float64(busy)
		}),
		metrics.GaugeFunc("mrcluster_websocket_clients", "Open websockets on this server.", nil, func() float64 {
			return float64(s.api.WebsocketClients())
		}),
		metrics.GaugeFunc("mrcluster_uploads", "Uploads of dataset files on this server: taken in (reading), or waiting unread while their client has 4 taken in (waiting).", prometheus.Labels{"state": "reading"}, func() float64 {
			r, _ := s.api.Uploads()
			return float64(r)
		}),
		metrics.GaugeFunc("mrcluster_uploads", "Uploads of dataset files on this server: taken in (reading), or waiting unread while their client has 4 taken in (waiting).", prometheus.Labels{"state": "waiting"}, func() float64 {
			_, w := s.api.Uploads()
			return float64(w)
		}),
		metrics.GaugeFunc("mrcluster_store_room_bytes", "Bytes the store can still take: the least of what its limit and its disk beyond the reserve leave (in a cluster, on every server); an output or upload larger than this is refused.", nil, func() float64 {
			r, err := room()
			if err != nil {
				return math.NaN()
			}
			return float64(max(r, 0))
		}),
	)
	for _, st := range job.States {
		m.Register(metrics.GaugeFunc("mrcluster_jobs", "Jobs in the cluster's history, by state.", prometheus.Labels{"state": string(st)}, func() float64 {
			return float64(v.Counts()[st])
		}))
	}
	m.Register(&streamCollector{store: s.store})
	m.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mrcluster_jobs_rearchived_total",
		Help: "Finished jobs whose archived record the store had lost after a spell of trouble, archived again by this server from its read model.",
	}, func() float64 { return float64(s.rearchived.Load()) }))
}

// streamCollector reports the messages and bytes of each stream at scrape.
type streamCollector struct {
	store *natsx.Store
}

var (
	streamMsgs  = prometheus.NewDesc("mrcluster_jetstream_stream_messages", "Messages stored in a JetStream stream.", []string{"stream"}, nil)
	streamBytes = prometheus.NewDesc("mrcluster_jetstream_stream_bytes", "Bytes stored in a JetStream stream.", []string{"stream"}, nil)
)

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamMsgs
	ch <- streamBytes
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for name, st := range c.store.MetricStates(ctx) {
		ch <- prometheus.MustNewConstMetric(streamMsgs, prometheus.GaugeValue, float64(st.Msgs), name)
		ch <- prometheus.MustNewConstMetric(streamBytes, prometheus.GaugeValue, float64(st.Bytes), name)
	}
}
