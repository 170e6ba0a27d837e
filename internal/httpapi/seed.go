package httpapi

import (
	"net/http"
	"strconv"

	"github.com/mrcluster/mrcluster/internal/job"
)

func (s *Server) ping(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"message": "pong"})
}

// seedSubmit is the seed's POST /short/{n} and /long/{n} (and any other
// registered kind): it answers as soon as the job is durably queued.
func (s *Server) seedSubmit(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil {
		s.writeError(w, r, job.Errorf(job.EInvalid, "partitions in the path must be an integer from 1 to %d, got %s", s.cfg.MaxPartitions, job.Quote(r.PathValue("n"))))
		return
	}
	j, err := s.submit(r, job.Spec{Kind: r.PathValue("kind"), Partitions: n})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "Submitted", "job": j.ID})
}

// seedStatus answers GET /status with the workers, or streams them when
// the request is a websocket upgrade, as the seed's client expects.
func (s *Server) seedStatus(w http.ResponseWriter, r *http.Request) {
	if isUpgrade(r) {
		s.snapshots(w, r, func() any { return s.cfg.View.SeedWorkers() })
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"workers": s.cfg.View.SeedWorkers()})
}

func (s *Server) seedWorkers(w http.ResponseWriter, r *http.Request) {
	s.snapshotsOrJSON(w, r, func() any { return s.cfg.View.SeedWorkers() })
}

func (s *Server) seedQueue(w http.ResponseWriter, r *http.Request) {
	s.snapshotsOrJSON(w, r, func() any { return s.cfg.View.SeedQueue() })
}

func (s *Server) seedResults(w http.ResponseWriter, r *http.Request) {
	s.snapshotsOrJSON(w, r, func() any { return s.cfg.View.SeedResults() })
}

// snapshotsOrJSON streams snapshots to a websocket, or answers a plain GET
// with one.
func (s *Server) snapshotsOrJSON(w http.ResponseWriter, r *http.Request, snapshot func() any) {
	if isUpgrade(r) {
		s.snapshots(w, r, snapshot)
		return
	}
	writeJSON(w, http.StatusOK, snapshot())
}
