package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/relay"
	"github.com/one-socket/one-socket/libspbroker"
)

// pair's adapters, for programs that cannot take a connected socket: with
// --listening-fd the program gets a listening socket as descriptor 3, with
// --connect it listens on a path, with --listen it connects to one. The
// tool makes or accepts the one connection to the program and relays it
// with the brokered socket (internal/relay), or with --handoff gives it to
// the other end.

// sunPathMax is the size of sun_path, which holds a socket's path and its
// terminating NUL.
const sunPathMax = 108

// defaultWait is how long a program has, once paired, to accept, to
// connect, or to make its path appear.
const defaultWait = 30 * time.Second

// defaultListenMode is --listen's socket mode: the tool's own user only.
const defaultListenMode = 0o600

// adapts reports whether pair relays to its program rather than handing
// the brokered socket to it.
func (o *options) adapts() bool { return o.listeningFD || o.connect != "" || o.listen != "" }

// checkAdapter validates pair's adapter flags.
func (o *options) checkAdapter() error {
	n := 0
	for _, set := range []bool{o.listeningFD, o.connect != "", o.listen != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return usagef("pair: --listening-fd, --connect and --listen exclude each other")
	case o.listeningFD && o.exec == nil:
		return usagef("pair: --listening-fd needs a command after --, to give the listening socket to")
	case o.listenModeSet && o.listen == "":
		return usagef("pair: --listen-mode goes with --listen")
	case o.wait != 0 && n == 0:
		return usagef("pair: --wait goes with --listening-fd, --connect or --listen")
	}
	for _, p := range []struct{ flag, path string }{{"connect", o.connect}, {"listen", o.listen}} {
		if len(p.path) >= sunPathMax {
			return usagef("pair: --%s PATH is %d bytes long; a Unix socket's path must be shorter than sun_path's %d bytes", p.flag, len(p.path), sunPathMax)
		}
	}
	if o.handoff {
		key, _ := o.key()
		if err := libspbroker.CheckKey(relay.HandoffKey(key)); err != nil {
			return usagef("pair: with --handoff KEY may be at most %d bytes (the broker sees KEY%s)", libspbroker.MaxKeyLength-len(relay.HandoffSuffix), relay.HandoffSuffix)
		}
	}
	return nil
}

// adapt joins the brokered socket, which it owns, to the program the
// adapter flags name, starting CMD if there is one, and returns the exit
// status: CMD's when there is one. Without CMD, sigs brings SIGINT and
// SIGTERM, which end the waits and the relay so that the deferred
// clean-up (--listen's path) runs.
func (a *app) adapt(brokered *net.UnixConn, key []byte, cmdPath string, o *options, ln *pathListener, sigs <-chan os.Signal) int {
	wait := o.wait
	if wait == 0 {
		wait = defaultWait
	}
	progName := "the program"
	var prog *child
	var own *net.UnixConn
	var err error
	switch {
	case o.listeningFD:
		progName = filepath.Base(o.exec[0])
		own, prog, err = a.startListening(key, cmdPath, o.exec, wait)
	default:
		if o.exec != nil {
			progName = filepath.Base(o.exec[0])
			if prog, err = a.startCommand(nil, key, cmdPath, o.exec); err != nil {
				brokered.Close()
				return exitCannotRun
			}
		}
		if o.connect != "" {
			own, err = dialWait(o.connect, wait, prog, sigs)
		} else {
			own, err = ln.acceptWait(wait, prog, sigs)
		}
	}
	if err != nil {
		brokered.Close()
		a.errorf("pair: %v", err)
		return a.failed(prog)
	}
	defer own.Close()

	peer := brokered
	if o.handoff {
		res, err := relay.Handoff(brokered, relay.Holds, own)
		if err != nil {
			a.errorf("pair: %v", err)
			return a.failed(prog)
		}
		if res.Gave {
			// The program's peer is the other end's now.
			own.Close()
			if prog != nil {
				return prog.wait()
			}
			return exitOK
		}
		peer = res.Conn
	}
	defer peer.Close()

	relayed := make(chan error, 1)
	go func() {
		relayed <- relay.Relay(relay.End{Conn: own, Name: progName}, relay.End{Conn: peer, Name: "the brokered socket"})
	}()
	if prog != nil {
		status := prog.wait()
		// The program's exit closed its end; what it sent last is still
		// on its way. Bounded, in case a child of it keeps the socket.
		select {
		case err = <-relayed:
		case <-time.After(5 * time.Second):
			own.Close()
			peer.Close()
			err = <-relayed
		}
		if err != nil && !relay.PeerGone(err) {
			a.errorf("pair: %v", err)
		}
		return status
	}
	select {
	case err = <-relayed:
	case s := <-sigs:
		own.Close()
		peer.Close()
		<-relayed
		return 128 + int(s.(syscall.Signal))
	}
	if err != nil && !relay.PeerGone(err) {
		a.errorf("pair: %v", err)
		return exitFailure
	}
	return exitOK
}

// failed is the exit status after the tool failed to join prog, if
// any, to its peer: prog's own if it had already exited (the reason it
// never connected), else a failure, once prog is stopped.
func (a *app) failed(prog *child) int {
	if prog == nil {
		return exitFailure
	}
	select {
	case <-prog.done:
		return prog.wait()
	default:
	}
	prog.stop()
	return exitFailure
}

// startListening starts argv with a listening socket as descriptor 3,
// connects to it and waits for the program to accept.
//
// The socket is bound in a fresh 0700 directory, not in the abstract
// namespace: an abstract name can be reached by every process in the
// network namespace, which could connect to the program first (to a
// vhost-user back-end, say, and read its disk). The path is removed as
// soon as the tool has connected, so the program's only client is the
// tool.
func (a *app) startListening(key []byte, cmdPath string, argv []string, wait time.Duration) (*net.UnixConn, *child, error) {
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "one-socketctl-")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(dir)
	addr := &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"}
	defer os.Remove(addr.Name)
	if len(addr.Name) >= sunPathMax {
		return nil, nil, fmt.Errorf("the temporary directory %s is too deep for a socket's path (sun_path holds %d bytes): set TMPDIR", dir, sunPathMax)
	}
	l, err := net.ListenUnix("unix", addr)
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	if err != nil {
		return nil, nil, err
	}
	prog, err := a.startCommand(lf, key, cmdPath, argv)
	if err != nil {
		return nil, nil, errCannotStart
	}
	// It waits in the backlog until the program accepts.
	own, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		return nil, prog, err
	}
	os.Remove(addr.Name)
	if err := waitAccepted(l, wait, prog); err != nil {
		own.Close()
		return nil, prog, err
	}
	return own, prog, nil
}

var errCannotStart = errors.New("the command did not start")

// waitAccepted waits until prog has accepted the one connection made to
// l: a listening socket polls readable while a connection waits.
func waitAccepted(l *net.UnixListener, wait time.Duration, prog *child) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		var pending bool
		var perr error
		if err := rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, perr = unix.Poll(pfd, 0)
			pending = pfd[0].Revents&unix.POLLIN != 0
		}); err != nil {
			return err
		}
		if perr != nil && perr != unix.EINTR {
			return os.NewSyscallError("poll", perr)
		}
		if !pending && perr == nil {
			return nil
		}
		select {
		case <-prog.done:
			return fmt.Errorf("%s exited before accepting a connection on descriptor 3", prog.name)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept a connection on descriptor 3 within %v (--wait)", prog.name, wait)
		}
	}
}

// errInterrupted ends a wait on SIGINT or SIGTERM.
var errInterrupted = errors.New("interrupted")

// dialWait connects to path, trying again while nothing listens there yet,
// for up to wait, until prog, if any, exits, or until a signal comes on
// sigs.
func dialWait(path string, wait time.Duration, prog *child, sigs <-chan os.Signal) (*net.UnixConn, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	deadline := time.Now().Add(wait)
	var exited <-chan struct{}
	if prog != nil {
		exited = prog.done
	}
	for {
		c, err := net.DialUnix("unix", nil, addr)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nothing listens on %s after %v (--wait): %w", path, wait, err)
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%s exited before listening on %s", prog.name, path)
		case <-sigs:
			return nil, errInterrupted
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pathListener is --listen's socket, which it removes once it has accepted
// its one connection or the tool ends.
type pathListener struct {
	l    *net.UnixListener
	path string
	ino  uint64 // the socket file's inode: only that file is removed
}

// listenPath listens on path with the given mode. A stale socket there
// (nobody listening) is replaced, which logf says; anything else there is
// refused and left alone.
func listenPath(path string, mode os.FileMode, logf func(string, ...any)) (*pathListener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("--listen %s: it exists and is not a socket; not touching it", path)
	case err == nil:
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("--listen %s: a program already listens there", path)
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("--listen %s: cannot tell whether it is in use: %w", path, derr)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
		logf("pair: replacing the stale socket %s", path)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	// bind creates the file with the umask's mode; set both before, so
	// that no chmod by name can be redirected afterwards.
	old := unix.Umask(0o777 &^ int(mode.Perm()))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	l.SetUnlinkOnClose(false)
	p := &pathListener{l: l, path: path}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil {
		p.ino = st.Ino
	}
	return p, nil
}

// acceptWait accepts one connection within wait, until prog, if any,
// exits, or until a signal comes on sigs; then it stops listening.
func (p *pathListener) acceptWait(wait time.Duration, prog *child, sigs <-chan os.Signal) (*net.UnixConn, error) {
	defer p.close()
	p.l.SetDeadline(time.Now().Add(wait))
	type result struct {
		c   *net.UnixConn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := p.l.AcceptUnix()
		accepted <- result{c, err}
	}()
	var exited <-chan struct{}
	if prog != nil {
		exited = prog.done
	}
	select {
	case r := <-accepted:
		if errors.Is(r.err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("nobody connected to %s within %v (--wait)", p.path, wait)
		}
		return r.c, r.err
	case <-exited:
		p.l.Close()
		if r := <-accepted; r.err == nil {
			r.c.Close()
		}
		return nil, fmt.Errorf("%s exited before connecting to %s", prog.name, p.path)
	case <-sigs:
		p.l.Close()
		if r := <-accepted; r.err == nil {
			r.c.Close()
		}
		return nil, errInterrupted
	}
}

// close stops listening and removes the socket file if it is still the
// one bound here.
func (p *pathListener) close() {
	if p == nil || p.l == nil {
		return
	}
	p.l.Close()
	p.l = nil
	var st unix.Stat_t
	if err := unix.Lstat(p.path, &st); err == nil && st.Ino == p.ino && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		os.Remove(p.path)
	}
}
