package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// ReadFile returns file of dataset ds and a reader of its bytes, a block
// at a time as the reader asks for them (one block held at once, not
// shared with map tasks' reads). A block that cannot be read ends the
// reader with an error naming it; a damaged one says to upload the file
// again.
func (s *Store) ReadFile(ctx context.Context, ds, file string) (File, io.ReadCloser, error) {
	return s.ReadFileFrom(ctx, ds, file, 0)
}

// ReadFileFrom is ReadFile from byte offset on (a download resumed), or,
// for an offset below 0, the file's last -offset bytes; the blocks before
// are not read. An offset past the file's end reads nothing.
func (s *Store) ReadFileFrom(ctx context.Context, ds, file string, offset int64) (File, io.ReadCloser, error) {
	d, err := s.Get(ctx, ds)
	if err != nil {
		return File{}, nil, err
	}
	i := slices.IndexFunc(d.Files, func(f File) bool { return f.Name == file })
	if i < 0 {
		return File{}, nil, fileNotFound(ds, file)
	}
	f := d.Files[i]
	in := job.InputFile{Name: f.Name, Dataset: ds, File: f.Name, Upload: f.Upload, Size: f.Size, BlockSize: f.BlockSize, Lines: f.Lines, EndsLine: f.EndsLine}
	if offset < 0 {
		offset = max(f.Size+offset, 0)
	}
	br := &blockReader{ctx: ctx, open: s.openUncached, f: in}
	r := &fileReader{r: br, ds: ds, file: file}
	if offset > 0 && f.BlockSize > 0 {
		// Every block but the last holds BlockSize bytes.
		br.next = int(min(offset/f.BlockSize, int64(len(f.Lines))))
		if skip := offset - int64(br.next)*f.BlockSize; skip > 0 && br.next < len(f.Lines) {
			if _, err := io.CopyN(io.Discard, r, skip); err != nil {
				r.Close()
				return File{}, nil, err
			}
		}
	}
	return f, r, nil
}

// fileReader is a blockReader whose errors say what they mean to whoever
// asked for the file (the API's codes).
type fileReader struct {
	r        *blockReader
	ds, file string
}

func (f *fileReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, store.ErrDamaged):
		err = job.Errorf(job.EConflict, "%v", err)
	case errors.Is(err, store.ErrNotFound):
		err = job.Errorf(job.ENotFound, "file %s of dataset %s was deleted or replaced while it was read: read it again", f.file, f.ds)
	default:
		err = unavailable(err)
	}
	return n, err
}

func (f *fileReader) Close() error { return f.r.Close() }

// DeleteFile removes file from dataset ds, with its blocks; the dataset
// stays, with its other files (none, it may be).
func (s *Store) DeleteFile(ctx context.Context, ds, file string) error {
	if err := job.ValidName("dataset", ds); err != nil {
		return err
	}
	for attempt := 0; attempt < 100; attempt++ {
		h, _, err := s.head(ctx, ds, false)
		if err != nil {
			return err
		}
		var f File
		var rev uint64
		entry := false
		if h.Gen != "" {
			e, err := s.KV.Get(ctx, fileKey(ds, h.Gen, file))
			switch {
			case err == nil:
				if err := json.Unmarshal(e.Value, &f); err != nil {
					return fmt.Errorf("decode file %s of dataset %s: %w", file, ds, err)
				}
				rev, entry = e.Revision, true
			case !errors.Is(err, store.ErrNotFound):
				return unavailable(fmt.Errorf("read file %s of dataset %s: %w", file, ds, err))
			}
		}
		if !entry {
			// A file of an earlier version's whole manifest, or none.
			i := slices.IndexFunc(h.Files, func(g File) bool { return g.Name == file })
			if i < 0 {
				return fileNotFound(ds, file)
			}
			f = h.Files[i]
			if err := s.updateHead(ctx, ds, func(h *head) {
				h.Files = slices.DeleteFunc(h.Files, func(g File) bool { return g.Name == file })
				h.UpdatedAt = time.Now().UTC()
			}); err != nil {
				return unavailable(fmt.Errorf("delete file %s of dataset %s: %w", file, ds, err))
			}
			s.deleteBlocks(ds, f.Name, f.Upload, len(f.Lines))
			return nil
		}
		// The count goes down first: a read of the files that finds fewer
		// than the head counts is refused as a part of them (manifest), so
		// an entry gone with its count left would make the dataset
		// unreadable, while a count one short is harmless. The head's
		// time says when the dataset last changed.
		counted := false
		if err := s.updateHead(ctx, ds, func(h *head) {
			if counted = !h.Large && h.Count > 0; counted {
				h.Count--
			}
			h.UpdatedAt = time.Now().UTC()
		}); err != nil {
			return unavailable(fmt.Errorf("delete file %s of dataset %s: %w", file, ds, err))
		}
		err = s.KV.Delete(ctx, fileKey(ds, h.Gen, file), rev)
		if err != nil && counted {
			_ = s.updateHead(ctx, ds, func(h *head) {
				if !h.Large {
					h.Count++
				}
			})
		}
		if errors.Is(err, store.ErrConflict) {
			continue // uploaded again meanwhile: that upload is the one deleted
		}
		if err != nil {
			return unavailable(fmt.Errorf("delete file %s of dataset %s: %w", file, ds, err))
		}
		s.deleteBlocks(ds, f.Name, f.Upload, len(f.Lines))
		return nil
	}
	return unavailable(fmt.Errorf("delete file %s of dataset %s: too many concurrent changes", file, ds))
}

func fileNotFound(ds, file string) error {
	return job.Errorf(job.ENotFound, "dataset %s has no file %q", ds, file)
}
