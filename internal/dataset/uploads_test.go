package dataset_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// heldBody is an upload's body that says when it is first read and then
// sends its bytes only once released.
type heldBody struct {
	started chan<- struct{}
	release <-chan struct{}
	reading *atomic.Int32 // bodies being read at once
	most    *atomic.Int32 // the most seen
	once    sync.Once
	sent    bool
}

func (h *heldBody) Read(p []byte) (int, error) {
	h.once.Do(func() {
		n := h.reading.Add(1)
		for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
		}
		h.started <- struct{}{}
		<-h.release
	})
	if h.sent {
		h.reading.Add(-1)
		return 0, io.EOF
	}
	h.sent = true
	return copy(p, "a line\n"), nil
}

// Uploads are read at most dataset.MaxUploads at once: each holds a 4 MiB
// buffer while its client sends, and 300 stalled uploads held 930 MB of a
// server. One beyond waits, its body unread, until one of them ends.
func TestUploadsReadAtOnceAreBounded(t *testing.T) {
	s := &dataset.Store{KV: memstore.NewKV(), Blocks: memstore.NewBlobs()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var reading, most atomic.Int32
	started := make(chan struct{}, dataset.MaxUploads+1)
	releases := make([]chan struct{}, dataset.MaxUploads+1)
	errs := make(chan error, dataset.MaxUploads+1)
	upload := func(i int) {
		releases[i] = make(chan struct{})
		body := &heldBody{started: started, release: releases[i], reading: &reading, most: &most}
		go func() {
			_, err := s.PutFile(ctx, "d", fmt.Sprintf("f%d.txt", i), body)
			errs <- err
		}()
	}
	for i := range dataset.MaxUploads {
		upload(i)
	}
	for range dataset.MaxUploads {
		<-started
	}
	upload(dataset.MaxUploads) // one more, while every slot is held
	select {
	case <-started:
		t.Fatalf("an upload was read with %d others held", dataset.MaxUploads)
	case <-time.After(200 * time.Millisecond): // a wait that is not read has no event to await
	}
	close(releases[0])
	<-started // the one more, now read
	for i := 1; i <= dataset.MaxUploads; i++ {
		close(releases[i])
	}
	for range dataset.MaxUploads + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := most.Load(); m > dataset.MaxUploads {
		t.Fatalf("%d uploads were read at once, more than %d", m, dataset.MaxUploads)
	}
}
