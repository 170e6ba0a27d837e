package natsx

import (
	"testing"
	"time"
)

// A server hears when a stream of job records elects a leader in the
// cluster (a step-down here), and of those streams only.
func TestLeaderElectionsOfJobStreamsAreHeard(t *testing.T) {
	conns, _ := startCluster(t, "elections")
	heard := make(chan string, 16)
	unsub, err := conns[1].OnLeaderElected(JobStreams, func(stream string) { heard <- stream })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	for _, stream := range []string{TasksStream, ArchiveStream} {
		if _, err := conns[0].nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 10*time.Second); err != nil {
			t.Fatalf("step down %s's leader: %v", stream, err)
		}
	}
	select {
	case stream := <-heard:
		if stream != ArchiveStream {
			t.Fatalf("heard an election of %s; want %s's alone", stream, ArchiveStream)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no election of %s heard after its leader stepped down", ArchiveStream)
	}
}
