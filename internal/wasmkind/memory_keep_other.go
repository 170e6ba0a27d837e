//go:build unix && !linux

package wasmkind

import "errors"

// keepMappings: elsewhere than on Linux, pages handed back may keep what
// they held, so an ended instance's mapping is unmapped (memory_unix.go).
const keepMappings = false

func giveBack([]byte) error { return errors.ErrUnsupported }
