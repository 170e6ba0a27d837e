package httpapi

import (
	"net/http"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/schedule"
)

const scheduleExample = `{"name":"nightly","cron":"0 3 * * *","timezone":"Europe/Paris","missed":"skip","job":{"kind":"wordcount","partitions":8,"input":["books"]}}`

func (s *Server) addSchedule(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name     string         `json:"name"`
		Cron     string         `json:"cron"`
		Timezone string         `json:"timezone"`
		Missed   string         `json:"missed"`
		Overlap  string         `json:"overlap"`
		Job      *submitRequest `json:"job"`
	}
	if err := s.decode(w, r, &req, scheduleExample); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Cron == "" {
		s.writeError(w, r, job.Errorf(job.EInvalid, "cron is required, such as \"*/5 * * * *\"; for example %s", scheduleExample))
		return
	}
	if req.Job == nil {
		s.writeError(w, r, job.Errorf(job.EInvalid, "job is required: the spec of the job each tick submits, as in POST /api/v1/jobs; for example %s", scheduleExample))
		return
	}
	spec, err := s.spec(*req.Job)
	if err != nil {
		s.writeError(w, r, job.Errorf(job.EInvalid, "job: %s", job.ErrorMessage(err)))
		return
	}
	sc, err := s.cfg.Service.AddSchedule(r.Context(), schedule.Schedule{Name: req.Name, Cron: req.Cron, Timezone: req.Timezone, Missed: req.Missed, Overlap: req.Overlap}, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("schedule added", "schedule", sc.Name, "cron", sc.Cron, "timezone", sc.Timezone, "kind", sc.Job.Kind)
	w.Header().Set("Location", "/api/v1/schedules/"+sc.Name)
	writeJSON(w, http.StatusCreated, sc)
}

func (s *Server) listSchedules(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"schedules": s.cfg.Service.Schedules()})
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) {
	sc, err := s.cfg.Service.Schedule(r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sc)
}

func (s *Server) pauseSchedule(w http.ResponseWriter, r *http.Request) {
	s.pauseOrResume(w, r, true)
}

func (s *Server) resumeSchedule(w http.ResponseWriter, r *http.Request) {
	s.pauseOrResume(w, r, false)
}

func (s *Server) pauseOrResume(w http.ResponseWriter, r *http.Request, pause bool) {
	sc, err := s.cfg.Service.PauseSchedule(r.Context(), r.PathValue("name"), pause)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("schedule changed", "schedule", sc.Name, "paused", sc.Paused)
	writeJSON(w, http.StatusOK, sc)
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Service.DeleteSchedule(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("schedule deleted", "schedule", name)
	w.WriteHeader(http.StatusNoContent)
}
