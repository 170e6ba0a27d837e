package natsx

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// QueueCeiling publishes n messages to a file-backed work-queue stream
// and consumes and acks them with a pull consumer, as the cluster's tasks
// are, on an embedded server with its data in dir, and returns messages per
// second for the whole round: the ceiling of the cluster's task rate,
// which the benchmark prints beside it.
func QueueCeiling(ctx context.Context, dir string, n int) (float64, error) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, err
	}
	defer func() { _ = emb.Stop(context.Background()) }()
	c, err := emb.Connect("bench")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	js, err := jetstream.New(c.nc)
	if err != nil {
		return 0, err
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return 0, err
	}
	payload := []byte(`{"job":"noop_01jd0000000000000000000000","kind":"noop","partition":1234,"partitions":10000}`)
	start := time.Now()
	done := make(chan struct{})
	var got int
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		got++
		if got == n {
			close(done)
		}
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	for i := range n {
		if _, err := js.PublishAsync(fmt.Sprintf("raw.%d", i%16), payload); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
