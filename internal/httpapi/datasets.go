package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
)

// Datasets is what the API asks of the dataset store.
type Datasets interface {
	PutFile(ctx context.Context, ds, file string, r io.Reader) (dataset.File, error)
	Get(ctx context.Context, name string) (dataset.Dataset, error)
	List(ctx context.Context) ([]dataset.Dataset, error)
	Delete(ctx context.Context, name string) error
}

func (s *Server) listDatasets(w http.ResponseWriter, r *http.Request) {
	ds, err := s.cfg.Datasets.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"datasets": ds})
}

func (s *Server) getDataset(w http.ResponseWriter, r *http.Request) {
	d, err := s.cfg.Datasets.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// putDataset stores the body as one file of the dataset, named by the
// query parameter file, or after the dataset.
func (s *Server) putDataset(w http.ResponseWriter, r *http.Request) {
	file := r.URL.Query().Get("file")
	if file == "" {
		file = r.PathValue("name")
	}
	s.putFile(w, r, r.PathValue("name"), file)
}

func (s *Server) putDatasetFile(w http.ResponseWriter, r *http.Request) {
	s.putFile(w, r, r.PathValue("name"), r.PathValue("file"))
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request, name, file string) {
	if err := job.ValidName("dataset", name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := job.ValidName("file", file); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.notInUse(name, "replace a file of"); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.writable(); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.MaxFileBytes > 0 && r.ContentLength > s.cfg.MaxFileBytes {
		s.writeError(w, r, job.Errorf(job.ETooLarge, "file %s is %d bytes; this server takes files up to %d bytes (--max-file-mb)", file, r.ContentLength, s.cfg.MaxFileBytes))
		return
	}
	f, err := s.cfg.Datasets.PutFile(r.Context(), name, file, r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("dataset file stored", "dataset", name, "file", file, "bytes", f.Size, "blocks", len(f.Lines))
	d, err := s.cfg.Datasets.Get(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/datasets/"+name)
	writeJSON(w, http.StatusCreated, d)
}

func (s *Server) deleteDataset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := job.ValidName("dataset", name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.notInUse(name, "delete"); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.cfg.Datasets.Delete(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("dataset deleted", "dataset", name)
	w.WriteHeader(http.StatusNoContent)
}

// notInUse refuses to change a dataset that an unfinished job reads.
func (s *Server) notInUse(name, what string) error {
	if id, ok := s.cfg.View.ReadingJob(name); ok {
		return job.Errorf(job.EConflict, "cannot %s dataset %s: job %s reads it and has not finished; wait for it or cancel it", what, name, id)
	}
	return nil
}

func (s *Server) jobOutput(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	j, _, err := s.cfg.Jobs.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if j.State != job.Succeeded {
		s.writeError(w, r, job.Errorf(job.EConflict, "job %s is %s; its output is ready once it has succeeded", id, j.State))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".txt"))
	}
	if err := s.cfg.Jobs.Output(r.Context(), j, w); err != nil {
		// The status is sent: all that is left is to cut the body short.
		s.log.Error("could not send the whole output of a job", "job", id, "err", err)
		panic(http.ErrAbortHandler)
	}
}
