package app_test

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// gutenberg returns the test corpus (see kinds.Corpus), once over.
func gutenberg(t *testing.T) []kinds.Doc {
	t.Helper()
	docs, source := kinds.Corpus(1)
	t.Logf("corpus: %s", source)
	return docs
}

func (b *bundle) upload(t *testing.T, ds string, docs []kinds.Doc) {
	t.Helper()
	for _, d := range docs {
		b.client().PutFile(t, ds, d.Name, d.Data)
	}
}

// run submits spec, waits for its end and returns the job and its output.
func (b *bundle) run(t *testing.T, spec client.Spec) (client.Job, string) {
	t.Helper()
	j := b.client().SubmitSpec(t, spec)
	j = b.await(t, j.ID, terminal)
	if j.State != client.Succeeded {
		t.Fatalf("job %s ended %s: %s", j.ID, j.State, j.Error)
	}
	return j, b.client().Output(t, j.ID)
}

// diff describes the first difference of two outputs.
func diff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return "line " + itoa(i+1) + ": got " + quote(g[i]) + ", want " + quote(w[i])
		}
	}
	return "got " + itoa(len(g)) + " lines, want " + itoa(len(w))
}

func TestDataKindsMatchSequential(t *testing.T) {
	docs := gutenberg(t)
	b := setup(t, func(c *app.Config) { c.SortBuffer = 1 << 20 }) // small: maps spill
	b.upload(t, "books", docs)
	var size int64
	for _, d := range docs {
		size += int64(len(d.Data))
	}
	want := kinds.SeqWordCount(docs)
	distinct := strings.Count(want, "\n")
	for _, mr := range [][2]int{{3, 1}, {8, 4}, {13, 3}, {2, 64}} {
		j, got := b.run(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: mr[0], Reducers: mr[1]})
		if got != want {
			t.Fatalf("wordcount M=%d R=%d differs from the sequential count: %s", mr[0], mr[1], diff(got, want))
		}
		c := j.Counters
		if c == nil || c.InputBytes != size || c.ReduceOutputRecords != int64(distinct) || j.Phase != string(job.PhaseReduce) || j.Tasks.Done != mr[0]+mr[1] {
			t.Fatalf("wordcount M=%d R=%d: counters %+v, phase %s, tasks %+v; want %d input bytes, %d output records", mr[0], mr[1], c, j.Phase, j.Tasks, size, distinct)
		}
		if len(j.Preview) != job.PreviewLines || !strings.HasPrefix(want, strings.Join(j.Preview, "\n")+"\n") {
			t.Fatalf("preview %q is not the start of the output", j.Preview)
		}
	}
	// A data job that gives no partition count gets a split per 64 MiB of
	// input, at least one per worker: here one per worker (4), for a
	// submit alone and within a batch.
	j, got := b.run(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Reducers: 2})
	if got != want || j.Partitions != 4 || j.Tasks.Done != 4+2 {
		t.Fatalf("wordcount without partitions: %d partitions, tasks %+v, output as the sequential count: %v; want 4 partitions", j.Partitions, j.Tasks, got == want)
	}
	ctx := apitest.Context(t)
	jobs, err := b.client().API().SubmitBatch(ctx, []client.Spec{{Kind: "noop", Partitions: 1}, {Kind: "grep", Input: []string{"books"}, Params: map[string]any{"pattern": "whale"}}})
	if err != nil || len(jobs) != 2 || jobs[0].Partitions != 1 || jobs[1].Partitions != 4 {
		t.Fatalf("a batch with a data job without partitions: %+v %v; want 1 and 4 partitions", jobs, err)
	}
	_, err = b.client().API().SubmitBatch(ctx, []client.Spec{{Kind: "noop", Partitions: 1}, {Kind: "grep", Input: []string{"nope"}, Params: map[string]any{"pattern": "whale"}}})
	if err == nil || !strings.Contains(err.Error(), `jobs[1]: input: dataset "nope" does not exist`) {
		t.Fatalf("a batch whose data job without partitions names a missing dataset: %v; want a 400 naming jobs[1] and the dataset", err)
	}
	if _, err = b.client().API().Submit(ctx, client.Spec{Kind: "noop"}); err == nil || !strings.Contains(err.Error(), "partitions must be an integer from 1") {
		t.Fatalf("a job of a kind that reads no data, without partitions: %v; want the 400 saying partitions are needed", err)
	}
	_, got = b.run(t, client.Spec{Kind: "grep", Input: []string{"books"}, Partitions: 11, Reducers: 3, Params: map[string]any{"pattern": "(?i)whale|Alice"}})
	if want := kinds.SeqGrep(docs, "(?i)whale|Alice"); got != want || want == "" {
		t.Fatalf("grep differs from the sequential one: %s", diff(got, want))
	}
	_, got = b.run(t, client.Spec{Kind: "indexer", Input: []string{"books"}, Partitions: 10, Reducers: 2})
	if want := kinds.SeqIndexer(docs); got != want {
		t.Fatalf("indexer differs from the sequential one: %s", diff(got, want))
	}
}

// TestDataKindsOnRandomInputs is a property test: for random texts (with
// empty files, blank lines, CRLF, letters from several scripts, long and
// unterminated lines) and random M and R, every kind's output equals the
// sequential one.
func TestDataKindsOnRandomInputs(t *testing.T) {
	b := setup(t, func(c *app.Config) { c.SortBuffer = 4 << 10 })
	rng := rand.New(rand.NewPCG(1, uint64(os.Getpid())))
	words := []string{"a", "b", "Ab", "été", "Ωμέγα", "日本", "x1y", "--", "  ", "\t", "ſ", "z"}
	for round := range 6 {
		var docs []kinds.Doc
		for f := range 1 + rng.IntN(4) {
			var sb strings.Builder
			for range rng.IntN(300) {
				for range rng.IntN(12) {
					sb.WriteString(words[rng.IntN(len(words))])
					if rng.IntN(3) == 0 {
						sb.WriteByte(' ')
					}
				}
				if rng.IntN(5) == 0 {
					sb.WriteByte('\r')
				}
				sb.WriteByte('\n')
			}
			if rng.IntN(2) == 0 {
				sb.WriteString("tail without newline")
			}
			docs = append(docs, kinds.Doc{Name: "f" + itoa(f), Data: []byte(sb.String())})
		}
		ds := "rand" + itoa(round)
		b.upload(t, ds, docs)
		m, r := 1+rng.IntN(20), 1+rng.IntN(6)
		if round == 0 {
			r = 40 // more reducers than distinct words: some outputs are empty
		}
		in := []string{ds}
		if _, got := b.run(t, client.Spec{Kind: "wordcount", Input: in, Partitions: m, Reducers: r}); got != kinds.SeqWordCount(docs) {
			t.Fatalf("round %d wordcount M=%d R=%d: %s", round, m, r, diff(got, kinds.SeqWordCount(docs)))
		}
		if _, got := b.run(t, client.Spec{Kind: "indexer", Input: in, Partitions: m, Reducers: r}); got != kinds.SeqIndexer(docs) {
			t.Fatalf("round %d indexer M=%d R=%d: %s", round, m, r, diff(got, kinds.SeqIndexer(docs)))
		}
		if _, got := b.run(t, client.Spec{Kind: "grep", Input: in, Partitions: m, Reducers: r, Params: map[string]any{"pattern": "b|日"}}); got != kinds.SeqGrep(docs, "b|日") {
			t.Fatalf("round %d grep M=%d R=%d: %s", round, m, r, diff(got, kinds.SeqGrep(docs, "b|日")))
		}
	}
}

func itoa(n int) string     { return strconv.Itoa(n) }
func quote(s string) string { return strconv.Quote(s) }

// A line of megabytes (one long word, a file without newlines) goes
// through every kind, and the job's preview shows its start: the preview
// of a 3 MB key once made a result the store refused (over NATS's 1 MiB
// max_payload), and its reduce task ran again for ever.
func TestOutputLinesOfMegabytes(t *testing.T) {
	b := setup(t)
	word := strings.Repeat("x", 3<<20)
	docs := []kinds.Doc{
		{Name: "long", Data: []byte("hello " + word + "\nworld\n" + word)},
		{Name: "short", Data: []byte("hello world\n")},
	}
	b.upload(t, "long", docs)
	for _, spec := range []client.Spec{
		{Kind: "wordcount", Input: []string{"long"}, Partitions: 2, Reducers: 1},
		{Kind: "grep", Input: []string{"long"}, Partitions: 3, Reducers: 2, Params: map[string]any{"pattern": "x"}},
		{Kind: "indexer", Input: []string{"long"}, Partitions: 1, Reducers: 1},
	} {
		j, got := b.run(t, spec)
		var want string
		switch spec.Kind {
		case "wordcount":
			want = kinds.SeqWordCount(docs)
		case "grep":
			want = kinds.SeqGrep(docs, "x")
		default:
			want = kinds.SeqIndexer(docs)
		}
		if got != want || !strings.Contains(got, word) {
			t.Fatalf("%s: %s", spec.Kind, diff(got, want))
		}
		if len(j.Preview) == 0 {
			t.Fatalf("%s: no preview", spec.Kind)
		}
		for _, line := range j.Preview {
			if len(line) > job.PreviewBytes+40 {
				t.Fatalf("%s: a preview line of %d bytes (%.60q…); want at most %d and a note of the rest", spec.Kind, len(line), line, job.PreviewBytes+40)
			}
		}
	}
}
