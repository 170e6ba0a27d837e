package natsx

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// leaderElectedSubject is JetStream's advisory that a stream elected a
// leader (+ the stream's name); a server alone never sends it.
const leaderElectedSubject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."

// OnLeaderElected calls fn with the stream's name whenever one of the
// streams named (a bucket by its stream's name, KV_<bucket>) elects a
// leader in the cluster, until the returned function is called. A new
// leader of a stream is where a replica's missing message would show
// (JetStream's catch-up desyncs); fn runs on the connection's delivery
// goroutine and must not block.
func (c *Conn) OnLeaderElected(streams []string, fn func(stream string)) (func(), error) {
	var subs []*nats.Subscription
	unsub := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, name := range streams {
		s, err := c.nc.Subscribe(leaderElectedSubject+name, func(m *nats.Msg) {
			fn(strings.TrimPrefix(m.Subject, leaderElectedSubject))
		})
		if err != nil {
			unsub()
			return nil, err
		}
		subs = append(subs, s)
	}
	return unsub, nil
}

// JobStreams are the streams that hold job records: the jobs bucket's and
// the archive.
var JobStreams = []string{"KV_" + JobsBucket, ArchiveStream}
