package main

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// errInvalidArgument marks a bad argument from C: a NULL pointer or a
// negative count. (A bad descriptor is the kernel's to report: EBADF.)
var errInvalidArgument = errors.New("invalid argument")

// errnoOf maps an error from the Go implementation to the errno that C
// callers see. It is the only such mapping in the library.
func errnoOf(err error) unix.Errno {
	var en unix.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errInvalidArgument),
		errors.Is(err, libspbroker.ErrInvalidKey),
		errors.Is(err, libspbroker.ErrInvalidMode):
		return unix.EINVAL
	case errors.Is(err, libspbroker.ErrProtocol):
		return unix.EPROTO
	case errors.As(err, &en) && en != 0:
		// The library's own errors carry theirs: a connection closed
		// mid-message unwraps to ECONNRESET, a stalled one to ETIMEDOUT.
		return en
	}
	return unix.EIO
}
