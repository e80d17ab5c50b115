package main

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// The errno C callers see for each kind of failure, from errors the Go
// package really returns where a test can provoke them.
func TestErrnoOf(t *testing.T) {
	closed := func() error {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fds[0])
		_, err = unix.Write(fds[1], make([]byte, 10)) // part of a message
		require.NoError(t, err)
		unix.Close(fds[1])
		_, err = libspbroker.ReceiveSetPair(fds[0])
		return err
	}()
	stalled := func() error {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		_, err = unix.Write(fds[1], make([]byte, 10))
		require.NoError(t, err)
		_, err = libspbroker.ReceiveSetPair(fds[0]) // waits a second for the rest
		return err
	}()
	badFD := func() error {
		_, err := libspbroker.ReceiveSetPair(-1)
		return err
	}()
	noBroker := func() error {
		_, err := libspbroker.Connect(fmt.Sprintf("/nonexistent/%d.sock", time.Now().UnixNano()), false)
		return err
	}()
	for _, tc := range []struct {
		name string
		err  error
		want unix.Errno
	}{
		{"nil", nil, 0},
		{"bad argument", fmt.Errorf("spbroker_x: %w", errInvalidArgument), unix.EINVAL},
		{"bad key", libspbroker.CheckKey(nil), unix.EINVAL},
		{"bad mode", libspbroker.CheckMode(7), unix.EINVAL},
		{"protocol", &libspbroker.ProtocolError{Err: libspbroker.ErrProtocol}, unix.EPROTO},
		{"closed mid-message", closed, unix.ECONNRESET},
		{"stalled mid-message", stalled, unix.ETIMEDOUT},
		{"bad descriptor", badFD, unix.EBADF},
		{"no broker", noBroker, unix.ENOENT},
		{"system call", os.NewSyscallError("sendmsg", unix.EPIPE), unix.EPIPE},
		{"anything else", errors.New("surprise"), unix.EIO},
	} {
		if tc.want != 0 {
			require.Error(t, tc.err, tc.name)
		}
		assert.Equal(t, tc.want, errnoOf(tc.err), "%s: %v", tc.name, tc.err)
	}
}
