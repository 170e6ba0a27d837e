package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// Bytes flipped in one server's copy of the job archive, in a file before
// its last. That server, started again, finds its copy short of messages
// the others hold, sets it aside and copies the stream again from them;
// made the stream's leader, which every read of the archive goes to, it
// serves every finished job. Before, JetStream served the damaged records
// as missing: their jobs answered 404 on every server (18 of 1,029 by
// hand), while two good copies were in the cluster.
func TestDamagedCopyIsCopiedAgain(t *testing.T) {
	t.Parallel()
	// A window of 10 recent jobs, and finished records out of the jobs
	// bucket a second after they are archived: the other jobs are read
	// from the archive alone.
	nodes, args := threeServers(t, "--recent-jobs", "10", "--archive-after", "1s")
	a := nodes[0].client()
	ctx := apitest.Context(t)
	// 40 jobs of 240 KiB of params each: their archived records fill more
	// than one of the archive's 8 MiB files.
	pad := strings.Repeat("x", 240<<10)
	var ids []string
	// The set-up's submits ride out a store that is slow to answer (a
	// loaded machine: a batch of 1 MB of records answered 503 after 10 s in
	// one run of make test), sent again under their keys.
	api := a.API()
	api.SubmitRetries = 8
	for range 10 {
		specs := make([]client.Spec, 4)
		for i := range specs {
			specs[i] = client.Spec{Kind: "noop", Partitions: 1, Params: map[string]any{"pad": pad}}
		}
		jobs, err := api.SubmitBatch(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			ids = append(ids, j.ID)
		}
	}
	for _, id := range ids {
		a.Await(t, id, func(j client.Job) bool { return j.State == client.Succeeded })
	}

	// Server 2 stops cleanly; a record in the middle of its archive's
	// first file is damaged.
	if err := nodes[2].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := <-nodes[2].exited
	nodes[2].exited <- stopped
	if stopped != nil {
		t.Fatalf("server 2 stopped with %v", stopped)
	}
	argv := args(2)
	dir := argv[slices.Index(argv, "--data-dir")+1]
	files, err := filepath.Glob(filepath.Join(dir, "jetstream", "jetstream", "*", "streams", natsx.ArchiveStream, "msgs", "*.blk"))
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(files, func(x, y string) int { return blockNumber(x) - blockNumber(y) })
	if len(files) < 2 {
		t.Fatalf("the archive is in %d files; the test needs a file before the last", len(files))
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 2; i < len(data)/2+16; i++ {
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(files[0], data, 0o600); err != nil {
		t.Fatal(err)
	}

	again, lines := spawn(t, servingLine, nil, argv...)
	m := again.ready(t, lines)
	again.url, again.nats = m[1], m[2]
	log := again.out.String()
	if !strings.Contains(log, "setting the copy aside and copying the stream again") || !strings.Contains(log, "stream="+natsx.ArchiveStream) ||
		!strings.Contains(log, "damaged copies were copied again") {
		t.Fatalf("the restarted server does not say it copied its damaged copy of %s again:\n%s", natsx.ArchiveStream, log)
	}

	// The mended copy leads the archive, and serves every job.
	nc, err := nats.Connect(again.nats)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	name := nc.ConnectedServerName()
	deadline := time.Now().Add(apitest.Timeout)
	for leader := ""; leader != name; {
		if time.Now().After(deadline) {
			t.Fatalf("server %s did not become the archive's leader (it is %s)", name, leader)
		}
		_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+natsx.ArchiveStream, []byte(`{"placement":{"preferred":"`+name+`"}}`), 5*time.Second)
		msg, err := nc.Request("$JS.API.STREAM.INFO."+natsx.ArchiveStream, nil, 5*time.Second)
		if err != nil {
			continue
		}
		var info struct {
			Cluster struct{ Leader string } `json:"cluster"`
		}
		if err := json.Unmarshal(msg.Data, &info); err != nil {
			t.Fatal(err)
		}
		leader = info.Cluster.Leader
	}
	missing := 0
	for _, id := range ids {
		if r := a.Do(t, "GET", "/api/v1/jobs/"+id, ""); r.Status != 200 {
			missing++
			t.Errorf("job %s: %d %s", id, r.Status, r.Body)
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d finished jobs not served with the mended copy leading the archive", missing, len(ids))
	}
}

// blockNumber is the number of a JetStream message file, N.blk.
func blockNumber(path string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(path), ".blk"))
	return n
}
