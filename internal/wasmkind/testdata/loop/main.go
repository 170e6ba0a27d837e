// A kind whose map never returns.
package main

import (
	"context"

	"github.com/mrcluster/mrcluster/wasm/guest"
)

func init() {
	guest.Register(guest.Kind{Map: func(context.Context, guest.Record, guest.Emit) error {
		for n := 0; ; n++ {
			_ = n
		}
	}})
}

func main() {}
