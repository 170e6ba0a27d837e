package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// tmpfs mounts a small tmpfs for the test, or skips it where that cannot
// be done (not root, no mount).
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (CI runs as root)")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes zeros to path until the disk is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			return
		}
	}
}

// gatedKind is kind "gated", whose tasks wait for gate to close, then
// return 1.
func gatedKind(gate chan struct{}) job.Kind {
	return job.Kind{Name: "gated", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		select {
		case <-gate:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}
}

// eventually polls cond every 100 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
	}
}

// The disk of the data directory fills up (another file fills it): the
// server keeps answering, with 503s that say the disk is full, /readyz
// says so too, and the NATS server's own errors are in the log. Once the
// file is removed it recovers by itself, without a restart, and the job
// submitted before the disk filled completes.
func TestDiskFullAndBack(t *testing.T) {
	t.Parallel()
	disk := tmpfs(t, "80m")
	logs := &app.LockedBuffer{}
	gate := make(chan struct{})
	slow := gatedKind(gate)
	b := setup(t, func(c *app.Config) {
		c.DataDir = filepath.Join(disk, "data")
		c.Kinds = testKinds(slow)
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	c := b.client()
	before := c.Submit(t, "gated", 6)

	fill(t, filepath.Join(disk, "filler"))
	eventually(t, 15*time.Second, "/readyz to say the disk is full", func() bool {
		r := c.Do(t, "GET", "/readyz", "")
		return r.Status == http.StatusServiceUnavailable && strings.Contains(string(r.Body), "full")
	})
	start := time.Now()
	r := c.Do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":2}`)
	took := time.Since(start)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "disk") {
		t.Fatalf("a submit on a full disk: %d %s", r.Status, r.Body)
	}
	if took > 5*time.Second {
		t.Fatalf("a submit on a full disk took %s to answer", took)
	}
	if r := c.Do(t, "PUT", "/api/v1/datasets/d?file=a.txt", "some text\n"); r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "disk") {
		t.Fatalf("an upload on a full disk: %d %s", r.Status, r.Body)
	}
	if r := c.Do(t, "GET", "/api/v1/jobs/"+before.ID, ""); r.Status != http.StatusOK {
		t.Fatalf("reads while the disk is full: %d %s", r.Status, r.Body)
	}
	// The job's tasks finish while the disk is full: their results cannot
	// be stored, and the streams that failed a write refuse every later
	// one until they are opened anew.
	close(gate)
	eventually(t, 15*time.Second, "the NATS server's own errors in the log", func() bool {
		return strings.Contains(logs.String(), "component=nats")
	})

	if err := os.Remove(filepath.Join(disk, "filler")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "/readyz to answer ready once space is back", func() bool {
		return c.Do(t, "GET", "/readyz", "").Status == http.StatusOK
	})
	var after client.Job
	eventually(t, 15*time.Second, "a submit to be accepted once space is back", func() bool {
		r := c.Do(t, "POST", "/api/v1/jobs", `{"kind":"noop","partitions":2}`)
		if r.Status != http.StatusAccepted {
			return false
		}
		r.JSON(t, &after)
		return true
	})
	eventually(t, 30*time.Second, "the job submitted after the recovery to end", func() bool { return b.job(t, after.ID).State.Terminal() })
	if j := b.job(t, after.ID); j.State != client.Succeeded {
		t.Fatalf("a job submitted after the recovery: %s", apitest.Describe(j))
	}
	eventually(t, 30*time.Second, "the job submitted before the disk filled to end", func() bool { return b.job(t, before.ID).State.Terminal() })
	if j := b.job(t, before.ID); j.State != client.Succeeded || j.Result.Sum != 6 {
		t.Fatalf("the job acknowledged before the disk filled: %s", apitest.Describe(j))
	}
	// Its tasks ended while the disk was full: the workers held their
	// results and stored them once space was back, instead of running
	// the tasks again (and again, while the disk stayed full).
	attempts, err := c.API().Tasks(apitest.Context(t), before.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 6 {
		t.Fatalf("the job acknowledged before the disk filled: %d attempts of its 6 tasks, want one each: %+v", len(attempts), attempts)
	}
	for _, a := range attempts {
		if a.Attempt != 1 || a.Error != "" {
			t.Fatalf("the job acknowledged before the disk filled: attempt %+v, want each task's first, done", a)
		}
	}
	if r := c.Do(t, "PUT", "/api/v1/datasets/d?file=a.txt", "some text\n"); r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("an upload after the recovery: %d %s", r.Status, r.Body)
	}
	if log := logs.String(); !strings.Contains(log, "the store takes writes again") {
		t.Errorf("the log does not say the store recovered:\n%s", log)
	}
}

// The disk of a worker's --temp-dir is full: a map that spills there is
// interrupted, not failed (the job would have failed in seconds, each
// attempt counted), and runs again until space is back; the word count
// then succeeds with its whole input, and the log told the operator.
func TestFullTempDirInterruptsTasksUntilSpaceIsBack(t *testing.T) {
	t.Parallel()
	disk := tmpfs(t, "32m")
	// Words all different, so that the map's buffer fills and spills
	// whatever the corpus (the generated one has a hundred words).
	rng := rand.New(rand.NewPCG(1, 2))
	var text []byte
	for len(text) < 1<<20 {
		for range 8 {
			text = append(text, byte('a'+rng.IntN(26)))
		}
		text = append(text, " \n"[rng.IntN(2)])
	}
	docs := []kinds.Doc{{Name: "words.txt", Data: text}}
	logs := &app.LockedBuffer{}
	b := setup(t, func(c *app.Config) {
		c.TempDir = disk
		c.SortBuffer = 256 << 10 // a map of the books spills
		c.MaxAttempts = 2
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	b.upload(t, "books", docs)
	var size int64
	for _, d := range docs {
		size += int64(len(d.Data))
	}
	fill(t, filepath.Join(disk, "filler"))
	c := b.client()
	j := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 1, Reducers: 1})
	interrupted := func() int {
		var h struct{ Tasks []job.TaskResult }
		c.Do(t, "GET", "/api/v1/jobs/"+j.ID+"/tasks", "").JSON(t, &h)
		n := 0
		for _, r := range h.Tasks {
			if r.Outcome == job.OutcomeInterrupted && strings.Contains(r.Error, "no space left on device") {
				n++
			}
		}
		return n
	}
	// More interruptions than --max-attempts allows failures.
	eventually(t, time.Minute, "the map to be interrupted twice by the full disk", func() bool {
		if j := b.job(t, j.ID); j.State.Terminal() {
			t.Fatalf("the job ended while the worker's disk was full: %s", apitest.Describe(j))
		}
		return interrupted() >= 2
	})
	if err := os.Remove(filepath.Join(disk, "filler")); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the word count to end once space is back", func() bool { return b.job(t, j.ID).State.Terminal() })
	if j := b.job(t, j.ID); j.State != client.Succeeded || j.Counters.InputBytes != size {
		t.Fatalf("the word count after the disk was freed: %s, %d input bytes of %d", apitest.Describe(j), j.Counters.InputBytes, size)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"the disk of this worker's --temp-dir is full") {
		t.Fatalf("the log does not tell the operator that the disk of --temp-dir is full")
	}
}

// A server started on a nearly full disk stores more once space is freed,
// without a restart. nats-server's own limit on what its streams hold is
// three quarters of the space free at its start, kept for good: uploads
// were refused ("insufficient resources") with most of the disk free again
// until the server restarted. The limit now follows the disk, less a
// reserve, which the streams' own writes do not take: the refusal says to
// delete data, and deleting works.
func TestStoreLimitFollowsTheDisk(t *testing.T) {
	t.Parallel()
	disk := tmpfs(t, "200m")
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, 165<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &app.LockedBuffer{}
	b := setup(t, func(c *app.Config) {
		c.DataDir = filepath.Join(disk, "data")
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	c := b.client()
	// An upload that says it is larger than the room left is refused
	// before its body is sent.
	resp, body, err := partialUpload(t, c.URL, "toolarge", 100<<20, "the first words", false)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "is 100 MiB and the store has room for") {
		t.Fatalf("an upload of 100 MiB on a store with less room, its body not sent: %v %v %s", resp, err, body)
	}
	text := strings.Repeat("some words of a file ", 1500000) // 31 MB
	r := c.Do(t, "PUT", "/api/v1/datasets/big?file=a.txt", text)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "room for") {
		t.Fatalf("an upload larger than the room left: %d %s", r.Status, r.Body)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the upload to be taken once space is freed", func() bool {
		r = c.Do(t, "PUT", "/api/v1/datasets/big?file=a.txt", text)
		return r.Status == http.StatusCreated || r.Status == http.StatusOK
	})
	if log := logs.String(); !strings.Contains(log, "the store may now hold more") || strings.Contains(log, "restarting the embedded NATS server") {
		t.Errorf("the log does not say the store's limit was raised, or says the server restarted:\n%s", log)
	}
	// Filled by its own uploads, the store refuses the next one and keeps
	// room on the disk for deletions, which make room again.
	var stored []string
	for i := 0; ; i++ {
		name := fmt.Sprintf("more%d", i)
		r = c.Do(t, "PUT", "/api/v1/datasets/"+name+"?file=a.txt", text)
		if r.Status == http.StatusServiceUnavailable {
			break
		}
		if r.Status != http.StatusCreated && r.Status != http.StatusOK || i > 10 {
			t.Fatalf("upload %d of 31 MB on a 200 MB disk: %d %s", i, r.Status, r.Body)
		}
		stored = append(stored, name)
	}
	if !strings.Contains(string(r.Body), "room for") {
		t.Fatalf("an upload past the store's room: %s", r.Body)
	}
	for _, name := range stored {
		if r := c.Do(t, "DELETE", "/api/v1/datasets/"+name, ""); r.Status/100 != 2 {
			t.Fatalf("delete dataset %s in a store at its limit: %d %s", name, r.Status, r.Body)
		}
	}
	eventually(t, 20*time.Second, "an upload to be taken once datasets are deleted", func() bool {
		r = c.Do(t, "PUT", "/api/v1/datasets/again?file=a.txt", text)
		return r.Status == http.StatusCreated || r.Status == http.StatusOK
	})
}

// A job whose outputs the store has no room for waits for room (here 20 s,
// half an hour by default) and then fails, naming why, and what it stored
// leaves the store. A put the store refused half-way leaves its chunks in
// the stream's files, so an output that does not fit in what the disk has
// beyond its reserve is not begun, and a task whose output did not fit is
// not run again while it still would not. Before, the task ran again every second
// for good, each try leaving its chunks; by hand, the disk filled, and the
// job's cancel was refused for want of space.
func TestOutputTheStoreHasNoRoomFor(t *testing.T) {
	t.Parallel()
	disk := tmpfs(t, "120m")
	logs := &app.LockedBuffer{}
	b := setup(t, func(c *app.Config) {
		c.DataDir = filepath.Join(disk, "data")
		c.RoomWait = 20 * time.Second // runs 5 s, then 10 s apart, and the last
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	c := b.client()
	// 32 MB of lines, which a grep of every line outputs with their file
	// and line number: the input and its map outputs fit in the 88 MB the
	// store may hold here, the outputs too is more than it has room for.
	var text bytes.Buffer
	for i := 0; text.Len() < 32<<20; i++ {
		fmt.Fprintf(&text, "line %07d of a file that a grep outputs whole, every line of it\n", i)
	}
	c.PutFile(t, "lines", "lines.txt", text.Bytes())
	j := c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"lines"}, Partitions: 4, Reducers: 2, Params: map[string]any{"pattern": "."}})
	j = c.AwaitWithin(t, 3*time.Minute, j.ID, func(j client.Job) bool { return j.State != "queued" && j.State != "running" })
	if j.State != "failed" || !strings.Contains(j.Error, "no room for the task's output") || !strings.Contains(j.Error, "run the job again") {
		t.Fatalf("a job whose output the store has no room for: %s, error %q", j.State, j.Error)
	}
	if log := logs.String(); strings.Contains(log, "no space left on device") || !strings.Contains(log, "waits for room") {
		t.Fatalf("the disk filled, or the log does not say the task waited for room:\n%s", log)
	}
	tasks, err := c.API().Tasks(apitest.Context(t), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	begun, ran := true, true // whether every run that met no room began its put, ran its code
	for _, r := range tasks {
		if strings.Contains(r.Error, "bytes to store, room for") {
			begun = false
		}
		if strings.Contains(r.Error, "not run: the store has room for") {
			ran = false
		}
	}
	if begun || ran {
		t.Errorf("every run of the job began a put the store had no room for (%t), or ran its code again for an output that could not fit (%t): %+v", begun, ran, tasks)
	}
	// What the job stored leaves the store with it (its outputs deleted as
	// it failed, in the background): the room comes back, and 24 MiB fit.
	eventually(t, 20*time.Second, "the server to be ready", func() bool { return c.Do(t, "GET", "/readyz", "").Status == http.StatusOK })
	eventually(t, 2*time.Minute, "the failed job's data to leave the store", func() bool {
		q, err := c.API().Queue(apitest.Context(t))
		if err != nil || q.StoreRoom == nil {
			t.Fatalf("the queue, with the store's room: %+v %v", q, err)
		}
		return *q.StoreRoom > 25<<20
	})
	c.PutFile(t, "more", "more.txt", text.Bytes()[:24<<20])
	small := c.SubmitSpec(t, client.Spec{Kind: "grep", Input: []string{"more"}, Partitions: 2, Params: map[string]any{"pattern": "line 00000"}})
	if small = c.AwaitWithin(t, 2*time.Minute, small.ID, func(j client.Job) bool { return j.State != "queued" && j.State != "running" }); small.State != "succeeded" {
		t.Fatalf("a job after the one that did not fit: %s %s", small.State, small.Error)
	}
}
