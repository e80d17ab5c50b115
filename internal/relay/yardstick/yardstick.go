// Package yardstick has the relays that internal/relay is measured
// against (bench/relaybench and internal/relay's Go benchmarks). Each
// forwards every read as one send, descriptors included: that glues a
// descriptor onto earlier bytes whenever sends queue up, so neither is
// exact, but together they show what any relay costs.
package yardstick

import (
	"errors"
	"io"
	"net"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// Naive forwards src to dst with reads of up to bufSize bytes on Go's
// poller, as internal/relay runs, until src's data ends; then it shuts
// down dst's sending side.
func Naive(src, dst *net.UnixConn, bufSize int) error {
	buf, oob := make([]byte, bufSize), make([]byte, scm.OOBSize)
	for {
		n, oobn, _, _, err := src.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			dst.CloseWrite()
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return err
		}
		fds, err := scm.Rights(oob[:oobn])
		if err == nil {
			var rights []byte
			if len(fds) > 0 {
				rights = unix.UnixRights(fds...)
			}
			// A short send returns no error; Write finishes what it left.
			var w int
			if w, _, err = dst.WriteMsgUnix(buf[:n], rights, nil); err == nil && w < n {
				_, err = dst.Write(buf[w:n])
			}
		}
		scm.CloseAll(fds)
		if err != nil {
			return err
		}
	}
}

// Floor forwards src to dst on a locked thread in blocking system calls,
// as a relay in C would, until src's data ends; then it shuts down dst's
// sending side. src and dst stay the caller's.
func Floor(src, dst, bufSize int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf, oob := make([]byte, bufSize), make([]byte, scm.OOBSize)
	for {
		n, oobn, _, _, err := unix.Recvmsg(src, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			unix.Shutdown(dst, unix.SHUT_WR)
			return err
		}
		fds, err := scm.Rights(oob[:oobn])
		if err == nil {
			var rights []byte
			if len(fds) > 0 {
				rights = unix.UnixRights(fds...)
			}
			err = sendAll(dst, buf[:n], rights)
		}
		scm.CloseAll(fds)
		if err != nil {
			return err
		}
	}
}

// sendAll writes all of p with oob on its first byte.
func sendAll(fd int, p, oob []byte) error {
	for len(p) > 0 {
		n, err := unix.SendmsgN(fd, p, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p, oob = p[n:], nil
	}
	return nil
}
