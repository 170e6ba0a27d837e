//go:build unix

package cli

import (
	"fmt"
	"os"
	"syscall"
)

// reexec replaces this process with a new run of the same command line,
// as a supervisor restarting it would: the files and sockets the process
// opened close (Go opens them close-on-exec), so the new run opens the
// store and binds the addresses anew. It returns only if it failed.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program to start it again: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("start %s again: %w", exe, err)
	}
	return nil
}
