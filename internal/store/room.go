package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// Roomy checks, before it puts an object of known size (a task's staged
// output), that the store has room for it, and refuses it at once
// (ErrNoRoom) when it has not. A put that the store refuses half-way
// leaves on disk what it wrote: JetStream takes the deleted chunks off
// what its streams count as held at once, but keeps their bytes in its
// files until it compacts them, which a block holding live messages
// beside them may never be. A task that ran again on such a refusal filled
// the disk in a few tries (by hand, 2026-12-05: a grep's 37 MB output on a
// 200 MB disk; the disk full of chunks that no longer counted, the job
// "running" for good and its cancel refused for want of space).
type Roomy struct {
	Blobs
	// Room returns the bytes the store can still take.
	Room func() (int64, error)
	// Putting, when set, counts the bytes of the checked puts under way,
	// which the room they see leaves out: two outputs that each fit, and
	// not both, are not both begun. Shared by the Roomy of one process.
	Putting *atomic.Int64
}

// minRoomCheck is the size from which a put asks for the room first: a
// smaller object refused half-way leaves little, and a question per
// object of a map's many small runs would cost more than it saves.
const minRoomCheck = 1 << 20

// Put puts the object read from r after checking the room for it, when
// r says its size.
func (b Roomy) Put(ctx context.Context, name string, r io.Reader) error {
	size, ok := sizeLeft(r)
	if !ok || size < minRoomCheck {
		return b.Blobs.Put(ctx, name, r)
	}
	var putting int64
	if b.Putting != nil {
		putting = b.Putting.Add(size) - size
		defer b.Putting.Add(-size)
	}
	if room, err := b.Room(); err == nil && size > room-putting {
		return &NoRoomError{Size: size, Room: max(room, 0), Putting: putting}
	}
	return b.Blobs.Put(ctx, name, r)
}

// NoRoomError is a put Roomy refused: Size bytes, where the store had room
// for Room, Putting of which other puts under way were taking. It is an
// ErrNoRoom.
type NoRoomError struct{ Size, Room, Putting int64 }

func (e *NoRoomError) Error() string {
	return fmt.Sprintf("%v: %d bytes to store, room for %d (%d more being stored meanwhile)", ErrNoRoom, e.Size, e.Room, e.Putting)
}

func (e *NoRoomError) Unwrap() error { return ErrNoRoom }

// sizeLeft returns what is left to read of r, when r can say.
func sizeLeft(r io.Reader) (int64, bool) {
	switch r := r.(type) {
	case interface{ Len() int }:
		return int64(r.Len()), true
	case *os.File:
		fi, err := r.Stat()
		if err != nil {
			return 0, false
		}
		at, err := r.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, false
		}
		return fi.Size() - at, true
	}
	return 0, false
}
