package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// sp_broker_get_pair keeps the original's semantics: one attempt, whose
// failure is the call's. The Go package's GetPair asks again after these
// very failures; the export must not go through it.
func TestGetPairDoesNotRetry(t *testing.T) {
	dir, err := os.MkdirTemp("", "capi")
	require.NoError(t, err)
	defer os.RemoveAll(dir)

	_, err = getPair(filepath.Join(dir, "missing.sock"), []byte("k"), libspbroker.ModeClient)
	require.Equal(t, unix.ENOENT, errnoOf(err), "%v", err)

	// A socket file nobody listens on, as a crashed broker leaves it.
	path := filepath.Join(dir, "b.sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrUnix{Name: path}))
	_, err = getPair(path, []byte("k"), libspbroker.ModeClient)
	require.Equal(t, unix.ECONNREFUSED, errnoOf(err), "%v", err)

	// A broker that reads the request and closes: the client's end of
	// file is final, and no second connection comes.
	require.NoError(t, unix.Listen(lfd, 4))
	done := make(chan error, 1)
	go func() {
		_, err := getPair(path, []byte("k"), libspbroker.ModeServer)
		done <- err
	}()
	require.True(t, readable(lfd, 10*time.Second), "no connection")
	cfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	require.NoError(t, err)
	buf := make([]byte, libspbroker.MessageSize)
	for n := 0; n < len(buf); {
		m, err := unix.Read(cfd, buf[n:])
		require.NoError(t, err)
		require.NotZero(t, m, "the client closed before its request")
		n += m
	}
	unix.Close(cfd)
	err = <-done
	require.Equal(t, unix.ECONNRESET, errnoOf(err), "%v", err)
	require.False(t, readable(lfd, 100*time.Millisecond), "sp_broker_get_pair connected again")
}

// readable polls fd for input for up to wait.
func readable(fd int, wait time.Duration) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(wait)
	for {
		n, err := unix.Poll(pfd, int(time.Until(deadline)/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}
