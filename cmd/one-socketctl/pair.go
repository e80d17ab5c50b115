package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/paths"
	"github.com/one-socket/one-socket/internal/relay"
	"github.com/one-socket/one-socket/internal/scm"
	"github.com/one-socket/one-socket/libspbroker"
)

// pair gets a pair from the broker, then bridges it to stdin and stdout or
// hands it to a command.
func (a *app) pair(o *options) int {
	key, _ := o.key() // checked by parse
	path, err := paths.BrokerSocket(o.socket, a.getenv, a.euid)
	if err != nil {
		a.errorf("%v", err)
		return exitFailure
	}
	var cmdPath string
	if o.exec != nil {
		// Found before pairing, so that a typing mistake costs no peer.
		if cmdPath, err = exec.LookPath(o.exec[0]); err != nil {
			a.errorf("pair: %v", err)
			return exitNotFound
		}
	}

	var ln *pathListener
	if o.listen != "" {
		// Listening before the pair comes lets the program connect at any
		// time; its connection waits in the backlog.
		mode := os.FileMode(defaultListenMode)
		if o.listenModeSet {
			mode = o.listenMode
		}
		if ln, err = listenPath(o.listen, mode, a.errorf); err != nil {
			a.errorf("pair: %v", err)
			return exitFailure
		}
		defer ln.close()
	}
	brokerKey := key
	if o.handoff {
		brokerKey = relay.HandoffKey(key)
	}

	// A relay with no command of ours catches them from before the wait to
	// its end: one that comes as the pair does is kept for the relay's
	// waits, and none can kill the tool before it cleans up.
	var sigs chan os.Signal
	if o.adapts() && o.exec == nil {
		sigs = make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
	}
	// SIGINT and SIGTERM end the wait; once paired they have their
	// default effect again.
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx := sigCtx
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(sigCtx, o.timeout)
		defer cancel()
	}
	// Asking again is the libraries' default: a broker that restarts
	// (or is not up yet) costs the peer nothing but the wait.
	cfg := &libspbroker.Config{NoRetry: o.noRetry}
	// A command without an adapter gets the socket itself, a descriptor;
	// everything else here works on a connection.
	var f *os.File
	var conn *net.UnixConn
	if o.exec != nil && !o.adapts() && !o.handoff {
		f, err = cfg.GetPair(ctx, path, brokerKey, o.mode)
	} else {
		conn, err = cfg.GetPairConn(ctx, path, brokerKey, o.mode)
	}
	interrupted := sigCtx.Err() != nil
	stopSignals()
	if err != nil {
		a.errorf("%s", describePairError(err, path, key, o, interrupted))
		return exitFailure
	}
	switch {
	case f != nil:
		return a.runWithPair(f, key, cmdPath, o.exec)
	case o.adapts():
		return a.adapt(conn, key, cmdPath, o, ln, sigs)
	case o.handoff:
		res, err := relay.Handoff(conn, relay.Takes, nil)
		if err != nil {
			a.errorf("pair: %v", err)
			return exitFailure
		}
		conn = res.Conn
	}
	if o.exec != nil {
		// --handoff --exec: the command gets the connection handed over.
		f, err := conn.File()
		conn.Close()
		if err != nil {
			a.errorf("pair: %v", err)
			return exitFailure
		}
		return a.runWithPair(f, key, cmdPath, o.exec)
	}
	return a.bridge(conn)
}

// describePairError says in words why no pair came, and, when attempts
// had failed before the wait ended, how the last one failed: a broker that
// refuses the request looks like one that restarts, asked again until the
// timeout.
func describePairError(err error, path string, key []byte, o *options, interrupted bool) string {
	var re *libspbroker.RetryError
	if errors.As(err, &re) {
		end := describeEnd(err, key, o, interrupted)
		if end == "" {
			end = re.Err.Error()
		}
		return fmt.Sprintf("%s; the last of %d attempts failed: %s", end, re.Attempts, describeAttempt(re.Last, path))
	}
	if end := describeEnd(err, key, o, interrupted); end != "" {
		return end
	}
	return describeAttempt(err, path)
}

// describeEnd says why the wait ended, if the user ended it (a signal or
// --timeout); "" if it failed.
func describeEnd(err error, key []byte, o *options, interrupted bool) string {
	switch {
	case interrupted:
		return fmt.Sprintf("interrupted while waiting for a peer for key %s", keyForMessage(key))
	case errors.Is(err, context.DeadlineExceeded) && o.handoff:
		return fmt.Sprintf("no peer for key %s (mode %v) within %v: with --handoff the other end must say --handoff too (the broker sees %s)",
			keyForMessage(key), o.mode, o.timeout, keyForMessage(relay.HandoffKey(key)))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no peer for key %s (mode %v) within %v", keyForMessage(key), o.mode, o.timeout)
	}
	return ""
}

// describeAttempt says in words how one attempt to get a pair failed.
func describeAttempt(err error, path string) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("no broker socket at %s: is one-socket running?", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nobody answers on %s", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Sprintf("no permission to connect to %s", path)
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Sprintf("the broker closed the connection without a pair (it stopped, or refused or dropped the request): %v", err)
	}
	return err.Error()
}

// keyForMessage quotes a printable key, and writes any other in hex.
func keyForMessage(key []byte) string {
	if t := control.KeyText(key); t != "" {
		return fmt.Sprintf("%q", t)
	}
	return fmt.Sprintf("0x%x", key)
}

// bridge copies stdin to the socket and the socket to stdout, netcat
// style: at the end of stdin it shuts down the socket's sending side and
// goes on reading. It returns once the peer has finished sending and
// either stdin is all sent or the peer has closed its socket (so that
// nobody reads any more). It owns and closes conn.
//
// Returning at the peer's end of data alone would lose data: a peer that
// half-closes after sending (as bridge does itself) is still reading, and
// stdin's data may not have gone out yet.
func (a *app) bridge(conn *net.UnixConn) int {
	defer conn.Close()
	gone, err := watchHangUp(conn)
	if err != nil {
		a.errorf("pair: %v", err)
		return exitFailure
	}

	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, a.stdin)
		conn.CloseWrite()
		sent <- err
	}()
	if _, err := io.Copy(a.stdout, conn); err != nil {
		// io.Copy may splice, and then names stdout whatever failed.
		var errno syscall.Errno
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			a.errorf("pair: the peer reset the paired socket (it closed it with data still unread)")
		case errors.As(err, &errno) && !errors.Is(err, syscall.EPIPE):
			a.errorf("pair: receiving from the paired socket or writing to standard output: %v", errno)
		default:
			a.errorf("pair: receiving: %v", err)
		}
		return exitFailure
	}
	select {
	case err := <-sent:
		// A send that failed only because the peer had gone is no error:
		// the peer chose to stop reading.
		if err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			a.errorf("pair: sending: %v", err)
			return exitFailure
		}
	case <-gone:
	}
	return exitOK
}

// watchHangUp returns a channel closed once conn's peer has closed its
// socket (or both directions are shut down): poll(2) with no events
// requested reports only that, and errors.
func watchHangUp(conn *net.UnixConn) (<-chan struct{}, error) {
	fd, err := scm.Dup(conn)
	if err != nil {
		return nil, err
	}
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		defer unix.Close(fd)
		pfd := []unix.PollFd{{Fd: int32(fd)}}
		for {
			if _, err := unix.Poll(pfd, -1); err != unix.EINTR {
				return
			}
		}
	}()
	return gone, nil
}
