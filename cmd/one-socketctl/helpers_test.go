package main

// Test harness: TestMain builds one-socketctl; a backend is a real pairing
// engine and control server running in the test process on sockets in a
// temporary directory; helpers run the tool as a process against it.

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
	"github.com/one-socket/one-socket/libspbroker"
)

// testVersion is linked into the tool under test.
const testVersion = "v0.0.0-ctltest"

// waitFor bounds every wait for a process or a condition: a broken tool
// fails the test instead of hanging it.
const waitFor = 10 * time.Second

// ctlBin is the one-socketctl that TestMain builds; binDir holds it.
var ctlBin, binDir string

func TestMain(m *testing.M) {
	if role := os.Getenv(programVar); role != "" {
		os.Exit(testProgram(role, os.Args[1:]))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var err error
	binDir, err = os.MkdirTemp("", "one-socketctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	ctlBin = filepath.Join(binDir, "one-socketctl")
	if err := testutil.Build(ctlBin, &testutil.BuildOptions{Version: testVersion}, "."); err != nil {
		fmt.Fprintf(os.Stderr, "building one-socketctl: %v\n", err)
		return 1
	}
	return m.Run()
}

// backend is a broker and its control server, in this process.
type backend struct {
	*broker.Broker
	dir     string // holds both sockets
	socket  string // the broker socket
	ctlPath string // the control socket, beside it as the default wants
	level   *slog.LevelVar
	stops   chan struct{} // receives a value per stop request
	server  *control.Server
}

// startBackend serves a broker on DIR/one.socket and its control protocol
// on DIR/one-socket.ctl until the test ends.
func startBackend(t *testing.T) *backend {
	t.Helper()
	dir := shortTempDir(t)
	be := &backend{
		dir:     dir,
		socket:  filepath.Join(dir, "one.socket"),
		ctlPath: filepath.Join(dir, "one-socket.ctl"),
		level:   new(slog.LevelVar),
		stops:   make(chan struct{}, 4),
	}
	var err error
	be.Broker, err = broker.New(&broker.Config{MaxConns: 64})
	require.NoError(t, err)
	bln, err := net.ListenUnix("unix", &net.UnixAddr{Name: be.socket, Net: "unix"})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- be.Serve(bln) }()
	t.Cleanup(func() {
		be.Shutdown()
		assert.ErrorIs(t, <-served, broker.ErrClosed)
	})
	require.Eventually(t, func() bool { _, err := be.Waiting(); return err == nil }, waitFor, time.Millisecond)

	be.server = control.NewServer(control.BrokerHandler(be.Broker, control.DaemonInfo{
		Version:       "v-backend",
		Socket:        be.socket,
		ControlSocket: be.ctlPath,
		Start:         time.Now(),
		Level:         be.level,
		Stop:          func() { be.stops <- struct{}{} },
	}), nil)
	cln, err := net.ListenUnix("unix", &net.UnixAddr{Name: be.ctlPath, Net: "unix"})
	require.NoError(t, err)
	ctlServed := make(chan error, 1)
	go func() { ctlServed <- be.server.Serve(cln) }()
	t.Cleanup(func() {
		assert.NoError(t, be.server.Close())
		assert.NoError(t, <-ctlServed)
	})
	return be
}

// shortTempDir returns a temporary directory whose socket paths fit in
// sun_path (t.TempDir's may not, with a long test name).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitWaiting waits until n clients wait in the broker.
func (be *backend) waitWaiting(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return be.Stats().Waiting == n }, waitFor, time.Millisecond,
		"waiting clients never became %d (now %d)", n, be.Stats().Waiting)
}

// park makes a client wait in the broker with key and mode.
func (be *backend) park(t *testing.T, key []byte, mode libspbroker.Mode) *libspbroker.Conn {
	t.Helper()
	c, err := libspbroker.Dial(be.socket)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SendGetPair(key, mode))
	return c
}

// testEnv is the environment of the processes under test: the test's own,
// less what would change where they look or what they pass on.
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "ONE_SOCKET_PATH", "ONE_SOCKET_CTL_PATH", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a one-socketctl process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser // nil unless started with pipeStdin
	stdout testutil.LockedBuffer
	stderr testutil.LockedBuffer
	done   chan struct{}
}

// stdinPipe asks start for a pipe to the process's standard input.
var stdinPipe = strings.NewReader("<pipe>")

// start runs one-socketctl with args. stdin is its standard input: nil for
// /dev/null, stdinPipe for a pipe the test writes through p.stdin.
func start(t *testing.T, env []string, stdin io.Reader, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(ctlBin, args...), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if stdin == stdinPipe {
		w, err := p.cmd.StdinPipe()
		require.NoError(t, err)
		p.stdin = w
	} else {
		p.cmd.Stdin = stdin
	}
	require.NoError(t, p.cmd.Start())
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process and returns its exit status.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitFor):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("one-socketctl %q did not exit; stdout %q, stderr %q", p.cmd.Args[1:], p.stdout.String(), p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// running reports whether the process is still running after d.
func (p *proc) running(d time.Duration) bool {
	select {
	case <-p.done:
		return false
	case <-time.After(d):
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

// result is what a finished process printed and its exit status.
type result struct {
	stdout, stderr string
	code           int
}

// run runs one-socketctl with args and stdin to completion.
func run(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	p := start(t, env, strings.NewReader(stdin), args...)
	code := p.wait()
	return result{p.stdout.String(), p.stderr.String(), code}
}

// ctl runs a control command against be's control socket.
func (be *backend) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, testEnv(), "", append([]string{"--ctl-socket", be.ctlPath}, args...)...)
}

// inProcess runs the tool's run function with an environment of env
// (name=value pairs) and effective uid euid, without starting a process.
func inProcess(euid int, env map[string]string, args ...string) result {
	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return env[k] }, euid: euid}
	code := a.run(args)
	return result{stdout.String(), stderr.String(), code}
}

// listenMute listens on path and accepts connections that it never
// answers, until the test ends.
func listenMute(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
}

// staleSocket leaves a socket file at path that nobody listens on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
}
