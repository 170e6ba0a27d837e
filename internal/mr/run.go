// Package mr is the map-reduce engine a worker runs: a map task reads its
// split, maps, combines and partitions into sorted runs; a reduce task merges
// the runs of its partition and reduces them. Memory is bounded by the sort
// buffer, not by the input: a map spills sorted runs to disk and every merge
// streams.
package mr

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A run is a sequence of records sorted by key. A record is the key's length
// (uvarint), the key, the value's length (uvarint), the value.

// runWriter writes records.
type runWriter struct {
	w   *bufio.Writer
	n   int64 // records
	tmp [binary.MaxVarintLen64]byte
}

func newRunWriter(w io.Writer) *runWriter {
	return &runWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

func (r *runWriter) write(key, val []byte) error {
	r.n++
	n := binary.PutUvarint(r.tmp[:], uint64(len(key)))
	_, _ = r.w.Write(r.tmp[:n])
	_, _ = r.w.Write(key)
	n = binary.PutUvarint(r.tmp[:], uint64(len(val)))
	_, _ = r.w.Write(r.tmp[:n])
	_, err := r.w.Write(val)
	return err
}

func (r *runWriter) flush() error { return r.w.Flush() }

// maxRecord bounds a key or value read back from a run.
const maxRecord = 64 << 20

// runReader reads records; key and val are valid until the next call.
type runReader struct {
	r        *bufio.Reader
	key, val []byte
}

func newRunReader(r io.Reader, size int64) *runReader {
	// A buffer no larger than the run: a reduce of thousands of small
	// runs holds them all open at once.
	return &runReader{r: bufio.NewReaderSize(r, int(min(size, inputReadBuffer)))}
}

// next reads the next record; it returns io.EOF at the end.
func (r *runReader) next() error {
	var err error
	if r.key, err = r.field(r.key); err != nil {
		return err
	}
	if r.val, err = r.field(r.val); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

func (r *runReader) field(buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		return buf, err
	}
	if n > maxRecord {
		return buf, fmt.Errorf("corrupt run: a record field of %d bytes", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(r.r, buf)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return buf, err
}

// source is one sorted stream of records being merged.
type source interface {
	next() error
	record() (key, val []byte)
}

func (r *runReader) record() ([]byte, []byte) { return r.key, r.val }

// merger merges sorted sources by key; equal keys come out in source order.
type merger struct {
	h mergeHeap
}

type mergeItem struct {
	src source
	idx int
}

type mergeHeap []mergeItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	ki, _ := h[i].src.record()
	kj, _ := h[j].src.record()
	if c := bytes.Compare(ki, kj); c != 0 {
		return c < 0
	}
	return h[i].idx < h[j].idx
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// newMerger reads the first record of every source.
func newMerger(srcs []source) (*merger, error) {
	m := &merger{}
	for i, s := range srcs {
		switch err := s.next(); {
		case err == nil:
			m.h = append(m.h, mergeItem{src: s, idx: i})
		case !errors.Is(err, io.EOF):
			return nil, err
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// peek returns the smallest record, or ok false at the end.
func (m *merger) peek() (key, val []byte, ok bool) {
	if len(m.h) == 0 {
		return nil, nil, false
	}
	key, val = m.h[0].src.record()
	return key, val, true
}

// advance moves past the smallest record.
func (m *merger) advance() error {
	switch err := m.h[0].src.next(); {
	case err == nil:
		heap.Fix(&m.h, 0)
	case errors.Is(err, io.EOF):
		heap.Pop(&m.h)
	default:
		return err
	}
	return nil
}

// groups calls fn once per distinct key with an iterator over its values.
// Values not consumed by fn are skipped.
func (m *merger) groups(fn func(key []byte, values func(yield func([]byte) bool)) error) error {
	var key []byte
	var ierr error
	for {
		k, _, ok := m.peek()
		if !ok {
			return nil
		}
		key = append(key[:0], k...)
		values := func(yield func([]byte) bool) {
			for {
				k, v, ok := m.peek()
				if !ok || !bytes.Equal(k, key) {
					return
				}
				more := yield(v)
				if ierr = m.advance(); ierr != nil || !more {
					return
				}
			}
		}
		if err := fn(key, values); err != nil {
			return err
		}
		if ierr != nil {
			return ierr
		}
		for {
			k, _, ok := m.peek()
			if !ok || !bytes.Equal(k, key) {
				break
			}
			if err := m.advance(); err != nil {
				return err
			}
		}
	}
}
