//go:build !unix

package cli

import "errors"

// reexec cannot replace the process here: the caller exits, for a
// supervisor to start it again.
func reexec() error {
	return errors.New("this system cannot start mrcluster again in place: restart it")
}
