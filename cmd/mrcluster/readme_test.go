package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/kinds"
)

// runnable finds the README's shell examples marked to run: fenced blocks
// whose info string is "sh runnable".
var runnable = regexp.MustCompile("(?s)```sh runnable\n(.*?)```")

// The README's runnable examples run as written, in order, against a
// started server: each command must succeed (bash -e, pipefail). The
// address is the test server's instead of the default one; the books are
// the test corpus (kinds.Corpus) when the shared ones are not there.
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := runnable.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 5 {
		t.Fatalf("%d runnable blocks in the README, want the 6 of Using it and the API", len(blocks))
	}
	p := start(t, t.TempDir(), nil, "--submit-rate", "0") // the default sleeps, as a reader has them

	books := t.TempDir()
	docs, _ := kinds.Corpus(1)
	for i, d := range docs {
		name := d.Name
		// The README names two of the books.
		if _, err := os.Stat("../../../shared/corpus/gutenberg/" + name); err != nil && i < 2 {
			name = []string{"pg-frankenstein.txt", "pg-metamorphosis.txt"}[i]
		}
		if err := os.WriteFile(filepath.Join(books, name), d.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Dir(binary)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, b := range blocks {
		code := strings.ReplaceAll(b[1], "http://127.0.0.1:8080", p.url)
		code = strings.ReplaceAll(code, "books=../shared/corpus/gutenberg", "books="+books)
		// The binary under test, not a bin/mrcluster left by make run.
		code = strings.ReplaceAll(code, `"$PWD/bin:`, `"`+bin+`:`)
		script.WriteString(code)
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's examples failed: %v\n%s\n--- script:\n%s", err, out, script.String())
	}
	for _, want := range []string{`"status":"Submitted"`, "succeeded", `"code":"invalid"`, "known kinds: grep, indexer"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the examples' output lacks %q:\n%s", want, out)
		}
	}
}
