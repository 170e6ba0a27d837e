// Package dataset stores the input of jobs: named datasets of files in the
// JetStream object store, cut into blocks so that a map task can start
// reading in the middle of a file, and the manifest of each dataset in a KV
// bucket. It also reads a job's splits back as lines.
package dataset

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/mrcluster/mrcluster/internal/flags"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// DefaultBlockSize is the size of a stored block of a file.
const DefaultBlockSize = 4 << 20

// Dataset is the manifest of a dataset.
type Dataset struct {
	Name      string    `json:"name"`
	Files     []File    `json:"files"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// File is one file of a dataset.
type File struct {
	Name      string  `json:"name"`
	Size      int64   `json:"size"`
	Upload    string  `json:"upload"`
	BlockSize int64   `json:"block_size"`
	Lines     []int64 `json:"lines"` // newlines per block
	// EndsLine has a '1' for each block whose last byte is a newline, a
	// '0' otherwise: a split starting on a block boundary need not read
	// the block before to know whether a line starts there.
	EndsLine   string    `json:"ends_line"`
	UploadedAt time.Time `json:"uploaded_at"`
}

// Store reads and writes datasets.
type Store struct {
	KV     store.KV
	Blocks store.Blobs
	// BlockSize is the size of the blocks new files are cut into.
	BlockSize int64
	// MaxFileSize bounds one uploaded file; 0 means no bound.
	MaxFileSize int64
}

// blockName names block i of an upload of a file.
func blockName(ds, file, upload string, i int) string {
	return ds + "/" + file + "/" + upload + "/" + strconv.Itoa(i)
}

// blockBufs holds the buffers uploads read blocks into, for the next
// upload: a dataset of many small files allocated a whole block per file
// (10 GB for 1 GiB in 2,600 files).
var blockBufs sync.Pool

func getBlockBuf(size int64) []byte {
	if b, ok := blockBufs.Get().(*[]byte); ok && int64(cap(*b)) >= size {
		return (*b)[:size]
	}
	return make([]byte, size)
}

// PutFile stores the content of r as file in dataset ds, replacing a file of
// that name, and creates the dataset if needed. The new content becomes
// visible at once and whole, when every block is stored.
func (s *Store) PutFile(ctx context.Context, ds, file string, r io.Reader) (File, error) {
	if err := job.ValidName("dataset", ds); err != nil {
		return File{}, err
	}
	if err := job.ValidName("file", file); err != nil {
		return File{}, err
	}
	bs := s.BlockSize
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	f := File{Name: file, Upload: newUpload(), BlockSize: bs, Lines: []int64{}}
	buf := getBlockBuf(bs)
	defer blockBufs.Put(&buf)
	for i := 0; ; i++ {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if s.MaxFileSize > 0 && f.Size+int64(n) > s.MaxFileSize {
				s.deleteBlocks(ds, file, f.Upload, i)
				return File{}, job.Errorf(job.ETooLarge, "file %s of dataset %s is larger than the limit of %d bytes (--%s)", file, ds, s.MaxFileSize, flags.MaxFileMB)
			}
			if perr := s.Blocks.Put(ctx, blockName(ds, file, f.Upload, i), bytes.NewReader(buf[:n])); perr != nil {
				s.deleteBlocks(ds, file, f.Upload, i)
				return File{}, unavailable(fmt.Errorf("store block %d of %s/%s: %w", i, ds, file, perr))
			}
			f.Size += int64(n)
			f.Lines = append(f.Lines, int64(bytes.Count(buf[:n], []byte{'\n'})))
			if buf[n-1] == '\n' {
				f.EndsLine += "1"
			} else {
				f.EndsLine += "0"
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			s.deleteBlocks(ds, file, f.Upload, i+1)
			return File{}, job.Errorf(job.EInvalid, "reading the upload of %s/%s failed after %d bytes: %v", ds, file, f.Size, err)
		}
	}
	f.UploadedAt = time.Now().UTC()
	var old *File
	err := s.update(ctx, ds, true, func(d *Dataset) error {
		old = nil
		for i := range d.Files {
			if d.Files[i].Name == file {
				prev := d.Files[i]
				old = &prev
				d.Files[i] = f
				return nil
			}
		}
		d.Files = append(d.Files, f)
		sort.Slice(d.Files, func(i, j int) bool { return d.Files[i].Name < d.Files[j].Name })
		return nil
	})
	if err != nil {
		s.deleteBlocks(ds, file, f.Upload, len(f.Lines))
		return File{}, err
	}
	if old != nil {
		s.deleteBlocks(ds, old.Name, old.Upload, len(old.Lines))
	}
	return f, nil
}

// update applies fn to the manifest of ds with a compare-and-set, creating
// it when create is set.
func (s *Store) update(ctx context.Context, ds string, create bool, fn func(*Dataset) error) error {
	for attempt := 0; attempt < 100; attempt++ {
		var d Dataset
		var rev uint64
		e, err := s.KV.Get(ctx, ds)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if !create {
				return notFound(ds)
			}
			now := time.Now().UTC()
			d = Dataset{Name: ds, CreatedAt: now}
		case err != nil:
			return unavailable(fmt.Errorf("read dataset %s: %w", ds, err))
		default:
			if err := json.Unmarshal(e.Value, &d); err != nil {
				return fmt.Errorf("decode dataset %s: %w", ds, err)
			}
			rev = e.Revision
		}
		if err := fn(&d); err != nil {
			return err
		}
		d.UpdatedAt = time.Now().UTC()
		d.Size = 0
		for _, f := range d.Files {
			d.Size += f.Size
		}
		data, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = s.KV.Create(ctx, ds, data)
		} else {
			_, err = s.KV.Update(ctx, ds, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return unavailable(fmt.Errorf("write dataset %s: %w", ds, err))
		}
	}
	return unavailable(fmt.Errorf("write dataset %s: too many concurrent changes", ds))
}

// Get returns the manifest of dataset name.
func (s *Store) Get(ctx context.Context, name string) (Dataset, error) {
	if err := job.ValidName("dataset", name); err != nil {
		return Dataset{}, err
	}
	e, err := s.KV.Get(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return Dataset{}, notFound(name)
	}
	if err != nil {
		return Dataset{}, unavailable(fmt.Errorf("read dataset %s: %w", name, err))
	}
	var d Dataset
	if err := json.Unmarshal(e.Value, &d); err != nil {
		return Dataset{}, fmt.Errorf("decode dataset %s: %w", name, err)
	}
	return d, nil
}

// List returns every dataset, by name.
func (s *Store) List(ctx context.Context) ([]Dataset, error) {
	keys, err := s.KV.Keys(ctx)
	if err != nil {
		return nil, unavailable(fmt.Errorf("list datasets: %w", err))
	}
	out := []Dataset{}
	for _, k := range keys {
		d, err := s.Get(ctx, k)
		if job.ErrorCode(err) == job.ENotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes dataset name and its blocks.
func (s *Store) Delete(ctx context.Context, name string) error {
	d, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	if err := s.KV.Delete(ctx, name, 0); err != nil {
		return unavailable(fmt.Errorf("delete dataset %s: %w", name, err))
	}
	for _, f := range d.Files {
		s.deleteBlocks(name, f.Name, f.Upload, len(f.Lines))
	}
	return nil
}

// deleteBlocks removes the first n blocks of an upload, as far as it can: a
// block left behind only takes space.
func (s *Store) deleteBlocks(ds, file, upload string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		_ = s.Blocks.Delete(ctx, blockName(ds, file, upload, i))
	}
}

// Resolve pins the files of the named datasets for a job.
func (s *Store) Resolve(ctx context.Context, names []string) ([]job.InputFile, error) {
	var out []job.InputFile
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return nil, job.Errorf(job.EInvalid, "input names dataset %q twice", n)
		}
		seen[n] = true
		d, err := s.Get(ctx, n)
		if job.ErrorCode(err) == job.ENotFound {
			return nil, job.Errorf(job.EInvalid, "input: dataset %q does not exist; upload it first (PUT /api/v1/datasets/%s or mrcluster dataset put %s FILE…)", n, n, n)
		}
		if err != nil {
			return nil, err
		}
		for _, f := range d.Files {
			name := f.Name
			if len(names) > 1 {
				name = d.Name + "/" + f.Name
			}
			out = append(out, job.InputFile{Name: name, Dataset: d.Name, File: f.Name, Upload: f.Upload, Size: f.Size, BlockSize: f.BlockSize, Lines: f.Lines, EndsLine: f.EndsLine})
		}
	}
	return out, nil
}

func newUpload() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func notFound(name string) error {
	return job.Errorf(job.ENotFound, "dataset %q not found", name)
}

func unavailable(err error) error {
	return job.Unavailable("data store", err)
}
