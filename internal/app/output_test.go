package app_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
)

// A job's output is sent in one byte range when asked (a download
// resumed): 206 with the bytes of the output as sent whole, wherever the
// range falls among its reducers' parts; a suffix range, an open one; a
// range past the end is a 416 naming the size; an If-Range of another
// job's output sends it whole; the ETag is the job's id.
func TestJobOutputRanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client()
	var text strings.Builder
	letters := func(n int) string {
		return string(rune('a'+n%26)) + string(rune('a'+n/26%26)) + string(rune('a'+n/676%26))
	}
	for i := range 2000 {
		fmt.Fprintf(&text, "word%s and the other%s\n", letters(i%797), letters(i%13))
	}
	c.PutFile(t, "d", "a.txt", []byte(text.String()))
	wc := b.awaitState(t, c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"d"}, Partitions: 3, Reducers: 3}).ID, client.Succeeded)
	path := "/api/v1/jobs/" + wc.ID + "/output"
	// Ranged before any whole download: the size is found first.
	mid := b.do(t, "GET", path, "", "Range", "bytes=100-899")
	whole := b.do(t, "GET", path, "")
	n := len(whole.Body)
	if whole.Status != 200 || n < 1000 || whole.Header.Get("Accept-Ranges") != "bytes" || whole.Header.Get("ETag") != `"`+wc.ID+`"` {
		t.Fatalf("the whole output: %d, %d bytes, headers %v", whole.Status, n, whole.Header)
	}
	if mid.Status != http.StatusPartialContent || string(mid.Body) != string(whole.Body[100:900]) || mid.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-899/%d", n) {
		t.Fatalf("bytes=100-899: %d %q, Content-Range %q", mid.Status, mid.Body, mid.Header.Get("Content-Range"))
	}
	for _, tc := range []struct {
		rng        string
		from, to   int // of whole.Body
		contentRng string
	}{
		{"bytes=0-0", 0, 1, fmt.Sprintf("bytes 0-0/%d", n)},
		{"bytes=-10", n - 10, n, fmt.Sprintf("bytes %d-%d/%d", n-10, n-1, n)},
		{fmt.Sprintf("bytes=%d-", n-300), n - 300, n, fmt.Sprintf("bytes %d-%d/%d", n-300, n-1, n)},
		{fmt.Sprintf("bytes=500-%d", n+1000), 500, n, fmt.Sprintf("bytes 500-%d/%d", n-1, n)},
	} {
		r := b.do(t, "GET", path, "", "Range", tc.rng)
		if r.Status != http.StatusPartialContent || string(r.Body) != string(whole.Body[tc.from:tc.to]) || r.Header.Get("Content-Range") != tc.contentRng {
			t.Errorf("%s: %d, %d bytes, Content-Range %q; want bytes %d to %d, %q", tc.rng, r.Status, len(r.Body), r.Header.Get("Content-Range"), tc.from, tc.to, tc.contentRng)
		}
	}
	if r := b.do(t, "GET", path, "", "Range", fmt.Sprintf("bytes=%d-", n)); r.Status != http.StatusRequestedRangeNotSatisfiable ||
		!strings.Contains(string(r.Body), fmt.Sprintf("holds %d bytes", n)) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", n) {
		t.Errorf("a range past the end: %d %s %q", r.Status, r.Body, r.Header.Get("Content-Range"))
	}
	if r := b.do(t, "GET", path, "", "Range", "bytes=10-19", "If-Range", `"another"`); r.Status != 200 || string(r.Body) != string(whole.Body) {
		t.Errorf("If-Range of another version: %d, %d bytes; want the whole output", r.Status, len(r.Body))
	}
	if r := b.do(t, "GET", path, "", "Range", "bytes=10-19", "If-Range", `"`+wc.ID+`"`); r.Status != http.StatusPartialContent || string(r.Body) != string(whole.Body[10:20]) {
		t.Errorf("If-Range of this output: %d %q", r.Status, r.Body)
	}
	// A job not succeeded has no output to range over.
	failed := b.do(t, "GET", "/api/v1/jobs/wordcount_01m0000000000000000000000/output", "", "Range", "bytes=0-9")
	if failed.Status != http.StatusNotFound {
		t.Errorf("a range of no job's output: %d %s", failed.Status, failed.Body)
	}
}
