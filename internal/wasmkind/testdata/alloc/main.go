// A kind whose map allocates without bound.
package main

import (
	"context"

	"github.com/mrcluster/mrcluster/wasm/guest"
)

var keep [][]byte

func init() {
	guest.Register(guest.Kind{Map: func(context.Context, guest.Record, guest.Emit) error {
		for {
			b := make([]byte, 1<<20)
			b[0] = 1
			keep = append(keep, b)
		}
	}})
}

func main() {}
