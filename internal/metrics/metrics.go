// Package metrics holds mrcluster's Prometheus metrics. Every metric of ours
// is named mrcluster_…; a nil *Metrics records nothing, so code that counts
// does not care whether anyone scrapes.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one process's set of metrics and their registry.
type Metrics struct {
	reg           *prometheus.Registry
	jobsSubmitted *prometheus.CounterVec
	jobStates     *prometheus.CounterVec
	tasks         *prometheus.CounterVec
	taskDuration  *prometheus.HistogramVec
	workerTasks   *prometheus.CounterVec
	workerTime    *prometheus.HistogramVec
	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
}

// New returns metrics registered in a registry of their own, with the Go
// runtime's and the process's.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		jobsSubmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrcluster_jobs_submitted_total", Help: "Jobs accepted by this server, by kind.",
		}, []string{"kind"}),
		jobStates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrcluster_job_transitions_total", Help: "Jobs this server moved to a state (running, succeeded, failed, canceled), by kind.",
		}, []string{"kind", "state"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrcluster_tasks_finished_total", Help: "Task results this server applied, by kind, phase and outcome (done or failed).",
		}, []string{"kind", "phase", "outcome"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mrcluster_task_duration_seconds",
			Help:    "Run time of tasks, from the worker's start to its result, by kind and phase.",
			Buckets: []float64{.0001, .001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind", "phase"}),
		workerTasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrcluster_worker_tasks_total", Help: "Tasks this process's workers ran, by kind and outcome (done or failed).",
		}, []string{"kind", "outcome"}),
		workerTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mrcluster_worker_task_seconds",
			Help:    "Time this process's workers spent in map functions, by kind.",
			Buckets: []float64{.0001, .001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrcluster_http_requests_total", Help: "HTTP requests, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mrcluster_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests (websockets excluded), by route and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	reg.MustRegister(m.jobsSubmitted, m.jobStates, m.tasks, m.taskDuration, m.workerTasks, m.workerTime, m.httpRequests, m.httpDuration)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Register adds collectors, such as gauges read at scrape time.
func (m *Metrics) Register(cs ...prometheus.Collector) {
	if m != nil {
		m.reg.MustRegister(cs...)
	}
}

// JobSubmitted counts a job this server accepted.
func (m *Metrics) JobSubmitted(kind string) {
	if m != nil {
		m.jobsSubmitted.WithLabelValues(kind).Inc()
	}
}

// JobState counts a job this server moved to state.
func (m *Metrics) JobState(kind, state string) {
	if m != nil {
		m.jobStates.WithLabelValues(kind, state).Inc()
	}
}

// TaskFinished counts an applied task result and observes its run time.
func (m *Metrics) TaskFinished(kind, phase string, d time.Duration, failed bool) {
	if m == nil {
		return
	}
	outcome := "done"
	if failed {
		outcome = "failed"
	}
	m.tasks.WithLabelValues(kind, phase, outcome).Inc()
	m.taskDuration.WithLabelValues(kind, phase).Observe(d.Seconds())
}

// WorkerTask counts a task a worker of this process ran.
func (m *Metrics) WorkerTask(kind string, d time.Duration, failed bool) {
	if m == nil {
		return
	}
	outcome := "done"
	if failed {
		outcome = "failed"
	}
	m.workerTasks.WithLabelValues(kind, outcome).Inc()
	m.workerTime.WithLabelValues(kind).Observe(d.Seconds())
}

// HTTPRequest counts a request; held ones (websocket upgrades, which last
// as long as the connection, and GETs that wait for a job's end) are
// counted but not timed: their time is the client's choice, not the
// server's latency.
func (m *Metrics) HTTPRequest(route, method string, code int, d time.Duration, held bool) {
	if m == nil {
		return
	}
	if route == "" {
		route = "unmatched"
	}
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	if !held {
		m.httpDuration.WithLabelValues(route, method).Observe(d.Seconds())
	}
}

// GaugeFunc returns a gauge whose value is read from fn at each scrape.
func GaugeFunc(name, help string, labels prometheus.Labels, fn func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, fn)
}
