package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/systemd"
)

// Running a command with the pair as descriptor 3, as systemd's socket
// activation would (sd_listen_fds(3)), needs LISTEN_PID to be the
// command's own pid, which exists only after the fork and must be in the
// environment given to execve. Go cannot run code in the child between
// the two (syscall.ForkExec takes the environment before forking), and
// one-socketctl cannot exec the command itself: it would first have to put
// the socket on descriptor 3 with dup2, and in a Go program descriptor 3
// is typically the runtime's own (Go 1.25 and later keep the cgroup CPU
// limit files open from start-up and re-read them every second).
//
// So one-socketctl starts itself again as a shim ("one-socketctl
// __exec-with-pid PATH ARG0 ARG...") through os/exec, which places the
// socket on descriptor 3 in the child before the shim runs. The shim, a
// fresh process whose descriptor 3 is the socket from its first
// instruction, sets LISTEN_PID to its own pid and execs the command, which
// keeps that pid. The parent waits and exits with the command's status.

// shimCommand is the hidden first argument that makes one-socketctl the
// shim.
const shimCommand = "__exec-with-pid"

// listenFD is where the command finds the socket.
const listenFD = systemd.ListenFDsStart

// Exit statuses of the command-running path, as shells use them.
const (
	exitNotFound  = 127 // the command does not exist
	exitCannotRun = 126 // it exists but cannot be run
)

// selfExe names this program's executable; it works even if the file was
// replaced or removed since it started.
const selfExe = "/proc/self/exe"

// runWithPair runs the command argv (argv[0] found at path) with f as
// descriptor 3 and the LISTEN_ variables set, waits for it and returns its
// exit status, or 128 plus the signal that killed it. It owns and closes
// f. SIGTERM and SIGHUP sent to one-socketctl are passed on to the
// command; SIGINT and SIGQUIT, which a terminal sends to the command as
// well, are not.
func (a *app) runWithPair(f *os.File, key []byte, path string, argv []string) int {
	c, err := a.startCommand(f, key, path, argv)
	if err != nil {
		return exitCannotRun
	}
	return c.wait()
}

// child is a program one-socketctl started and waits for.
type child struct {
	a    *app
	cmd  *exec.Cmd
	name string
	sigs chan os.Signal
	done chan struct{} // closed once it has exited
	err  error         // what Wait returned, once done is closed
}

// startCommand starts argv (argv[0] found at path) and passes on SIGTERM
// and SIGHUP to it until it exits. With f, it runs as runWithPair says,
// and startCommand owns and closes f; without, it runs with no LISTEN_
// variables. A failure to start is reported here.
func (a *app) startCommand(f *os.File, key []byte, path string, argv []string) (*child, error) {
	c := &child{a: a, name: argv[0], sigs: make(chan os.Signal, 4), done: make(chan struct{})}
	c.cmd = &exec.Cmd{
		Path:   path,
		Args:   argv,
		Env:    systemd.ListenEnv(os.Environ()),
		Stdin:  a.stdin,
		Stdout: a.stdout,
		Stderr: a.stderr,
	}
	if f != nil {
		c.cmd.Path = selfExe
		c.cmd.Args = append([]string{"one-socketctl", shimCommand, path}, argv...)
		c.cmd.Env = systemd.ListenEnv(os.Environ(), fdName(key))
		c.cmd.ExtraFiles = []*os.File{f} // descriptor 3 in the child
	}
	// Caught rather than ignored, so that the command starts with the
	// default dispositions (exec resets caught signals, not ignored ones).
	signal.Notify(c.sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	err := c.cmd.Start()
	if f != nil {
		f.Close()
	}
	if err != nil {
		signal.Stop(c.sigs)
		a.errorf("pair: cannot start %s: %v", argv[0], err)
		return nil, err
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	go func() {
		for {
			select {
			case s := <-c.sigs:
				if s == syscall.SIGTERM || s == syscall.SIGHUP {
					c.cmd.Process.Signal(s)
				}
			case <-c.done:
				return
			}
		}
	}()
	return c, nil
}

// wait waits for the command and returns its exit status, or 128 plus the
// signal that killed it.
func (c *child) wait() int {
	<-c.done
	signal.Stop(c.sigs)
	var ee *exec.ExitError
	switch {
	case c.err == nil:
		return exitOK
	case errors.As(c.err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	c.a.errorf("pair: %s: %v", c.name, c.err)
	return exitFailure
}

// stop asks the command to end (SIGTERM) and returns its status.
func (c *child) stop() int {
	c.cmd.Process.Signal(syscall.SIGTERM)
	return c.wait()
}

// fdName returns the LISTEN_FDNAMES entry for key: the key itself if
// systemd would accept it as a name (at most 255 printable ASCII
// characters, no ':'), else "spbroker".
func fdName(key []byte) string {
	if !systemd.ValidFDName(string(key)) {
		return "spbroker"
	}
	return string(key)
}

// execWithPID is the shim: args are the command's path, then its argv. It
// returns only if the exec fails.
func execWithPID(args []string, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintf(stderr, "one-socketctl: %s is for one-socketctl's own use\n", shimCommand)
		return exitUsage
	}
	path, argv := args[0], args[1:]
	if _, err := unix.FcntlInt(listenFD, unix.F_GETFD, 0); err != nil {
		fmt.Fprintf(stderr, "one-socketctl: %s: descriptor %d is not open\n", shimCommand, listenFD)
		return exitCannotRun
	}
	// The parent set LISTEN_FDS and LISTEN_FDNAMES; only the pid is new.
	env := systemd.WithListenPID(os.Environ(), os.Getpid())
	err := syscall.Exec(path, argv, env)
	fmt.Fprintf(stderr, "one-socketctl: %s: %v\n", argv[0], err)
	if errors.Is(err, syscall.ENOENT) {
		return exitNotFound
	}
	return exitCannotRun
}
