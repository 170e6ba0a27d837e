package apitest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	wasmMu    sync.Mutex
	wasmBuilt = map[string][]byte{}
)

// BuildWasm builds the Go program in dir (a directory from the module's
// root) as a WebAssembly module with the standard toolchain
// (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared unless dir ends in
// "noexports"), once per test binary.
func BuildWasm(t testing.TB, dir string) []byte {
	t.Helper()
	wasmMu.Lock()
	defer wasmMu.Unlock()
	if b, ok := wasmBuilt[dir]; ok {
		return b
	}
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	out := filepath.Join(t.TempDir(), "m.wasm")
	args := []string{"build", "-o", out}
	if !strings.HasSuffix(dir, "noexports") {
		args = append(args, "-buildmode=c-shared")
	}
	cmd := exec.Command("go", append(args, "./"+dir)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", dir, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	wasmBuilt[dir] = b
	return b
}
