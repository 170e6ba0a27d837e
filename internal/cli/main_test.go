package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/app"
)

// The client commands' --server, --token and -o may come before the
// command, as with kubectl or docker; anything else there is refused
// saying where it goes.
func TestFlagsBeforeTheCommand(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []string
		err  string
	}{
		{in: []string{"jobs", "--state", "failed"}, want: []string{"jobs", "--state", "failed"}},
		{in: []string{"--server", "http://h:1", "jobs", "--state", "failed"}, want: []string{"jobs", "--server", "http://h:1", "--state", "failed"}},
		{in: []string{"--server=http://h:1", "-o", "json", "--token", "t", "job", "x"}, want: []string{"job", "--server=http://h:1", "-o", "json", "--token", "t", "x"}},
		{in: []string{"-h"}, want: []string{"-h"}},
		{in: []string{"--version"}, want: []string{"--version"}},
		{in: []string{"--server", "http://h:1", "dataset", "put", "d", "f"}, want: []string{"dataset", "put", "--server", "http://h:1", "d", "f"}},
		{in: []string{"-o", "json", "kind", "ls"}, want: []string{"kind", "ls", "-o", "json"}},
		{in: []string{"-o", "json", "kinds"}, want: []string{"kinds", "-o", "json"}},
		{in: []string{"--wait", "submit", "noop"}, err: "--wait before the command: give the command first"},
		{in: []string{"--server"}, err: "--server needs a value"},
		{in: []string{"--server", "http://h:1"}, err: "no command after --server http://h:1"},
	} {
		got, err := commandFirst(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: %q, %v; want the error %q", c.in, got, err, c.err)
		case c.err == "" && (err != nil || !slices.Equal(got, c.want)):
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}

	srv := startServer(t, func(c *app.Config) { c.Workers = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"--server", srv.URL(), "submit", "noop", "1"}, &out, &errOut, nil); err != nil {
		t.Fatalf("submit with --server first: %v\n%s", err, errOut.String())
	}
	id := strings.Fields(out.String())[0]
	out.Reset()
	if err := run(ctx, []string{"--server", srv.URL(), "-o", "json", "job", id}, &out, &errOut, nil); err != nil || !strings.Contains(out.String(), `"id": "`+id+`"`) {
		t.Fatalf("job with --server and -o first: %v\n%s", err, out.String())
	}
}

// submit --wait into a log (not a terminal) writes a line at each change
// of state and at most one every progressEvery between them: a job of
// hundreds of tasks wrote a line at each task.
func TestWaitIntoALogIsPaced(t *testing.T) {
	srv := startServer(t, func(c *app.Config) { c.SleepScale = 0.01 }) // short: 0-40 ms a task
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	start := time.Now()
	if err := run(ctx, []string{"submit", "short", "400", "--wait", "--server", srv.URL()}, &out, &errOut, nil); err != nil {
		t.Fatalf("submit --wait: %v\n%s", err, errOut.String())
	}
	took := time.Since(start)
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "succeeded: 400/400 done") {
		t.Fatalf("last line %q; want the job succeeded with its 400 tasks", last)
	}
	if most := 4 + int(took/progressEvery); len(lines) > most {
		t.Fatalf("%d lines in %s; want at most %d (a line per state and one every %s):\n%s", len(lines), took, most, progressEvery, errOut.String())
	}
}

// A mistyped command or flag is answered with the one meant, when one is
// close (a typo, or a flag's name from another tool), and with no guess
// when none is.
func TestMistypedCommandsAndFlagsNameTheOneMeant(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sumbit", "noop"}, `unknown command "sumbit" (did you mean "submit"?)`},
		{[]string{"jbos"}, `unknown command "jbos" (did you mean "jobs"?)`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"submit", "wordcount", "--dataset", "books"}, "flag provided but not defined: -dataset (did you mean --input?)"},
		{[]string{"submit", "wordcount", "--reduces", "4"}, "(did you mean --reducers?)"},
		{[]string{"submit", "noop", "--partitons", "4"}, "(did you mean --partitions?)"},
		{[]string{"jobs", "--sate", "failed"}, "(did you mean --state?)"},
		{[]string{"jobs", "--colour"}, "flag provided but not defined: -colour (the flags are listed above)"},
		{[]string{"serve", "--adr", "127.0.0.1:0"}, "(did you mean --addr?)"},
	} {
		var out, errOut bytes.Buffer
		err := run(ctx, c.args, &out, &errOut, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v; want an error saying %q", c.args, err, c.want)
		}
		if strings.Contains(c.want, "the flags are listed above") && strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%q: %v; no flag is near it, none should be guessed", c.args, err)
		}
	}
	for _, c := range []struct {
		s    string
		want string
	}{
		{"submit", "submit"}, {"sbumit", "submit"}, {"x", ""}, {"statu", "status"}, {"delte", "delete"}, {"kidns", "kinds"},
	} {
		if got := closest(c.s, commands); got != c.want {
			t.Errorf("closest(%q) = %q, want %q", c.s, got, c.want)
		}
	}
}
