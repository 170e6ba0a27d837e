// A kind whose map fails on the line "boom", fails asking not to be
// retried on "hopeless" and panics on "panic".
package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/mrcluster/mrcluster/wasm/guest"
)

func init() {
	guest.Register(guest.Kind{Map: func(_ context.Context, rec guest.Record, emit guest.Emit) error {
		switch string(rec.Text) {
		case "boom":
			return errors.New("boom")
		case "hopeless":
			return fmt.Errorf("this line cannot be read: %w", guest.SkipRetry)
		case "panic":
			var m map[string]int
			m["x"] = 1
		}
		emit(rec.Text, []byte("1"))
		return nil
	}})
}

func main() {}
