package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

func (s *Server) listDatasets(w http.ResponseWriter, r *http.Request) {
	ds, err := s.cfg.Service.Datasets(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"datasets": ds})
}

func (s *Server) getDataset(w http.ResponseWriter, r *http.Request) {
	d, err := s.cfg.Service.Dataset(r.Context(), r.PathValue("name"))
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

// DefaultUploadStall is how long an upload may send nothing before it is
// refused: a client that stalls would hold its block's buffer and one of
// the uploads read at once (dataset.MaxUploads) for good.
const DefaultUploadStall = time.Minute

func (s *Server) putFile(w http.ResponseWriter, r *http.Request, name, file string) {
	if id := r.URL.Query().Get("from_job"); id != "" {
		s.putJobOutput(w, r, name, file, id)
		return
	}
	stall := s.cfg.UploadStall
	if stall <= 0 {
		stall = DefaultUploadStall
	}
	release, err := s.uploads.take(r.Context(), s.clientIP(r))
	if err != nil {
		s.writeError(w, r, job.Errorf(job.EUnavailable, "the upload of %s/%s waited for one of this client's %d uploads read at once until the client went away", name, file, MaxUploadsPerClient))
		return
	}
	defer release()
	body := &progressing{r: r.Body, rc: http.NewResponseController(w), stall: stall}
	d, err := s.cfg.Service.PutFile(r.Context(), name, file, body, r.ContentLength)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, f := range d.Files {
		if f.Name == file {
			s.log.Info("dataset file stored", "dataset", name, "file", file, "bytes", f.Size, "blocks", len(f.Lines))
		}
	}
	w.Header().Set("Location", "/api/v1/datasets/"+name)
	writeJSON(w, http.StatusCreated, d)
}

// putJobOutput stores a succeeded job's output as a file of a dataset
// (PUT …/files/{file}?from_job=ID, no body).
func (s *Server) putJobOutput(w http.ResponseWriter, r *http.Request, name, file, id string) {
	if r.ContentLength > 0 {
		s.writeError(w, r, job.Errorf(job.EInvalid, "a file made from job %s's output takes no body: send the PUT with ?from_job=%s alone, or upload a body without from_job", id, id))
		return
	}
	d, err := s.cfg.Service.PutJobOutput(r.Context(), name, file, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, f := range d.Files {
		if f.Name == file {
			s.log.Info("dataset file stored from a job's output", "dataset", name, "file", file, "job", id, "bytes", f.Size, "blocks", len(f.Lines))
		}
	}
	w.Header().Set("Location", "/api/v1/datasets/"+name)
	writeJSON(w, http.StatusCreated, d)
}

// getDatasetFile sends a file of a dataset as it was uploaded.
func (s *Server) getDatasetFile(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("name"), r.PathValue("file")
	release, err := s.uploads.take(r.Context(), s.clientIP(r))
	if err != nil {
		s.writeError(w, r, job.Errorf(job.EUnavailable, "the download of %s/%s waited for one of this client's %d transfers at once until the client went away", name, file, MaxUploadsPerClient))
		return
	}
	defer release()
	rng, ranged := parseRange(r.Header.Get("Range"))
	offset := int64(0)
	if ranged {
		offset = rng.start
		if rng.suffix {
			offset = -rng.end
		}
	}
	f, body, err := s.cfg.Service.ReadFile(r.Context(), name, file, offset)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer body.Close()
	// The upload's id names this version of the file: a download resumed
	// with If-Range over a file replaced since gets the new one whole.
	etag := `"` + f.Upload + `"`
	if ir := r.Header.Get("If-Range"); ranged && ir != "" && ir != etag {
		ranged = false
		body.Close()
		if f, body, err = s.cfg.Service.ReadFile(r.Context(), name, file, 0); err != nil {
			s.writeError(w, r, err)
			return
		}
		defer body.Close()
		etag = `"` + f.Upload + `"` // replaced again in between, it may be
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", etag)
	if r.URL.Query().Get("download") != "" {
		h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", path.Base(file)))
	}
	length := f.Size
	status := http.StatusOK
	if ranged {
		start, end, ok := rng.within(f.Size)
		if !ok {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", f.Size))
			s.writeError(w, r, job.Errorf(job.ERange, "the range %s is not within file %s of dataset %s, which holds %d bytes", r.Header.Get("Range"), file, name, f.Size))
			return
		}
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, f.Size))
		length, status = end-start+1, http.StatusPartialContent
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return // the headers say what a GET would send; no block is read
	}
	stall := s.cfg.UploadStall
	if stall <= 0 {
		stall = DefaultUploadStall
	}
	// The status goes with the first bytes: a first block that cannot be
	// read is still an error answer of its own.
	client := &clientWrites{w: &stalling{w: w, rc: http.NewResponseController(w), stall: stall}}
	out := &started{w: client, first: func() { w.WriteHeader(status) }}
	if _, err := io.Copy(out, io.LimitReader(body, length)); err != nil {
		if !out.yes {
			for _, k := range []string{"Content-Disposition", "Content-Length", "Content-Range", "Accept-Ranges", "ETag"} {
				h.Del(k)
			}
			s.writeError(w, r, err)
			return
		}
		if clientLeft(r, client) {
			// Nothing for the operator to act on (a download given up:
			// seen as errors of every download a soak's clients cut).
			s.log.Info("a dataset file was not all taken by its client", "dataset", name, "file", file, "err", err)
		} else {
			s.log.Error("could not send the whole of a dataset file", "dataset", name, "file", file, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// byteRange is one range of a Range header: start-end (inclusive),
// start- (open), or the last end bytes (suffix).
type byteRange struct {
	start, end   int64
	open, suffix bool
}

// within returns the first and last bytes of the range in size bytes;
// not ok when it starts past the end.
func (r byteRange) within(size int64) (start, end int64, ok bool) {
	start, end = r.start, r.end
	if r.suffix {
		start, end = max(size-r.end, 0), size-1
	} else if r.open || end >= size {
		end = size - 1
	}
	return start, end, start < size && end >= start
}

// parseRange reads a Range header of one byte range; ok is false for none,
// several, or one that does not parse (the whole file is sent then, as
// RFC 9110 lets a server do).
func parseRange(h string) (r byteRange, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return r, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return r, false
	}
	num := func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n >= 0
	}
	switch {
	case a == "":
		n, ok := num(b)
		return byteRange{end: n, suffix: true}, ok && n > 0
	case b == "":
		n, ok := num(a)
		return byteRange{start: n, open: true}, ok
	}
	start, ok1 := num(a)
	end, ok2 := num(b)
	return byteRange{start: start, end: end}, ok1 && ok2 && end >= start
}

// stalling writes with a write deadline of stall from each write's start:
// a client that takes nothing for that long ends the transfer (it would
// hold a block's buffer and a transfer slot for good).
type stalling struct {
	w     io.Writer
	rc    *http.ResponseController
	stall time.Duration
}

func (s *stalling) Write(p []byte) (int, error) {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.stall)) // unsupported (a test's recorder): no deadline
	return s.w.Write(p)
}

func (s *Server) deleteDatasetFile(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("name"), r.PathValue("file")
	if err := s.cfg.Service.DeleteFile(r.Context(), name, file); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("dataset file deleted", "dataset", name, "file", file)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteDataset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Service.DeleteDataset(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("dataset deleted", "dataset", name)
	w.WriteHeader(http.StatusNoContent)
}

// jobOutput sends a succeeded job's output, whole or one byte range of it
// (a download resumed: curl -C -). The output is written from the reduce
// outputs at each request, so its size is known only once it was written
// whole: a range asks for it first (kept for the last outputs sent), then
// writes the output again up to the range's end, past its start.
func (s *Server) jobOutput(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	write, err := s.cfg.Service.Output(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Accept-Ranges", "bytes")
	// A succeeded job's output never changes (a run again is another
	// job): its id names it.
	etag := `"` + id + `"`
	h.Set("ETag", etag)
	rng, ranged := parseRange(r.Header.Get("Range"))
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		ranged = false
	}
	status := http.StatusOK
	stall := s.cfg.UploadStall
	if stall <= 0 {
		stall = DefaultUploadStall
	}
	// Each write has a deadline, as a dataset file's download's: a client
	// that takes nothing for that long ends the transfer (it held the
	// output's readers, and their buffers, for good).
	client := &clientWrites{w: &stalling{w: w, rc: http.NewResponseController(w), stall: stall}}
	var dst io.Writer = client
	if ranged {
		size, err := s.outputSizes.size(r.Context(), id, write)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		start, end, ok := rng.within(size)
		if !ok {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			s.writeError(w, r, job.Errorf(job.ERange, "the range %s is not within the output of job %s, which holds %d bytes", r.Header.Get("Range"), id, size))
			return
		}
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		h.Set("Content-Length", strconv.FormatInt(end-start+1, 10))
		status = http.StatusPartialContent
		dst = &window{w: client, skip: start, left: end - start + 1}
	}
	if r.URL.Query().Get("download") != "" {
		h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".txt"))
	}
	out := &started{w: dst, first: func() { w.WriteHeader(status) }}
	count := &counting{w: out}
	err = write(count)
	if errors.Is(err, errWindowSent) {
		return // the range is sent; the rest of the output is not written
	}
	if err != nil {
		if !out.yes {
			// Nothing sent yet (the output could not even begin): the
			// error can still be the answer.
			for _, k := range []string{"Content-Disposition", "Content-Length", "Content-Range", "Accept-Ranges", "ETag"} {
				h.Del(k)
			}
			s.writeError(w, r, err)
			return
		}
		// The status is sent: all that is left is to cut the body short.
		if clientLeft(r, client) {
			// The client's doing (gone, or taking nothing): nothing for
			// the operator to act on.
			s.log.Info("a job's output was not all taken by its client", "job", id, "err", err)
		} else {
			s.log.Error("could not send the whole output of a job", "job", id, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	if !ranged {
		s.outputSizes.note(id, count.n)
	}
	if !out.yes {
		w.WriteHeader(status) // an empty output
	}
}

// clientLeft reports whether a transfer cut short is its client's doing:
// a write to it failed (gone, or taking nothing), or it went away while a
// read for it was under way (the read then fails with the request's
// canceled context).
func clientLeft(r *http.Request, c *clientWrites) bool {
	return c.err != nil || r.Context().Err() != nil
}

// clientWrites remembers the error of a write to the client.
type clientWrites struct {
	w   io.Writer
	err error
}

func (c *clientWrites) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

// outputSizes keeps the sizes of the last outputs written whole, for the
// ranges of their downloads resumed, and finds one once for the ranges
// asked together (a download manager's parallel segments).
type outputSizes struct {
	mu     sync.Mutex
	sizes  map[string]int64
	order  []string           // oldest first
	sizing map[string]*sizing // under way, by job id
}

// sizing is one write of an output to find its size.
type sizing struct {
	done chan struct{}
	err  error
}

// maxOutputSizes bounds the outputs whose sizes are kept.
const maxOutputSizes = 1024

func (o *outputSizes) note(id string, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.noteLocked(id, n)
}

func (o *outputSizes) noteLocked(id string, n int64) {
	if o.sizes == nil {
		o.sizes = map[string]int64{}
	}
	if _, ok := o.sizes[id]; !ok {
		o.order = append(o.order, id)
	}
	o.sizes[id] = n
	for len(o.order) > maxOutputSizes {
		delete(o.sizes, o.order[0])
		o.order = o.order[1:]
	}
}

// size returns the size of job id's output, written whole once (and
// thrown away) when it is not known; a request that finds that write
// under way waits for it rather than write the output too, and writes it
// itself when it failed (its request may have been the one to fail).
func (o *outputSizes) size(ctx context.Context, id string, write func(io.Writer) error) (int64, error) {
	for {
		o.mu.Lock()
		if n, ok := o.sizes[id]; ok {
			o.mu.Unlock()
			return n, nil
		}
		if w := o.sizing[id]; w != nil {
			o.mu.Unlock()
			select {
			case <-w.done:
				if w.err == nil {
					continue // noted
				}
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			o.mu.Lock()
			if o.sizing[id] == w {
				delete(o.sizing, id)
			}
			o.mu.Unlock()
			continue
		}
		w := &sizing{done: make(chan struct{})}
		if o.sizing == nil {
			o.sizing = map[string]*sizing{}
		}
		o.sizing[id] = w
		o.mu.Unlock()
		c := &counting{w: io.Discard}
		err := write(c)
		o.mu.Lock()
		if o.sizing[id] == w {
			delete(o.sizing, id)
		}
		if err == nil {
			o.noteLocked(id, c.n)
		}
		w.err = err
		close(w.done)
		o.mu.Unlock()
		return c.n, err
	}
}

// counting counts the bytes written through it.
type counting struct {
	w io.Writer
	n int64
}

func (c *counting) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// errWindowSent stops the writing of an output once a window's bytes are
// sent.
var errWindowSent = errors.New("the range is sent")

// window passes on the left bytes after the first skip of what is
// written, then fails with errWindowSent.
type window struct {
	w          io.Writer
	skip, left int64
}

func (v *window) Write(p []byte) (int, error) {
	n := len(p)
	if v.skip >= int64(len(p)) {
		v.skip -= int64(len(p))
		return n, nil
	}
	p = p[v.skip:]
	v.skip = 0
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	if _, err := v.w.Write(p); err != nil {
		return 0, err
	}
	if v.left -= int64(len(p)); v.left == 0 {
		return n, errWindowSent
	}
	return n, nil
}

// started is a writer that remembers whether anything was written, and
// calls first (when set) before the first bytes.
type started struct {
	w     io.Writer
	yes   bool
	first func()
}

func (s *started) Write(p []byte) (int, error) {
	if !s.yes && len(p) > 0 && s.first != nil {
		s.first()
	}
	s.yes = s.yes || len(p) > 0
	return s.w.Write(p)
}

// progressing reads a request's body with a read deadline of stall from
// each read's start: a client that sends nothing for that long ends the
// read, with an error that says so. (The time an upload waits for a slot,
// unread, does not count.)
type progressing struct {
	r     io.Reader
	rc    *http.ResponseController
	stall time.Duration
}

func (p *progressing) Read(b []byte) (int, error) {
	_ = p.rc.SetReadDeadline(time.Now().Add(p.stall)) // unsupported (a test's recorder): no deadline
	n, err := p.r.Read(b)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("the client sent nothing for %s: %w", p.stall, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The connection ended before the body's Content-Length: said
		// otherwise, as a reader of whole blocks takes io.ErrUnexpectedEOF
		// for the end of a short last block, and stored a file cut short.
		err = errBodyCut
	}
	return n, err
}

var errBodyCut = errors.New("the connection ended before the body's Content-Length")
