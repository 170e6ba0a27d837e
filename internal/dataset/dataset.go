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
	"slices"
	"strconv"
	"strings"
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
	// FileCount counts the dataset's files (0 in the answer to an upload
	// into a dataset of more than MaxListedFiles files, which does not
	// read the others).
	FileCount int `json:"file_count,omitempty"`
	// Partial marks a manifest that lists part of the files of a dataset
	// of more than MaxListedFiles: the answer to an upload lists the
	// stored file alone (Size is its size), a list of datasets none (Size
	// and FileCount are the dataset's). A GET of the dataset lists every
	// file.
	Partial bool `json:"partial,omitempty"`
}

// MaxListedFiles is the most files the answer to an upload, or a list of
// datasets, lists of one dataset: reading every file's entry at each upload
// made uploading n files cost n², and a list of datasets held every file
// of every one.
const MaxListedFiles = 100

// head is what the store keeps under a dataset's name; each file is an
// entry of its own (fileKey), so that an upload writes one small entry
// whatever the dataset's size. A manifest rewritten whole at each upload
// bounded a dataset to about 6,700 files, and uploading that many took
// minutes.
type head struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at,omitempty"`
	// Gen is part of the keys of the dataset's files: a dataset deleted
	// and made again has another, so that an entry left by an upload that
	// raced the deletion is not one of its files.
	Gen string `json:"gen,omitempty"`
	// Count counts the dataset's files while it has at most
	// MaxListedFiles; Large is set once it has more: the answer to an
	// upload then lists the stored file alone, with no read of the others
	// (JetStream's reads of many keys cost as many as there are).
	Count int  `json:"count,omitempty"`
	Large bool `json:"large,omitempty"`
	// Files are those of a dataset stored whole under its name, by a
	// version before files had entries of their own, less those uploaded
	// again since (an entry wins over a file listed here).
	Files []File `json:"files,omitempty"`
}

// filesPrefix starts the keys of files' entries: no dataset name starts
// with '=', nor holds one, so the key of a file is never a dataset's.
const filesPrefix = "=f."

// keyPart is name as one part of a key: its dots, which would split it,
// become '=', and every other byte a key cannot hold (a file name's
// spaces, '=', letters beyond ASCII…) '/' and two hex digits. A dataset's
// name, and file names before they took more than letters, digits, '.',
// '_' and '-', have the keys they always had.
func keyPart(name string) string {
	plain := true
	for i := 0; i < len(name); i++ {
		if c := name[i]; !keyByte(c) && c != '.' {
			plain = false
			break
		}
	}
	if plain {
		return strings.ReplaceAll(name, ".", "=")
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(name)+16)
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.':
			b = append(b, '=')
		case keyByte(c):
			b = append(b, c)
		default:
			b = append(b, '/', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

// keyByte reports whether c stands for itself in a key part.
func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// filesOf is the prefix of the keys of the files of generation gen of
// dataset ds.
func filesOf(ds, gen string) string { return filesPrefix + keyPart(ds) + "." + gen + "." }

func fileKey(ds, gen, file string) string { return filesOf(ds, gen) + keyPart(file) }

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

	// blocks shares the blocks map tasks read at once or one after the
	// other (blockcache.go).
	blocks blockCache
}

// blockName names block i of an upload of a file.
func blockName(ds, file, upload string, i int) string {
	return ds + "/" + file + "/" + upload + "/" + strconv.Itoa(i)
}

// MaxUploads bounds the uploads a process reads at once: each holds a
// block's buffer (4 MiB) while its client sends, and 300 stalled uploads
// held 930 MB of a server. Those beyond wait for a slot, their bodies
// unread.
const MaxUploads = 16

var uploadSlots = make(chan struct{}, MaxUploads)

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
	if err := job.ValidFileName(file); err != nil {
		return File{}, err
	}
	bs := s.BlockSize
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	f := File{Name: file, Upload: newUpload(), BlockSize: bs, Lines: []int64{}}
	select {
	case uploadSlots <- struct{}{}:
		defer func() { <-uploadSlots }()
	case <-ctx.Done():
		return File{}, unavailable(fmt.Errorf("upload of %s/%s waited for one of the %d uploads read at once: %w", ds, file, MaxUploads, ctx.Err()))
	}
	buf := getBlockBuf(bs)
	defer blockBufs.Put(&buf)
	for i := 0; ; i++ {
		n, err := io.ReadFull(r, buf)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			// The client's body failed (it went away, or stalled): what it
			// sent of this block is not stored, nor are the blocks before.
			s.deleteBlocks(ds, file, f.Upload, i)
			return File{}, job.Errorf(job.EInvalid, "reading the upload of %s/%s failed after %d bytes: %v", ds, file, f.Size+int64(n), err)
		}
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
		if err != nil {
			break // io.EOF or io.ErrUnexpectedEOF: the end
		}
	}
	f.UploadedAt = time.Now().UTC()
	old, err := s.putEntry(ctx, ds, f)
	if err != nil {
		s.deleteBlocks(ds, file, f.Upload, len(f.Lines))
		return File{}, err
	}
	if old != nil {
		s.deleteBlocks(ds, old.Name, old.Upload, len(old.Lines))
	}
	return f, nil
}

// putEntry stores f as a file of dataset ds, made if need be, and returns
// the file it replaced, if any.
func (s *Store) putEntry(ctx context.Context, ds string, f File) (*File, error) {
	data, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 100; attempt++ {
		h, _, err := s.head(ctx, ds, true)
		if err != nil {
			return nil, err
		}
		key := fileKey(ds, h.Gen, f.Name)
		var old *File
		added := false
		e, err := s.KV.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			_, err = s.KV.Create(ctx, key, data)
			added = true
		case err != nil:
			return nil, unavailable(fmt.Errorf("read file %s of dataset %s: %w", f.Name, ds, err))
		default:
			var prev File
			if json.Unmarshal(e.Value, &prev) == nil {
				old = &prev
			}
			_, err = s.KV.Update(ctx, key, data, e.Revision)
		}
		if errors.Is(err, store.ErrConflict) {
			continue // another upload of the same file: the last one wins
		}
		if err != nil {
			return nil, unavailable(fmt.Errorf("write file %s of dataset %s: %w", f.Name, ds, err))
		}
		i := slices.IndexFunc(h.Files, func(g File) bool { return g.Name == f.Name })
		if added && i < 0 && !h.Large {
			// Counted as well as it can be: a count short by one (a
			// crash between the writes) only makes an answer list more.
			_ = s.updateHead(ctx, ds, func(h *head) {
				h.Count++
				h.Large = h.Count > MaxListedFiles
			})
		}
		if i >= 0 {
			// A file of the dataset's earlier whole manifest: the entry
			// hides it; it leaves the manifest as well as it can.
			if old == nil {
				prev := h.Files[i]
				old = &prev
			}
			_ = s.updateHead(ctx, ds, func(h *head) {
				h.Files = slices.DeleteFunc(h.Files, func(g File) bool { return g.Name == f.Name })
			})
		}
		// A deletion of the dataset that raced the upload leaves the entry
		// out of the dataset: it goes, and the upload did not happen. A
		// head that cannot be read now is taken as there: the entry is
		// written, and undoing it would lose the file it replaced.
		now, _, err := s.head(ctx, ds, false)
		if err == nil && now.Gen != h.Gen || job.ErrorCode(err) == job.ENotFound {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = s.KV.Delete(dctx, key, 0)
			return nil, job.Errorf(job.EConflict, "dataset %s was deleted while file %s was being uploaded into it; upload the file again", ds, f.Name)
		}
		return old, nil
	}
	return nil, unavailable(fmt.Errorf("write file %s of dataset %s: too many concurrent changes", f.Name, ds))
}

// head reads the head of dataset ds. With create, it makes the dataset
// when there is none, and gives the head of an earlier version a Gen.
func (s *Store) head(ctx context.Context, ds string, create bool) (head, uint64, error) {
	for attempt := 0; attempt < 100; attempt++ {
		e, err := s.KV.Get(ctx, ds)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if !create {
				return head{}, 0, notFound(ds)
			}
			h := head{Name: ds, CreatedAt: time.Now().UTC(), Gen: newUpload()}
			data, err := json.Marshal(h)
			if err != nil {
				return head{}, 0, err
			}
			rev, err := s.KV.Create(ctx, ds, data)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if err != nil {
				return head{}, 0, unavailable(fmt.Errorf("write dataset %s: %w", ds, err))
			}
			return h, rev, nil
		case err != nil:
			return head{}, 0, unavailable(fmt.Errorf("read dataset %s: %w", ds, err))
		}
		var h head
		if err := json.Unmarshal(e.Value, &h); err != nil {
			return head{}, 0, fmt.Errorf("decode dataset %s: %w", ds, err)
		}
		if h.Gen != "" || !create {
			return h, e.Revision, nil
		}
		h.Gen = newUpload()
		h.Count = len(h.Files)
		h.Large = h.Count > MaxListedFiles
		data, err := json.Marshal(h)
		if err != nil {
			return head{}, 0, err
		}
		rev, err := s.KV.Update(ctx, ds, data, e.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return head{}, 0, unavailable(fmt.Errorf("write dataset %s: %w", ds, err))
		}
		return h, rev, nil
	}
	return head{}, 0, unavailable(fmt.Errorf("write dataset %s: too many concurrent changes", ds))
}

// updateHead applies fn to the head of dataset ds with a compare-and-set.
func (s *Store) updateHead(ctx context.Context, ds string, fn func(*head)) error {
	for attempt := 0; attempt < 100; attempt++ {
		h, rev, err := s.head(ctx, ds, false)
		if err != nil {
			return err
		}
		fn(&h)
		data, err := json.Marshal(h)
		if err != nil {
			return err
		}
		_, err = s.KV.Update(ctx, ds, data, rev)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return unavailable(fmt.Errorf("write dataset %s: too many concurrent changes", ds))
}

// Get returns the manifest of dataset name.
func (s *Store) Get(ctx context.Context, name string) (Dataset, error) {
	if err := job.ValidName("dataset", name); err != nil {
		return Dataset{}, err
	}
	return s.manifest(ctx, name)
}

// Answer is the answer to an upload of f into dataset ds: its manifest,
// or, for a dataset of more than MaxListedFiles files or one whose files
// cannot be read now, f alone (Partial).
func (s *Store) Answer(ctx context.Context, ds string, f File) (Dataset, error) {
	h, _, err := s.head(ctx, ds, false)
	if err != nil {
		return Dataset{}, err
	}
	alone := Dataset{Name: ds, Files: []File{f}, Size: f.Size, CreatedAt: h.CreatedAt, UpdatedAt: f.UploadedAt, Partial: true}
	if h.Large {
		return alone, nil
	}
	// The listing is the answer's courtesy: it waits a few seconds, not
	// the upload's client.
	lctx, cancel := context.WithTimeout(ctx, answerListTimeout)
	defer cancel()
	d, err := s.manifest(lctx, ds)
	if job.ErrorCode(err) == job.EUnavailable {
		// The file is stored: the upload is answered as done, with the
		// file alone, not refused (a client told it failed would be
		// wrong).
		return alone, nil
	}
	return d, err
}

// answerListTimeout bounds the read of the files listed in the answer to
// an upload.
const answerListTimeout = 5 * time.Second

// manifest reads the manifest of dataset ds: its head and the entries of
// its files.
func (s *Store) manifest(ctx context.Context, ds string) (Dataset, error) {
	h, _, err := s.head(ctx, ds, false)
	if err != nil {
		return Dataset{}, err
	}
	var entries []store.Entry
	if h.Gen != "" {
		if entries, err = s.KV.Entries(ctx, filesOf(ds, h.Gen)); err != nil {
			return Dataset{}, unavailable(fmt.Errorf("read the files of dataset %s: %w", ds, err))
		}
	}
	d, err := assemble(h, entries)
	if err != nil {
		return Dataset{}, err
	}
	// The head counts the files (or fewer, after a crash between an
	// entry's write and the count's): a read of fewer is a part of them,
	// and a job given it would count a part of its input, silently.
	if len(d.Files) < h.Count {
		return Dataset{}, unavailable(fmt.Errorf("read %d of the %d files of dataset %s: the store answered with a part of them", len(d.Files), h.Count, ds))
	}
	return d, nil
}

// assemble makes the manifest of the dataset of head h from the entries of
// its files.
func assemble(h head, entries []store.Entry) (Dataset, error) {
	files := make(map[string]File, len(h.Files)+len(entries))
	for _, f := range h.Files {
		files[f.Name] = f
	}
	for _, e := range entries {
		var f File
		if err := json.Unmarshal(e.Value, &f); err != nil {
			return Dataset{}, fmt.Errorf("decode an entry of dataset %s (%s): %w", h.Name, e.Key, err)
		}
		files[f.Name] = f
	}
	d := Dataset{Name: h.Name, Files: make([]File, 0, len(files)), CreatedAt: h.CreatedAt, UpdatedAt: h.UpdatedAt}
	if d.UpdatedAt.Before(d.CreatedAt) {
		d.UpdatedAt = d.CreatedAt
	}
	for _, f := range files {
		d.Files = append(d.Files, f)
		d.Size += f.Size
		if f.UploadedAt.After(d.UpdatedAt) {
			d.UpdatedAt = f.UploadedAt
		}
	}
	slices.SortFunc(d.Files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	d.FileCount = len(d.Files)
	return d, nil
}

// List returns every dataset, by name; those of more than MaxListedFiles
// files without their files (Partial). It reads the whole bucket at once,
// heads and files: a read per dataset costs a consumer each, which in a
// cluster takes a round of its own.
func (s *Store) List(ctx context.Context) ([]Dataset, error) {
	all, err := s.KV.Entries(ctx, "")
	if err != nil {
		return nil, unavailable(fmt.Errorf("list datasets: %w", err))
	}
	heads := map[string]head{}
	files := map[string][]store.Entry{} // by filesOf(dataset, generation)
	for _, e := range all {
		if strings.HasPrefix(e.Key, filesPrefix) {
			prefix := e.Key[:strings.LastIndexByte(e.Key, '.')+1]
			files[prefix] = append(files[prefix], e)
			continue
		}
		var h head
		if err := json.Unmarshal(e.Value, &h); err != nil {
			return nil, fmt.Errorf("decode dataset %s: %w", e.Key, err)
		}
		h.Name = e.Key
		heads[e.Key] = h
	}
	out := make([]Dataset, 0, len(heads))
	for name, h := range heads {
		var entries []store.Entry
		if h.Gen != "" {
			entries = files[filesOf(name, h.Gen)]
		}
		d, err := assemble(h, entries)
		if err != nil {
			return nil, err
		}
		if len(d.Files) > MaxListedFiles {
			d.Files, d.Partial = []File{}, true
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Dataset) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Delete removes dataset name, its files' entries and their blocks.
func (s *Store) Delete(ctx context.Context, name string) error {
	h, _, err := s.head(ctx, name, false)
	if err != nil {
		return err
	}
	d, err := s.manifest(ctx, name)
	if err != nil {
		return err
	}
	if err := s.KV.Delete(ctx, name, 0); err != nil {
		return unavailable(fmt.Errorf("delete dataset %s: %w", name, err))
	}
	// The dataset is gone with its head: what is left below only takes
	// room, as far as it could not be removed.
	if h.Gen != "" {
		_ = s.KV.DeletePrefix(ctx, filesOf(name, h.Gen))
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
