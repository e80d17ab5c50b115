package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// getPair is libspbroker's GetPair without its retries: these tests watch
// every connection the daemon ends (a refusal, an expiry, a client lost in
// an upgrade), which a client that asks again would hide.
var getPair = (&spb.Config{NoRetry: true}).GetPair

// testVersion is linked into the daemon under test, to check --version.
const testVersion = "v0.0.0-test"

// daemonBin is the one-socket binary that TestMain builds.
var daemonBin string

// buildFlags are extra flags for building the daemon; race_test.go adds
// -race so that a race test of the suite also races the daemon.
var buildFlags []string

// daemonExtraEnv is added to every daemon's environment.
var daemonExtraEnv []string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if spec := os.Getenv(envAttacker); spec != "" {
		return attacker(spec)
	}
	if spec := os.Getenv(envPairHelper); spec != "" {
		return pairHelper(spec)
	}
	dir, err := os.MkdirTemp("", "one-socket-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	daemonBin = filepath.Join(dir, "one-socket")
	if err := testutil.Build(daemonBin, &testutil.BuildOptions{Version: testVersion, Flags: buildFlags}, "."); err != nil {
		fmt.Fprintf(os.Stderr, "building one-socket: %v\n", err)
		return 1
	}
	return m.Run()
}

// daemon is a one-socket process under test.
type daemon struct {
	t      *testing.T
	path   string // the socket it listens on
	cmd    *exec.Cmd
	stdout testutil.LockedBuffer
	stderr testutil.LockedBuffer
	done   <-chan struct{} // closed when the process has exited (its testutil.Proc's Done)
}

// strippedEnv lists the variables daemonEnv leaves out: they would change
// where or how the daemon runs.
var strippedEnv = []string{envSocketPath, envCtlPath, "GOMAXPROCS", "NOTIFY_SOCKET",
	"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", envDetachFD}

// daemonEnv is the environment for the daemon: the test's own, less
// strippedEnv, plus extra.
func daemonEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if slices.Contains(strippedEnv, name) {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, daemonExtraEnv...)
	return append(env, extra...)
}

// spawn starts the daemon with args and env and does not wait for it.
func spawn(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(daemonBin, args...)
	cmd.Env = env
	return start(t, cmd, "", "one-socket")
}

// start runs cmd (the daemon, or a wrapper that starts it) as a daemon
// listening on path, in a process group of its own that is killed at
// cleanup; label names its output in the log of a failed test. In its own
// group it no longer gets a terminal's ^C with the test, so it is also
// killed if the test process dies before its cleanup.
func start(t *testing.T, cmd *exec.Cmd, path, label string) *daemon {
	t.Helper()
	d := &daemon{t: t, path: path, cmd: cmd}
	cmd.Stdout, cmd.Stderr = &d.stdout, &d.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.logOnFailure(label)
	d.done = testutil.StartProc(t, label, cmd).Done()
	return d
}

// watch reaps d.cmd, which the caller has started with its output in
// d.stdout and d.stderr, and kills it at cleanup if it is still running;
// label names its output in the log of a failed test.
func (d *daemon) watch(label string) {
	d.logOnFailure(label)
	d.done = testutil.WatchProc(d.t, label, d.cmd).Done()
}

// logOnFailure prints the daemon's stderr at cleanup if the test failed.
// Called before the process is watched, it runs after the process is
// killed.
func (d *daemon) logOnFailure(label string) {
	t := d.t
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s stderr:\n%s", label, d.stderr.String())
		}
	})
}

// startDaemon starts a daemon listening on path (passed as --socket, before
// args) and returns once it accepts connections.
func startDaemon(t *testing.T, path string, args ...string) *daemon {
	t.Helper()
	d := spawn(t, daemonEnv(), append([]string{"--socket", path}, args...)...)
	d.path = path
	d.waitAccepting()
	return d
}

// waitAccepting waits until a connect to the daemon's socket succeeds.
func (d *daemon) waitAccepting() {
	t := d.t
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-d.done:
			t.Fatalf("one-socket exited early with status %d:\n%s", d.cmd.ProcessState.ExitCode(), d.stderr.String())
		default:
		}
		c, err := net.DialTimeout("unix", d.path, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("one-socket does not accept on %s: %v\n%s", d.path, err, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exited reports whether the process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// wait waits for the daemon to exit and returns its exit status (-1 if a
// signal killed it).
func (d *daemon) wait() int {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		d.t.Fatalf("one-socket did not exit:\n%s", d.stderr.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

// stop sends sig and returns the exit status.
func (d *daemon) stop(sig syscall.Signal) int {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(sig))
	return d.wait()
}

// runDaemon runs the daemon to completion and returns its status, stdout
// and stderr; for command lines that must make it exit by itself.
func runDaemon(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	d := spawn(t, daemonEnv(), args...)
	code := d.wait()
	return code, d.stdout.String(), d.stderr.String()
}

// fdCount returns the number of descriptors process pid has open.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(ents)
}

// stableFDCount returns pid's descriptor count once it has stopped
// changing, so that connections from earlier steps are settled.
func stableFDCount(t *testing.T, pid int) int {
	t.Helper()
	last := fdCount(t, pid)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		n := fdCount(t, pid)
		if n == last {
			return n
		}
		last = n
	}
	t.Fatalf("descriptor count of %d never settled (last %d)", pid, last)
	return 0
}

// waitFDCount polls until cond holds for pid's descriptor count.
func waitFDCount(t *testing.T, pid int, what string, cond func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := fdCount(t, pid)
		if cond(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptor count of the daemon is %d; want %s", n, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var keySeq atomic.Uint64

// uniqueKey returns a key no other test uses.
func uniqueKey(prefix string) []byte {
	return fmt.Appendf(nil, "%s-%d-%d", prefix, os.Getpid(), keySeq.Add(1))
}

// getPairWire returns a GET_PAIR as the original puts it on the wire.
func getPairWire(key []byte, mode spb.Mode) []byte {
	return spb.NewGetPair(key, mode).AppendEncode(nil)
}

// pairOnce pairs two Go clients through the broker at path and checks that
// the two descriptors they get are connected to each other.
func pairOnce(t *testing.T, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	key := uniqueKey("pair")
	type result struct {
		f   *os.File
		err error
	}
	results := make(chan result, 2)
	for _, mode := range []spb.Mode{spb.ModeServer, spb.ModeClient} {
		go func() {
			f, err := getPair(ctx, path, key, mode)
			results <- result{f, err}
		}()
	}
	a, b := <-results, <-results
	for _, r := range []result{a, b} {
		if r.f != nil {
			defer r.f.Close()
		}
	}
	require.NoError(t, a.err, "GetPair")
	require.NoError(t, b.err, "GetPair")
	expectConnected(t, a.f, b.f)
}

// asConn turns a descriptor received from the broker into a net.Conn,
// which supports deadlines whatever the descriptor's blocking mode.
func asConn(t *testing.T, f *os.File) net.Conn {
	t.Helper()
	c, err := net.FileConn(f)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// expectConnected checks that bytes written on a arrive on b and back.
func expectConnected(t *testing.T, fa, fb *os.File) {
	t.Helper()
	a, b := asConn(t, fa), asConn(t, fb)
	deadline := time.Now().Add(10 * time.Second)
	for _, dir := range [][2]net.Conn{{a, b}, {b, a}} {
		_, err := dir[0].Write([]byte("ping"))
		require.NoError(t, err)
		require.NoError(t, dir[1].SetReadDeadline(deadline))
		buf := make([]byte, 4)
		_, err = io.ReadFull(dir[1], buf)
		require.NoError(t, err)
		require.Equal(t, "ping", string(buf))
	}
}

// logCounter returns the value of name=N in the daemon's stop line.
func logCounter(t *testing.T, stderr, name string) uint64 {
	t.Helper()
	line := logLine(t, stderr, "one-socket stopped")
	m := regexp.MustCompile(`\b` + name + `=(\d+)`).FindStringSubmatch(line)
	require.NotNil(t, m, "no %s= in %q", name, line)
	n, err := strconv.ParseUint(m[1], 10, 64)
	require.NoError(t, err)
	return n
}

// logLine returns the one log line carrying msg.
func logLine(t *testing.T, stderr, msg string) string {
	t.Helper()
	var found []string
	for line := range strings.SplitSeq(stderr, "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) {
			found = append(found, line)
		}
	}
	require.Len(t, found, 1, "lines with msg=%q in:\n%s", msg, stderr)
	return found[0]
}

// waitLog waits until the daemon's stderr has a line with msg and returns
// that line.
func (d *daemon) waitLog(msg string) string {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for line := range strings.SplitSeq(d.stderr.String(), "\n") {
			if strings.Contains(line, `msg="`+msg+`"`) {
				return line
			}
		}
		select {
		case <-d.done:
			d.t.Fatalf("one-socket exited (status %d) before logging %q:\n%s", d.cmd.ProcessState.ExitCode(), msg, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("one-socket did not log %q:\n%s", msg, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireTool returns the path of a program the test needs, and fails the
// test, naming the Debian package to install, when it is missing.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed, and this test needs it: apt-get install %s (.ci/run does): %v", name, pkg, err)
	}
	return p
}

// activation is one socket systemd-socket-activate creates and passes.
type activation struct {
	path   string
	fdname string // "" passes the socket without a name
}

// socketActivate runs the daemon under systemd-socket-activate, which
// binds socks, passes them as LISTEN_FDS (named with --fdname when given)
// and runs the daemon with args at the first connection. env is given to
// the daemon (systemd-socket-activate passes on only a few variables of
// its own). It returns once the daemon has logged its start; d.path is
// the first socket.
func socketActivate(t *testing.T, socks []activation, env []string, args ...string) *daemon {
	t.Helper()
	sa := requireTool(t, "systemd-socket-activate", "systemd")
	var cmdline []string
	for _, s := range socks {
		cmdline = append(cmdline, "-l", s.path)
		if s.fdname != "" {
			cmdline = append(cmdline, "--fdname="+s.fdname)
		}
	}
	for _, kv := range append(slices.Clone(daemonExtraEnv), env...) {
		cmdline = append(cmdline, "-E", kv)
	}
	cmdline = append(cmdline, daemonBin)
	cmdline = append(cmdline, args...)

	cmd := exec.Command(sa, cmdline...)
	cmd.Env = daemonEnv()
	d := start(t, cmd, socks[0].path, "systemd-socket-activate and one-socket")
	// systemd-socket-activate starts the daemon at the first connection;
	// that connection waits in the queue until the daemon accepts it.
	// It binds before it listens: a connect in between is refused, so
	// that answer means "try again", not failure.
	waitSocketFile(t, socks[0].path, d)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("unix", socks[0].path, 5*time.Second)
		if err == nil {
			c.Close()
			return d
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			require.NoError(t, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSocketFile waits until path exists, or d exits.
func waitSocketFile(t *testing.T, path string, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Lstat(path); err == nil {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("exited (status %d) before %s appeared:\n%s", d.cmd.ProcessState.ExitCode(), path, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear:\n%s", path, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// controlRequest sends one request line on the control socket at path and
// returns the decoded reply.
func controlRequest(t *testing.T, path, request string) map[string]any {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, request+"\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadBytes('\n')
	require.NoError(t, err, "reading the reply to %s", request)
	var reply map[string]any
	require.NoError(t, json.Unmarshal(line, &reply), "reply %q", line)
	return reply
}

// requireGone checks that nothing is at each path.
func requireGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		_, err := os.Lstat(p)
		require.ErrorIs(t, err, fs.ErrNotExist, "%s is still there", p)
	}
}
