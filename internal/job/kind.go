package job

import (
	"encoding/json"
	"sort"
	"strings"
)

// Kind names a job's map and reduce functions. The server never switches on
// a kind's name: everything it knows of a kind is here.
type Kind struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Map         MapFunc    `json:"-"`
	Reduce      ReduceFunc `json:"-"`
}

// Registry maps kind names to kinds. It is filled before the cluster starts
// and only read afterwards, so it needs no lock.
type Registry struct {
	kinds map[string]Kind
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
	r.kinds[k.Name] = k
}

// Lookup returns the kind named name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Kinds returns every kind, sorted by name.
func (r *Registry) Kinds() []Kind {
	out := make([]Kind, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, k)
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

// Spec is what a user asks for when submitting a job.
type Spec struct {
	Kind       string          `json:"kind"`
	Partitions int             `json:"partitions"`
	Params     json.RawMessage `json:"params,omitempty"`
}

// Validate checks spec against the registry and the partition bound.
func (r *Registry) Validate(spec Spec, maxPartitions int) error {
	if spec.Kind == "" {
		return Errorf(EInvalid, "kind is required; known kinds: %s", strings.Join(r.Names(), ", "))
	}
	if _, ok := r.kinds[spec.Kind]; !ok {
		return Errorf(EInvalid, "unknown kind %q; known kinds: %s", spec.Kind, strings.Join(r.Names(), ", "))
	}
	if spec.Partitions < 1 || spec.Partitions > maxPartitions {
		return Errorf(EInvalid, "partitions must be an integer from 1 to %d, got %d", maxPartitions, spec.Partitions)
	}
	if len(spec.Params) > 0 {
		var obj map[string]any
		if err := json.Unmarshal(spec.Params, &obj); err != nil || obj == nil && string(spec.Params) != "null" {
			return Errorf(EInvalid, "params must be a JSON object")
		}
	}
	return nil
}
