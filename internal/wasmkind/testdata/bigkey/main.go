// A kind whose map emits a key past the limit.
package main

import (
	"context"

	"github.com/mrcluster/mrcluster/wasm/guest"
)

func init() {
	guest.Register(guest.Kind{Map: func(_ context.Context, _ guest.Record, emit guest.Emit) error {
		emit(make([]byte, 100<<10), []byte("1"))
		return nil
	}})
}

func main() {}
