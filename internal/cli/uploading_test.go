package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// A large upload to a terminal rewrites one line with how far it has come,
// and ends on the whole.
func TestUploadShowsHowFarItHasCome(t *testing.T) {
	var out bytes.Buffer
	data := strings.Repeat("x", 3<<20)
	u := &uploading{r: strings.NewReader(data), path: "big.txt", total: int64(len(data)), out: &out}
	got, err := io.ReadAll(u)
	if err != nil || len(got) != len(data) {
		t.Fatalf("read %d bytes through the progress, %v; want %d", len(got), err, len(data))
	}
	lines := strings.Split(out.String(), "\r\033[K")
	last := lines[len(lines)-1]
	if last != "uploading big.txt: 100% (3.0 MiB of 3.0 MiB)" {
		t.Fatalf("the last progress line: %q (all: %q)", last, out.String())
	}
	if !strings.HasPrefix(lines[1], "uploading big.txt: ") || len(lines) > 10 {
		t.Fatalf("the progress lines: %q", lines)
	}
}
