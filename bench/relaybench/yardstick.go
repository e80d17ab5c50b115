package main

import (
	"errors"
	"flag"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	ys "github.com/one-socket/one-socket/internal/relay/yardstick"

	"github.com/one-socket/one-socket/libspbroker"
)

// yardstick is a relay process in the place of one-socketctl pair
// --connect: it gets its pair from the broker (mode server), connects to
// the far program's path and forwards each read as one send, both ways,
// descriptors with it. It does not keep a descriptor on its byte when
// sends queue up, which is what internal/relay takes care to do; it
// bounds what a relay process costs on this machine:
//
//	-kind floor   two locked threads in blocking system calls, as a C relay
//	-kind naive   two goroutines on Go's poller, as internal/relay runs
//	-kind splice  as floor, but moving the bytes through a pipe with
//	              splice(2), without copying them; it drops descriptors,
//	              so it is for streams without any
func yardstick(args []string) error {
	fs := flag.NewFlagSet("yardstick", flag.ExitOnError)
	kind := fs.String("kind", "floor", "floor, naive or splice")
	sock := fs.String("s", "", "broker socket")
	key := fs.String("k", "", "key")
	connect := fs.String("connect", "", "the far program's path")
	fs.Parse(args)
	a, err := brokerPair(*sock, *key, libspbroker.ModeServer, setupWait)
	if err != nil {
		return err
	}
	b, err := dialPath(*connect, setupWait)
	if err != nil {
		return err
	}
	// No timeouts: an idle relay waits as long as its programs do.
	for _, fd := range []int{a, b} {
		var tv unix.Timeval
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	done := make(chan error, 2)
	switch *kind {
	case "floor":
		go func() { done <- ys.Floor(a, b, chunkSize) }()
		go func() { done <- ys.Floor(b, a, chunkSize) }()
	case "naive":
		ca, cb := connOf(a), connOf(b)
		if ca == nil || cb == nil {
			return errors.New("not a Unix socket")
		}
		go func() { done <- ys.Naive(ca, cb, chunkSize) }()
		go func() { done <- ys.Naive(cb, ca, chunkSize) }()
	case "splice":
		go func() { done <- splicePump(a, b) }()
		go func() { done <- splicePump(b, a) }()
	default:
		return errors.New("-kind: floor, naive or splice")
	}
	return errors.Join(<-done, <-done)
}

func connOf(fd int) *net.UnixConn {
	f := os.NewFile(uintptr(fd), "relayed")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil
	}
	uc, _ := c.(*net.UnixConn)
	return uc
}

// splicePump moves src's bytes to dst through a pipe, on a locked thread
// in blocking system calls: the pages go from one socket's queue to the
// other's without a copy.
func splicePump(src, dst int) error {
	runtime.LockOSThread()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, chunkSize)
	for {
		n, err := unix.Splice(src, nil, p[1], nil, chunkSize, unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			unix.Shutdown(dst, unix.SHUT_WR)
			return err
		}
		for n > 0 {
			m, err := unix.Splice(p[0], nil, dst, nil, int(n), unix.SPLICE_F_MOVE)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			n -= m
		}
	}
}
