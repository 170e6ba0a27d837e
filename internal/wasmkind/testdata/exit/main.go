// A kind whose map exits the module.
package main

import (
	"context"
	"os"

	"github.com/mrcluster/mrcluster/wasm/guest"
)

func init() {
	guest.Register(guest.Kind{Map: func(context.Context, guest.Record, guest.Emit) error {
		os.Exit(3)
		return nil
	}})
}

func main() {}
