package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/mrcluster/mrcluster/internal/job"
)

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[job.Code]int{
	job.EInvalid:      http.StatusBadRequest,
	job.ENotFound:     http.StatusNotFound,
	job.EConflict:     http.StatusConflict,
	job.EKeyReused:    http.StatusUnprocessableEntity,
	job.ETooLarge:     http.StatusRequestEntityTooLarge,
	job.EMethod:       http.StatusMethodNotAllowed,
	job.EForbidden:    http.StatusForbidden,
	job.EUnauthorized: http.StatusUnauthorized,
	job.EBusy:         http.StatusTooManyRequests,
	job.ERange:        http.StatusRequestedRangeNotSatisfiable,
	job.EUnavailable:  http.StatusServiceUnavailable,
	job.EInternal:     http.StatusInternalServerError,
}

type errorBody struct {
	Error struct {
		Code    job.Code `json:"code"`
		Message string   `json:"message"`
	} `json:"error"`
}

// writeError answers with err's status and a JSON body naming what is wrong.
// Internal errors are logged and shown as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := job.ErrorCode(err)
	switch code {
	case job.EInternal:
		s.log.Error("request failed: a defect of mrcluster, please report it", "method", r.Method, "path", r.URL.Path, "err", err)
	case job.EUnavailable:
		// The store's state is logged where it is watched, and the request
		// line is a warning; the reason (the store, or a submit under the
		// same Idempotency-Key still in progress) is for whoever reads
		// along, not an operator's action.
		s.log.Info("request refused for now (503): the client may send it again", "method", r.Method, "path", r.URL.Path, "reason", err)
	}
	switch code {
	case job.EUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="mrcluster"`)
	case job.EBusy:
		w.Header().Set("Retry-After", "5")
	}
	var body errorBody
	body.Error.Code = code
	body.Error.Message = job.ErrorMessage(err)
	writeJSON(w, statusOf[code], body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads one JSON object from the request body into v, refusing
// unknown fields, trailing data and bodies over the size limit.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, example string) error {
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, s.cfg.MaxBodyBytes, example)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeError(err, s.cfg.MaxBodyBytes, example)
		}
		return job.Errorf(job.EInvalid, "request body must hold one JSON object and nothing after it")
	}
	return nil
}

// decodeSpec reads one job spec of a batch, as strictly as a body.
func decodeSpec(raw json.RawMessage, v *submitRequest) error {
	if string(raw) == "null" {
		return job.Errorf(job.EInvalid, "is null: give a job spec such as %s", submitExample)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field == "" {
		return job.Errorf(job.EInvalid, "must be a job spec, a JSON object such as %s, not %s", submitExample, typ.Value)
	}
	if err != nil {
		return decodeError(err, 0, submitExample)
	}
	return nil
}

func decodeError(err error, limit int64, example string) error {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return job.Errorf(job.ETooLarge, "request body is larger than the limit of %d bytes", limit)
	case errors.Is(err, io.EOF):
		return job.Errorf(job.EInvalid, "request body is empty; send a JSON object such as %s", example)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return job.Errorf(job.EInvalid, "malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syntax):
		return job.Errorf(job.EInvalid, "malformed JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return job.Errorf(job.EInvalid, "request body must be a JSON object such as %s, not %s", example, typ.Value)
		}
		return job.Errorf(job.EInvalid, "field %q must be %s, not %s", typ.Field, typeName(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return job.Errorf(job.EInvalid, "unknown field %s; an example of a valid body: %s", strings.TrimPrefix(err.Error(), "json: unknown field "), example)
	}
	return job.Errorf(job.EInvalid, "cannot read the request body: %v", err)
}

func typeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int64":
		return "an integer"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	}
	return fmt.Sprintf("of type %s", kind)
}
