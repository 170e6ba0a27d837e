package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A batch's error names the spec that is wrong, whatever is wrong with it,
// and the whole of a bad body.
func TestBatchErrorsNameTheSpec(t *testing.T) {
	s := recordServer(slog.New(slog.DiscardHandler))
	for _, c := range []struct{ body, want string }{
		{`{"jobs":[{"kind":"noop","partitions":1},1]}`, `jobs[1]: must be a job spec, a JSON object such as {"kind"`},
		{`{"jobs":[{"kind":"noop","partitions":1,"extra":1}]}`, `jobs[0]: unknown field "extra"`},
		{`{"jobs":[{"kind":"noop","partitions":1},{"kind":"noop","partitions":"x"}]}`, `jobs[1]:`},
		{`{"jobs":[{"kind":"noop","partitions":1},null]}`, `jobs[1]: is null`},
		{`{"jobs":{"kind":"noop"}}`, `field "jobs" must be an array`},
		{`{"jobs":[],"more":1}`, `unknown field "more"`},
		{`{"jobs":[{"kind":"noop","partitions":1}`, `malformed JSON`},
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/api/v1/jobs/batch", strings.NewReader(c.body)))
		var e struct {
			Error struct{ Code, Message string }
		}
		if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error.Code != "invalid" || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %d %s; want 400 invalid saying %q", c.body, w.Code, w.Body, c.want)
		}
	}
}

// An error repeats a value from the request by its start only: a query
// value of 100 KB is not answered with 100 KB.
func TestErrorsRepeatTheStartOfALongValue(t *testing.T) {
	s := recordServer(slog.New(slog.DiscardHandler))
	long := strings.Repeat("é", 50_000)
	for _, path := range []string{
		"/api/v1/jobs?state=" + long,
		"/api/v1/jobs?limit=" + long,
		"/api/v1/queue?limit=" + long,
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		var e struct {
			Error struct{ Code, Message string }
		}
		if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &e) != nil || len(e.Error.Message) > 400 ||
			!strings.Contains(e.Error.Message, `"éé`) || !strings.Contains(e.Error.Message, "… (100000 bytes)") {
			t.Errorf("%.40s…: %d, %d bytes: %.300s; want 400 repeating the value's start and its length", path, w.Code, w.Body.Len(), w.Body)
		}
	}
}
