package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// The far end of each configuration is a program of its own, started by
// the run: "relaybench echo" returns every message with the descriptor it
// came with, "relaybench sink" swallows a stream and acknowledges it.

// endFlags says how a far end gets its connection: from the broker (-s,
// -k), by listening on a path (-listen), by connecting to one (-connect),
// or inherited (-fd, as one-socketctl pair -- CMD gives it).
type endFlags struct {
	sock, key string
	listen    string
	connect   string
	fd        int
}

func (e *endFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.sock, "s", "", "broker socket, with -k")
	fs.StringVar(&e.key, "k", "", "key, asked for in mode server")
	fs.StringVar(&e.listen, "listen", "", "listen on this path and accept one connection")
	fs.StringVar(&e.connect, "connect", "", "connect to this path")
	fs.IntVar(&e.fd, "fd", -1, "use this inherited descriptor")
}

// open gets the connection and says "ready" on standard output, which the
// run waits for.
func (e *endFlags) open() (int, error) {
	var fd int
	var err error
	switch {
	case e.fd >= 0:
		fd, err = e.fd, prepare(e.fd)
	case e.key != "":
		fd, err = brokerPair(e.sock, e.key, libspbroker.ModeServer, setupWait)
	case e.listen != "":
		var lfd int
		if lfd, err = listenPath(e.listen); err == nil {
			fd, err = acceptOne(lfd, e.listen, setupWait)
		}
	case e.connect != "":
		fd, err = dialPath(e.connect, setupWait)
	default:
		err = errors.New("no connection: give -k, -listen, -connect or -fd")
	}
	if err != nil {
		return -1, err
	}
	fmt.Println("ready")
	return fd, nil
}

// setupWait bounds each step of setting up a configuration.
const setupWait = 20 * time.Second

// msgSize is the latency message: a small request, as vhost-user's are.
const msgSize = 64

// echo returns each 64-byte message with the descriptors it brought, until
// the end of the stream.
func echo(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	var e endFlags
	e.register(fs)
	fs.Parse(args)
	fd, err := e.open()
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	r := newReceiver(fd)
	buf := make([]byte, msgSize)
	var fds []int
	for {
		var ok bool
		ok, fds, err = r.recvFull(buf, fds[:0])
		if err != nil || !ok {
			closeAll(fds)
			return err
		}
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		err = sendAll(fd, buf, oob)
		closeAll(fds)
		if err != nil {
			return err
		}
	}
}

// ackSize is the sink's acknowledgement: bytes and descriptors received.
const ackSize = 16

// sink reads a stream to its end, closing the descriptors it carries, then
// acknowledges it and keeps the connection open until standard input
// ends, so that the run can measure a relay that has carried the stream.
func sink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	var e endFlags
	e.register(fs)
	fs.Parse(args)
	fd, err := e.open()
	if err != nil {
		return err
	}
	r := newReceiver(fd)
	buf := make([]byte, chunkSize)
	var total, nfds uint64
	var fds []int
	for {
		var n int
		n, fds, err = r.recv(buf, fds[:0])
		nfds += uint64(len(fds))
		closeAll(fds)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		total += uint64(n)
	}
	ack := make([]byte, ackSize)
	binary.LittleEndian.PutUint64(ack, total)
	binary.LittleEndian.PutUint64(ack[8:], nfds)
	if err := sendAll(fd, ack, nil); err != nil {
		return err
	}
	io.Copy(io.Discard, os.Stdin)
	return unix.Close(fd)
}
