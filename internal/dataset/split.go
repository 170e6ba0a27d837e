package dataset

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// MaxLine bounds the length of one input line.
const MaxLine = 16 << 20

// OpenBlock opens block i of input file f.
type OpenBlock func(ctx context.Context, f job.InputFile, i int) (io.ReadCloser, error)

// Open is the OpenBlock of the stored blocks.
func (s *Store) Open(ctx context.Context, f job.InputFile, i int) (io.ReadCloser, error) {
	return s.open(ctx, f, i, true)
}

// openUncached is Open without the blocks shared by map tasks: a
// download's blocks would only push theirs out.
func (s *Store) openUncached(ctx context.Context, f job.InputFile, i int) (io.ReadCloser, error) {
	return s.open(ctx, f, i, false)
}

func (s *Store) open(ctx context.Context, f job.InputFile, i int, cached bool) (io.ReadCloser, error) {
	// The whole block is read at once, under a deadline of its own: the
	// caller runs the kind's map between reads, for as long as it takes.
	ctx, cancel := context.WithTimeout(ctx, blockReadTimeout)
	defer cancel()
	name := blockName(f.Dataset, f.File, f.Upload, i)
	var b []byte
	var err error
	if cached {
		b, err = s.blocks.get(ctx, name, func(ctx context.Context) ([]byte, error) { return s.readBlock(ctx, name) })
	} else {
		b, err = s.readBlock(ctx, name)
	}
	switch {
	case errors.Is(err, store.ErrDamaged):
		return nil, fmt.Errorf("block %d of file %s of dataset %s: %w; upload the file again", i, f.File, f.Dataset, err)
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("block %d of file %s of dataset %s (was the dataset replaced or deleted while the job ran?): %w", i, f.File, f.Dataset, err)
	case err != nil:
		// A store that did not answer, or a reader that went away (a
		// download given up): no question of the dataset to ask.
		return nil, &job.StoreError{Err: fmt.Errorf("block %d of file %s of dataset %s: %w", i, f.File, f.Dataset, err)}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// blockReadTimeout bounds the read of one block (at most BlockSize bytes).
const blockReadTimeout = 30 * time.Second

// blockAttemptTimeout bounds the first attempt at reading a block. An
// object is read through a consumer that the stream's leader of the moment
// holds: a leader that stops answering without going away (its server
// paused by a stalled VM, a debugger, swapping) holds the read until its
// deadline, though the other servers elect a new leader within seconds. A
// second attempt reads from the new one: the task waits about this long,
// not the whole blockReadTimeout (a word count with one of three servers
// paused took 34 s with one attempt; see TestPausedServer). Each attempt
// has twice the time of the one before, so that a slow link still gets
// most of blockReadTimeout for one read.
var blockAttemptTimeout = 8 * time.Second

// readBlock reads the stored block name in attempts until ctx ends; a
// block that does not exist, or is damaged, is not tried again.
func (s *Store) readBlock(ctx context.Context, name string) ([]byte, error) {
	for wait := blockAttemptTimeout; ; wait *= 2 {
		actx, cancel := context.WithTimeout(ctx, wait)
		b, err := s.Blocks.GetBytes(actx, name)
		cancel()
		if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrDamaged) || ctx.Err() != nil {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadSplit calls fn with every line that starts in one of the pieces, in
// order; a line that starts in a piece is read to its end even past it. It
// returns the bytes and lines read.
func ReadSplit(ctx context.Context, open OpenBlock, files []job.InputFile, split []job.Piece, fn func(job.Record) error) (n, lines int64, err error) {
	for _, p := range split {
		if p.File < 0 || p.File >= len(files) {
			return n, lines, fmt.Errorf("split names file %d of %d", p.File, len(files))
		}
		pn, pl, err := readPiece(ctx, open, files[p.File], p, fn)
		n, lines = n+pn, lines+pl
		if err != nil {
			return n, lines, err
		}
	}
	return n, lines, nil
}

func readPiece(ctx context.Context, open OpenBlock, f job.InputFile, p job.Piece, fn func(job.Record) error) (n, lines int64, err error) {
	if p.Start >= p.End || p.Start < 0 || p.End > f.Size || f.BlockSize <= 0 {
		return 0, 0, nil
	}
	// On a block boundary, the manifest says whether the block before ends
	// a line; without that, start one block early to see its last byte.
	b0 := p.Start / f.BlockSize
	var last byte = '\n'
	if p.Start > 0 && p.Start%f.BlockSize == 0 {
		if int(b0) <= len(f.EndsLine) {
			if f.EndsLine[b0-1] != '1' {
				last = 0
			}
		} else {
			b0--
		}
	}
	if int(b0) >= len(f.Lines) {
		return 0, 0, fmt.Errorf("file %s has %d blocks; piece starts in block %d", f.Name, len(f.Lines), b0)
	}
	blocks := &blockReader{ctx: ctx, open: open, f: f, next: int(b0)}
	defer blocks.Close()
	br := bufio.NewReaderSize(blocks, 64<<10)

	var lineNo int64 // newlines before pos
	for _, c := range f.Lines[:b0] {
		lineNo += c
	}
	skip := p.Start - b0*f.BlockSize
	for skip > 0 {
		b, err := br.Peek(int(min(skip, int64(br.Size()))))
		if len(b) == 0 {
			return 0, 0, unexpectedEnd(f, err)
		}
		lineNo += int64(bytes.Count(b, []byte{'\n'}))
		last = b[len(b)-1]
		_, _ = br.Discard(len(b))
		skip -= int64(len(b))
	}
	pos := p.Start
	var line []byte
	if last != '\n' {
		// The piece starts inside a line that belongs to the split before.
		raw, err := readLine(br, &line)
		pos += int64(len(raw))
		if len(raw) > 0 && raw[len(raw)-1] == '\n' {
			lineNo++
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, lineError(f, lineNo+1, err)
		}
	}
	for pos < p.End {
		if lines%1024 == 0 && ctx.Err() != nil {
			return n, lines, context.Cause(ctx)
		}
		raw, err := readLine(br, &line)
		if len(raw) == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				return n, lines, nil
			}
			return n, lines, lineError(f, lineNo+1, err)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return n, lines, lineError(f, lineNo+1, err)
		}
		text := raw
		if len(text) > 0 && text[len(text)-1] == '\n' {
			text = text[:len(text)-1]
		}
		if len(text) > 0 && text[len(text)-1] == '\r' {
			text = text[:len(text)-1]
		}
		lineNo++
		pos += int64(len(raw))
		n += int64(len(raw))
		lines++
		if err := fn(job.Record{File: f.Name, Line: lineNo, Text: text}); err != nil {
			return n, lines, err
		}
	}
	return n, lines, nil
}

// readLine reads one line with its newline, if any. The result aliases the
// reader's buffer or *buf and is valid until the next call.
func readLine(br *bufio.Reader, buf *[]byte) ([]byte, error) {
	b, err := br.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		return b, err
	}
	*buf = append((*buf)[:0], b...)
	for errors.Is(err, bufio.ErrBufferFull) {
		if len(*buf) > MaxLine {
			return *buf, ErrLineTooLong
		}
		b, err = br.ReadSlice('\n')
		*buf = append(*buf, b...)
	}
	return *buf, err
}

// ErrLineTooLong is the error of a line longer than MaxLine: map tasks
// read their input as lines, and hold a line whole.
var ErrLineTooLong = fmt.Errorf("line longer than %d bytes (16 MiB), the most one input record may be: map tasks read input as lines; put newlines in the file", MaxLine)

func lineError(f job.InputFile, line int64, err error) error {
	return fmt.Errorf("file %s line %d: %w", f.Name, line, err)
}

func unexpectedEnd(f job.InputFile, err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("file %s is shorter than its manifest says: %w", f.Name, err)
}

// blockReader reads a file's blocks one after another from block next on.
type blockReader struct {
	ctx  context.Context
	open OpenBlock
	f    job.InputFile
	next int
	cur  io.ReadCloser
}

func (b *blockReader) Read(p []byte) (int, error) {
	for {
		if b.cur == nil {
			if b.next >= len(b.f.Lines) {
				return 0, io.EOF
			}
			r, err := b.open(b.ctx, b.f, b.next)
			if err != nil {
				return 0, err
			}
			b.cur = r
			b.next++
		}
		n, err := b.cur.Read(p)
		if errors.Is(err, io.EOF) {
			_ = b.cur.Close()
			b.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (b *blockReader) Close() error {
	if b.cur != nil {
		return b.cur.Close()
	}
	return nil
}
