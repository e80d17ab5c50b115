package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// Every branch of errnoOf, with the errors the Go package returns wrapped
// as it wraps them, and the order of the branches where an error matches
// more than one.
func TestErrnoOfBranches(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	badKey := libspbroker.SendGetPair(fds[0], nil, libspbroker.ModeClient)
	badMode := libspbroker.SendGetPair(fds[0], []byte("k"), libspbroker.ModeMax)
	var m libspbroker.Message
	badLength := m.Decode(make([]byte, 10))
	op := func(err error) error { return &net.OpError{Op: "receive", Net: "unix", Err: err} }

	cases := []struct {
		name string
		err  error
		want unix.Errno
	}{
		// EINVAL: a caller's argument.
		{"NULL argument", fmt.Errorf("spbroker: connect: %w: NULL socket path", errInvalidArgument), unix.EINVAL},
		{"key through SendGetPair", badKey, unix.EINVAL},
		{"mode through SendGetPair", badMode, unix.EINVAL},
		{"bad key wrapped twice", op(fmt.Errorf("x: %w", libspbroker.ErrInvalidKey)), unix.EINVAL},
		// EPROTO: every kind of violation, bare and as the receive path
		// wraps it.
		{"length", badLength, unix.EPROTO},
		{"truncated control data", op(fmt.Errorf("%w (control data truncated)",
			&libspbroker.ProtocolError{Field: "descriptors", Value: 1, Err: libspbroker.ErrFDCount})), unix.EPROTO},
		{"bare ErrProtocol", libspbroker.ErrProtocol, unix.EPROTO},
		// An errno carried: by a system call, by the library's own errors.
		{"syscall", op(os.NewSyscallError("recvmsg", unix.EAGAIN)), unix.EAGAIN},
		{"bare errno", unix.ENOTSOCK, unix.ENOTSOCK},
		{"closed mid-message", op(fmt.Errorf("wrapped: %w", errors.Join(io.ErrUnexpectedEOF, unix.ECONNRESET))), unix.ECONNRESET},
		// Errno 0 would leave errno meaningless: EIO.
		{"errno 0", op(os.NewSyscallError("recvmsg", unix.Errno(0))), unix.EIO},
		{"context", context.DeadlineExceeded, unix.EIO},
		{"EOF", io.EOF, unix.EIO},
		// Order: an argument error before a protocol error before an errno.
		{"argument and protocol", errors.Join(libspbroker.ErrSize, errInvalidArgument), unix.EINVAL},
		{"protocol and errno", errors.Join(unix.EPIPE, libspbroker.ErrVersion), unix.EPROTO},
		{"mode and errno", errors.Join(unix.EPIPE, libspbroker.ErrInvalidMode), unix.EINVAL},
	}
	for _, kind := range []error{
		libspbroker.ErrVersion, libspbroker.ErrFlags, libspbroker.ErrRequest, libspbroker.ErrSize,
		libspbroker.ErrFDCount, libspbroker.ErrUnexpected, libspbroker.ErrMode, libspbroker.ErrKeyLength,
		libspbroker.ErrPayload, libspbroker.ErrLength,
	} {
		pe := &libspbroker.ProtocolError{Field: "size", Value: 3, Err: kind}
		cases = append(cases, struct {
			name string
			err  error
			want unix.Errno
		}{"kind " + kind.Error(), op(pe), unix.EPROTO})
	}
	for _, tc := range cases {
		require.Error(t, tc.err, tc.name)
		assert.Equal(t, tc.want, errnoOf(tc.err), "%s: %v", tc.name, tc.err)
	}
	// Nothing was sent for the bad key and mode.
	unix.SetNonblock(fds[1], true)
	_, err = unix.Read(fds[1], make([]byte, 1))
	assert.Equal(t, unix.EAGAIN, err)
}
