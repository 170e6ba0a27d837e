package job

import (
	"bytes"
	"context"
	"iter"
	"strconv"
)

// Phase is a stage of a job: its maps, then, for a job that reads data,
// its reduces. A job of a kind that reads no data is map-only: its
// partitions' values are reduced by the coordinator.
type Phase string

// The phases, in order.
const (
	PhaseMap    Phase = "map"
	PhaseReduce Phase = "reduce"
)

// Record is one line of input handed to a kind's map function.
type Record struct {
	// File is the name the line's file was uploaded under ("dataset/file"
	// when the job reads more than one dataset).
	File string
	// Line is the line's number in its file, from 1.
	Line int64
	// Text is the line without its newline. It is only valid during the
	// call: copy it to keep it.
	Text []byte
}

// Emit hands one intermediate key and value to the framework. The framework
// copies both, so the caller may reuse their memory.
type Emit func(key, value []byte)

// RecordError is a map's error that names its record itself (a kind that
// maps records in batches): it is not located again at the record whose
// call returned it.
type RecordError struct{ Err error }

func (e *RecordError) Error() string { return e.Err.Error() }
func (e *RecordError) Unwrap() error { return e.Err }

// RecordMapFunc maps one input record to intermediate pairs.
type RecordMapFunc func(ctx context.Context, rec Record, emit Emit) error

// CombineFunc merges two values of the same key into one; it must be
// associative and commutative. It may return a, changed in place.
type CombineFunc func(key, a, b []byte) []byte

// KeyReduceFunc reduces every intermediate value of one key to the key's
// output value.
type KeyReduceFunc func(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error)

// FormatFunc turns an output key and value into one line of output, without
// the newline.
type FormatFunc func(key, value []byte) []byte

// Counters count what a job read and wrote.
type Counters struct {
	InputBytes          int64 `json:"input_bytes"`
	InputRecords        int64 `json:"input_records"`
	MapOutputRecords    int64 `json:"map_output_records"`
	ReduceOutputRecords int64 `json:"reduce_output_records"`
}

// Add adds o to c.
func (c *Counters) Add(o Counters) {
	c.InputBytes += o.InputBytes
	c.InputRecords += o.InputRecords
	c.MapOutputRecords += o.MapOutputRecords
	c.ReduceOutputRecords += o.ReduceOutputRecords
}

// InputFile is one file a job reads, pinned to the upload it had when the
// job was submitted.
type InputFile struct {
	// Name is the file's name in Record.File.
	Name    string `json:"name"`
	Dataset string `json:"dataset"`
	File    string `json:"file"`
	Upload  string `json:"upload"`
	Size    int64  `json:"size"`
	// BlockSize and Lines locate a byte offset: block i holds bytes
	// [i*BlockSize, (i+1)*BlockSize) and Lines[i] newlines.
	BlockSize int64   `json:"block_size"`
	Lines     []int64 `json:"lines"`
	EndsLine  string  `json:"ends_line,omitempty"`
}

// Piece is a byte range of one input file.
type Piece struct {
	File  int   `json:"file"` // index in the job's Files
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// DefaultSplitBytes is the input a map task reads at most when a data
// job leaves its partition count to the cluster (DefaultPartitions).
const DefaultSplitBytes = 64 << 20

// DefaultPartitions is the partition count of a data job that gives none,
// as Hadoop and Spark choose their maps from the input's blocks: a split
// of at most DefaultSplitBytes each, and at least one per worker (a small
// input is still read by every worker), within maxPartitions and the
// shuffle's bound for reducers.
func DefaultPartitions(inputBytes int64, workers, reducers, maxPartitions int) int {
	if inputBytes <= 0 {
		return 1
	}
	splits := (inputBytes + DefaultSplitBytes - 1) / DefaultSplitBytes
	m := min(max(splits, int64(workers)), inputBytes, int64(maxPartitions), int64(MaxShuffleRuns/max(reducers, 1)))
	return int(max(m, 1))
}

// Splits cuts the files into m line-aligned splits of about equal size: split
// i covers the bytes [i*T/m, (i+1)*T/m) of the files laid end to end, and the
// reader of a split owns the lines that start in it. When splits are much
// larger than blocks, their bounds move to the nearest block boundary, so
// that no reader reads a block only to skip most of it.
func Splits(files []InputFile, m int) [][]Piece {
	var total, block int64
	for _, f := range files {
		total += f.Size
		block = max(block, f.BlockSize)
	}
	bounds := make([]int64, m+1)
	for i := range bounds {
		bounds[i] = total * int64(i) / int64(m)
	}
	if block > 0 && total/int64(m) >= 4*block {
		alignBounds(files, bounds)
	}
	out := make([][]Piece, m)
	var base int64 // offset of files[fi] in the whole
	fi := 0
	for i := range m {
		lo, hi := bounds[i], bounds[i+1]
		for fi < len(files) && lo < hi {
			f := files[fi]
			s, e := lo-base, min(hi-base, f.Size)
			if s < e {
				out[i] = append(out[i], Piece{File: fi, Start: s, End: e})
			}
			if hi-base >= f.Size {
				base += f.Size
				fi++
				lo = base
				continue
			}
			break
		}
	}
	return out
}

// alignBounds moves each inner bound to the nearest block boundary of the
// file it falls in (a file's end counts as one).
func alignBounds(files []InputFile, bounds []int64) {
	var base int64
	fi := 0
	for i := 1; i < len(bounds)-1; i++ {
		for fi < len(files) && bounds[i] >= base+files[fi].Size {
			base += files[fi].Size
			fi++
		}
		if fi == len(files) || files[fi].BlockSize <= 0 {
			continue
		}
		f := files[fi]
		off := bounds[i] - base
		b := (off + f.BlockSize/2) / f.BlockSize * f.BlockSize
		bounds[i] = base + min(b, f.Size)
	}
	for i := 1; i < len(bounds); i++ {
		bounds[i] = max(bounds[i], bounds[i-1])
	}
}

// Preview is the first lines of a job's output.
type Preview struct {
	Key  []byte `json:"key"`
	Line string `json:"line"`
}

// PreviewLines is how many output lines a job's preview keeps.
const PreviewLines = 10

// PreviewBytes bounds a preview's line and key: an output line of
// megabytes (one long word, a file without newlines) is shown by its
// start, and a task's result and its job's record stay small.
const PreviewBytes = 240

// NewPreview returns the preview of an output line, cut to PreviewBytes.
func NewPreview(key []byte, line string) Preview {
	if len(line) > PreviewBytes {
		cut := prefix(line, PreviewBytes)
		line = cut + "… (" + strconv.Itoa(len(line)-len(cut)) + " more bytes)"
	}
	return Preview{Key: bytes.Clone(key[:min(len(key), PreviewBytes)]), Line: line}
}

type paramsKey struct{}

// WithParams returns ctx carrying a job's params for its map and reduce
// functions.
func WithParams(ctx context.Context, params map[string]any) context.Context {
	return context.WithValue(ctx, paramsKey{}, params)
}

// ParamsOf returns the params of the job whose task runs with ctx.
func ParamsOf(ctx context.Context) map[string]any {
	p, _ := ctx.Value(paramsKey{}).(map[string]any)
	return p
}

// StoreError is a failure of the data store (JetStream not answering, a
// leader being elected), not of the task's own work: the task runs again
// later without the failure counting against it.
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }
