package job

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kind names a job's map and reduce functions. The server never switches on
// a kind's name: everything it knows of a kind is here.
type Kind struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Map         MapFunc    `json:"-"`
	Reduce      ReduceFunc `json:"-"`

	// A kind that reads data sets these instead of Map and Reduce.
	MapRecord RecordMapFunc `json:"-"`
	Combine   CombineFunc   `json:"-"`
	ReduceKey KeyReduceFunc `json:"-"`
	// Format makes an output line; nil means "key value".
	Format FormatFunc `json:"-"`
	// Params describes the kind's parameters, for forms and errors.
	Params []Param `json:"params,omitempty"`
	// Check validates the params of a job; nil accepts any object.
	Check func(params map[string]any) error `json:"-"`
	// ReadsData is true when MapRecord is set.
	ReadsData bool `json:"reads_data"`

	// MapFlush, optional, is called once a map task's split has been
	// read: a kind that batches records maps the last ones.
	MapFlush func(ctx context.Context, emit Emit) error `json:"-"`
	// Module is the content hash of an uploaded kind's WebAssembly
	// module; empty for a built-in kind.
	Module string `json:"module,omitempty"`
}

// DataKind is a kind that reads data, as a program writes it: the public
// mapreduce.Kind is this type, and the built-in data kinds are written
// with it too.
type DataKind struct {
	// Name is what a job names in "kind"; Description is shown in the
	// dashboard and in GET /api/v1/kinds.
	Name        string
	Description string
	// Map is called with every input line of a map task's split.
	Map RecordMapFunc
	// Combine, optional, merges two values of one key on the map side; it
	// must be associative and commutative and may return a, changed.
	Combine CombineFunc
	// Reduce makes a key's output value from all its values; nil keeps
	// the first value.
	Reduce KeyReduceFunc
	// Format, optional, makes the output line of a key and its value
	// ("key value" when nil).
	Format FormatFunc
	// Params, optional, lists the kind's parameters; Check validates them.
	Params []Param
	Check  func(params map[string]any) error
}

// Kind returns the registry's form of k.
func (k DataKind) Kind() Kind {
	return Kind{
		Name: k.Name, Description: k.Description,
		MapRecord: k.Map, Combine: k.Combine, ReduceKey: k.Reduce, Format: k.Format,
		Params: k.Params, Check: k.Check,
	}
}

// Param describes one parameter of a kind.
type Param struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Required    bool   `json:"required"`
}

// Registry maps kind names to kinds. It is filled before the cluster starts
// and only read afterwards, so it needs no lock.
type Registry struct {
	kinds map[string]Kind
	dyn   Dynamic
}

// Dynamic is a source of kinds that come and go while the cluster runs:
// the uploaded ones.
type Dynamic interface {
	Lookup(name string) (Kind, bool)
	Kinds() []Kind
}

// With returns a registry of r's kinds and d's: r's first.
func (r *Registry) With(d Dynamic) *Registry {
	return &Registry{kinds: r.kinds, dyn: d}
}

// NewRegistry returns a registry holding the given kinds.
func NewRegistry(kinds ...Kind) *Registry {
	r := &Registry{kinds: map[string]Kind{}}
	for _, k := range kinds {
		r.Register(k)
	}
	return r
}

// Register adds k, replacing any kind of the same name. A kind without a
// reduce gets SumReduce.
func (r *Registry) Register(k Kind) {
	if k.Reduce == nil {
		k.Reduce = SumReduce
	}
	k.ReadsData = k.MapRecord != nil
	if k.ReadsData && k.ReduceKey == nil {
		k.ReduceKey = FirstValue
	}
	r.kinds[k.Name] = k
}

// Lookup returns the kind named name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	if !ok && r.dyn != nil {
		return r.dyn.Lookup(name)
	}
	return k, ok
}

// Kinds returns every kind, sorted by name.
func (r *Registry) Kinds() []Kind {
	out := make([]Kind, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, k)
	}
	if r.dyn != nil {
		for _, k := range r.dyn.Kinds() {
			if _, builtin := r.kinds[k.Name]; !builtin {
				out = append(out, k)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names returns the kind names, sorted.
func (r *Registry) Names() []string {
	ks := r.Kinds()
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.Name
	}
	return out
}

// SumReduce is the seed's reduce: the partition results, in partition order,
// and their sum.
func SumReduce(values []int64) Result {
	var sum int64
	for _, v := range values {
		sum += v
	}
	return Result{Values: values, Sum: sum}
}

// FirstValue is the reduce of a kind that has none: a key's first value.
func FirstValue(_ context.Context, _ []byte, values iter.Seq[[]byte]) ([]byte, error) {
	for v := range values {
		return append([]byte(nil), v...), nil
	}
	return nil, nil
}

// Spec is what a user asks for when submitting a job.
type Spec struct {
	Kind       string          `json:"kind"`
	Partitions int             `json:"partitions"`
	Params     json.RawMessage `json:"params,omitempty"`
	// Input names the datasets a job of a data-reading kind reads.
	Input []string `json:"input,omitempty"`
	// Reducers is the number of reduce tasks (1 when zero).
	Reducers int `json:"reducers,omitempty"`
	// IdempotencyKey, when set, makes a second submit with the same key
	// within IdempotencyWindow answer the first one's job.
	IdempotencyKey string `json:"-"`
	// Fingerprint sums what the client asked for (package httpapi: the
	// request's fields), so that an idempotency key sent again with a
	// different request is refused rather than answered the first job.
	// Empty: not checked.
	Fingerprint string `json:"-"`
	// Files, when set, are the input's files as already read at submit
	// (a data job whose partition count the service chose from them):
	// the job is pinned to them, not to a second read.
	Files []InputFile `json:"-"`
	// RerunOf names the finished job this one runs again (POST
	// /api/v1/jobs/{id}/rerun).
	RerunOf string `json:"-"`
	// Timeout bounds each attempt of each task (0: the worker's
	// --task-timeout).
	Timeout time.Duration `json:"-"`
	// Priority orders the job's waiting tasks against others': 1 (low) to
	// 4 (high); 0 means DefaultPriority.
	Priority int `json:"-"`
	// MaxAttempts is how many times each task may run before its failure
	// fails the job, 1 to MaxMaxAttempts (0: the server's --max-attempts).
	MaxAttempts int `json:"-"`
	// RunAt, when later than the submit, makes the job scheduled until
	// then.
	RunAt time.Time `json:"-"`
	// Schedule and Tick name the cron schedule that fired this job and
	// the tick it fired for (package schedule).
	Schedule string    `json:"-"`
	Tick     time.Time `json:"-"`
}

// MaxMaxAttempts bounds a job's MaxAttempts, and --max-attempts.
const MaxMaxAttempts = 100

// The priorities of jobs: a waiting task of a higher priority starts
// before any of a lower one.
const (
	MinPriority     = 1
	DefaultPriority = 2
	MaxPriority     = 4
)

// IdempotencyWindow is how long a submit's idempotency key is remembered.
const IdempotencyWindow = 24 * time.Hour

// CheckKind returns the error of a submit of kind when it names no
// registered kind.
func (r *Registry) CheckKind(kind string) error {
	if kind == "" {
		return Errorf(EInvalid, "kind is required; known kinds: %s", strings.Join(r.Names(), ", "))
	}
	if _, ok := r.Lookup(kind); !ok {
		return Errorf(EInvalid, "unknown kind %q; known kinds: %s", kind, strings.Join(r.Names(), ", "))
	}
	return nil
}

// Validate checks spec against the registry and the partition bound.
func (r *Registry) Validate(spec Spec, maxPartitions int) error {
	if err := r.CheckKind(spec.Kind); err != nil {
		return err
	}
	k, _ := r.Lookup(spec.Kind)
	if spec.Priority != 0 && (spec.Priority < MinPriority || spec.Priority > MaxPriority) {
		return Errorf(EInvalid, "priority must be an integer from %d (low) to %d (high), default %d; got %d", MinPriority, MaxPriority, DefaultPriority, spec.Priority)
	}
	if spec.Partitions < 1 || spec.Partitions > maxPartitions {
		return Errorf(EInvalid, "partitions must be an integer from 1 to %d, got %d", maxPartitions, spec.Partitions)
	}
	var obj map[string]any
	if len(spec.Params) > 0 {
		if err := json.Unmarshal(spec.Params, &obj); err != nil || obj == nil && string(spec.Params) != "null" {
			return Errorf(EInvalid, "params must be a JSON object")
		}
	}
	if len(spec.Params) > MaxParams {
		return Errorf(ETooLarge, "params are %d bytes; at most %d (%d KiB): they are stored in the job's record and in each of its tasks; put large data in a dataset", len(spec.Params), MaxParams, MaxParams>>10)
	}
	if c := spec.ParamCopies(); c > MaxParamCopies {
		tasks := spec.Partitions + max(spec.Reducers, 0)
		return Errorf(ETooLarge, "params of %d bytes go into each of the job's %d tasks, %.1f MiB in all, over the %d MiB a job's tasks may carry: keep params under %d bytes for %d tasks, and put large data in a dataset",
			len(spec.Params), tasks, float64(c)/(1<<20), MaxParamCopies>>20, MaxParamCopies/tasks, tasks)
	}
	if !k.ReadsData {
		if len(spec.Input) > 0 || spec.Reducers != 0 {
			return Errorf(EInvalid, "kind %q reads no data: leave out input and reducers", spec.Kind)
		}
	} else {
		if len(spec.Input) == 0 {
			return Errorf(EInvalid, "input is required for kind %q: a list of dataset names, e.g. [\"books\"]", spec.Kind)
		}
		if len(spec.Input) > MaxInputs {
			return Errorf(EInvalid, "input names %d datasets; at most %d", len(spec.Input), MaxInputs)
		}
		for _, name := range spec.Input {
			if err := ValidName("dataset", name); err != nil {
				return err
			}
		}
		if spec.Reducers < 0 || spec.Reducers > MaxReducers {
			return Errorf(EInvalid, "reducers must be an integer from 1 to %d, got %d", MaxReducers, spec.Reducers)
		}
		if runs := spec.Partitions * max(spec.Reducers, 1); runs > MaxShuffleRuns {
			return Errorf(EInvalid, "partitions × reducers is %d × %d = %d, at most %d: each map task writes one sorted run per reducer, an object in the store each (lower partitions or reducers; a few hundred maps and tens of reducers suit most data)",
				spec.Partitions, max(spec.Reducers, 1), runs, MaxShuffleRuns)
		}
	}
	for _, p := range k.Params {
		if _, ok := obj[p.Name]; p.Required && !ok {
			return Errorf(EInvalid, "params.%s is required for kind %q: %s", p.Name, spec.Kind, p.Description)
		}
	}
	if k.Check != nil {
		if obj == nil {
			obj = map[string]any{}
		}
		if err := k.Check(obj); err != nil {
			return Errorf(EInvalid, "params of kind %q: %v", spec.Kind, err)
		}
	}
	return nil
}

// MaxParams bounds a job's params: its record, which holds them, must fit in
// one NATS message (1 MiB by default) with the rest of the job (its
// partitions' values and commits, its history).
const MaxParams = 256 << 10

// MaxParamCopies bounds the bytes of params a job's tasks carry in all, and
// those of one submit's jobs: every task carries its job's params, so 1 MB
// of params on 10,000 partitions would queue 10 GB of tasks (and hold them
// in the server's memory while they are stored).
const MaxParamCopies = 64 << 20

// ParamCopies is the bytes of params the job's tasks carry in all.
func (s Spec) ParamCopies() int64 {
	return int64(len(s.Params)) * int64(s.Partitions+max(s.Reducers, 0))
}

// Bounds of a data job's spec. MaxShuffleRuns bounds the objects a job's
// shuffle writes (partitions × reducers): each costs the store two
// messages and about 400 bytes of the embedded server's memory while it
// lasts (400,000 runs took 2.5 minutes and 641 MiB), so 10,000 maps of
// 1,024 reducers would have asked for 10 million objects.
const (
	MaxInputs      = 64
	MaxReducers    = 1024
	MaxShuffleRuns = 1_000_000
)

// NameRune reports whether c may stand in a name (ValidName): a letter or
// digit of ASCII, '.', '_' or '-'.
func NameRune(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidName checks a dataset, file, kind or schedule name: 1 to 128
// letters, digits, '.', '_' or '-', neither starting nor ending with '.'
// and without two dots in a row, so that it is safe in a path and a key.
func ValidName(what, name string) error {
	if name == "" {
		return Errorf(EInvalid, "%s name is empty; use 1 to 128 letters, digits, '.', '_' or '-'", what)
	}
	if len(name) > 128 {
		return Errorf(EInvalid, "%s name is %d characters long; at most 128", what, len(name))
	}
	if name[0] == '.' {
		return Errorf(EInvalid, "%s name %q starts with '.'; use a letter or digit first", what, name)
	}
	// The store keys records by names (and by job ids, which hold kind
	// names) split at dots: an empty part is not a key.
	if name[len(name)-1] == '.' {
		return Errorf(EInvalid, "%s name %q ends with '.'; end it with a letter or digit", what, name)
	}
	if strings.Contains(name, "..") {
		return Errorf(EInvalid, "%s name %q has two dots in a row; use at most one between other characters", what, name)
	}
	for _, c := range name {
		if !NameRune(c) {
			return Errorf(EInvalid, "%s name %q has the character %q; use only letters, digits, '.', '_' or '-'", what, name, c)
		}
	}
	return nil
}

// FileNameRune reports whether c may stand in a dataset's file name
// (ValidFileName): a letter, digit or mark of any script, a space, or one
// of ._-+()[]{}@!&'#~=%$^; — what people name files, less what would
// split a path (/ \), a grep line (:) or an index's list of files (,), and
// what Windows cannot name a downloaded file (*?"<>|).
func FileNameRune(c rune) bool {
	return unicode.IsLetter(c) || unicode.IsDigit(c) || unicode.IsMark(c) || unicode.IsNumber(c) ||
		c == ' ' || strings.ContainsRune("._-+()[]{}@!&'#~=%$^;", c)
}

// MaxFileName is the longest file name, in bytes.
const MaxFileName = 255

// ValidFileName checks a dataset file's name: 1 to 255 bytes of UTF-8 that
// FileNameRune allows, starting with neither a dot nor a space, ending with
// neither, and without two dots in a row (a path's "..").
func ValidFileName(name string) error {
	const what = "file"
	if name == "" {
		return Errorf(EInvalid, "%s name is empty; use 1 to %d bytes of letters, digits, spaces or ._-+()[]{}@!&'#~=%%$^;", what, MaxFileName)
	}
	if len(name) > MaxFileName {
		return Errorf(EInvalid, "%s name is %d bytes long; at most %d", what, len(name), MaxFileName)
	}
	if !utf8.ValidString(name) {
		return Errorf(EInvalid, "%s name %q is not UTF-8", what, name)
	}
	switch {
	case name[0] == '.':
		return Errorf(EInvalid, "%s name %q starts with '.'; use a letter or digit first", what, name)
	case name[0] == ' ':
		return Errorf(EInvalid, "%s name %q starts with a space; leave it out", what, name)
	case name[len(name)-1] == '.':
		return Errorf(EInvalid, "%s name %q ends with '.'; end it with a letter or digit", what, name)
	case name[len(name)-1] == ' ':
		return Errorf(EInvalid, "%s name %q ends with a space; leave it out", what, name)
	case strings.Contains(name, ".."):
		return Errorf(EInvalid, "%s name %q has two dots in a row; use at most one between other characters", what, name)
	}
	for _, c := range name {
		if !FileNameRune(c) {
			return Errorf(EInvalid, "%s name %q has the character %q; use letters, digits, spaces or ._-+()[]{}@!&'#~=%%$^;", what, name, c)
		}
	}
	return nil
}

// ErrSkipRetry, wrapped in the error a kind's map, reduce or task returns,
// fails its task without another attempt, and so its job: for what no
// attempt can mend, such as a record the kind cannot read.
var ErrSkipRetry = errors.New("not to be retried")
