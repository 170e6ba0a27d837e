package kinds_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// A data kind refuses a param it does not take, naming it and what it
// takes: a typo is not silently ignored. The simulated kinds keep any
// params, as the job's own data.
func TestUnknownParamsOfDataKinds(t *testing.T) {
	r := kinds.Builtin(1)
	for _, c := range []struct {
		kind, params, err string
	}{
		{"wordcount", `{"nope":1}`, `params of kind "wordcount": "nope" is not a parameter of this kind, which takes none`},
		{"grep", `{"pattern":"x","patern":"y"}`, `params of kind "grep": "patern" is not a parameter of this kind; it takes pattern`},
		{"grep", `{"pattern":"("}`, `is not a Go regular expression`},
		{"grep", `{"pattern":"x"}`, ""},
		{"indexer", `{}`, ""},
		{"noop", `{"note":"x"}`, ""},
		{"short", `{"a":[1]}`, ""},
	} {
		spec := job.Spec{Kind: c.kind, Partitions: 1, Params: json.RawMessage(c.params)}
		if k, _ := r.Lookup(c.kind); k.ReadsData {
			spec.Input = []string{"books"}
		}
		err := r.Validate(spec, 10)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s %s: %v; want it accepted", c.kind, c.params, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || job.ErrorCode(err) != job.EInvalid):
			t.Errorf("%s %s: %v; want invalid, saying %q", c.kind, c.params, err, c.err)
		}
	}
}
