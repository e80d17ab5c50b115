package systemdtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/libspbroker"
)

// What the units name, and what the tests use.
const (
	brokerSocket  = "/run/one.socket"
	controlSocket = "/run/one-socket.ctl"
	service       = "one-socket.service"
	brokerUnit    = "one-socket.socket"
	controlUnit   = "one-socket-control.socket"

	// envInside is set by the unit that runs the tests in the container.
	envInside = "ONE_SOCKET_IN_NSPAWN"

	// crowd is how many clients wait through a restart, a crash or an
	// upgrade.
	crowd = 1000
)

func TestMain(m *testing.M) {
	if os.Getenv(envInside) == "1" {
		if err := raiseNofile(); err != nil {
			fmt.Fprintln(os.Stderr, "systemdtest:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// raiseNofile raises the soft descriptor limit to the hard one: a crowd
// of waiters and their partners hold two descriptors each, and each pair
// two more for a moment.
func raiseNofile() error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if need := uint64(4*crowd + 100); lim.Cur < need {
		return fmt.Errorf("the descriptor limit is %d, and %d waiting clients with their partners need %d: "+
			"raise the hard nofile limit of the shell that runs nspawn.sh (ulimit -Hn)", lim.Cur, crowd, need)
	}
	return nil
}

// inside skips t outside the container. In it, a failing t logs what
// systemd says about the broker's units and the end of their journal, so
// that a CI log says why.
func inside(t *testing.T) {
	t.Helper()
	if os.Getenv(envInside) != "1" {
		t.Skip("runs only in the container that test/systemd/nspawn.sh boots")
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		out, _ := runErr("systemctl", "status", "--no-pager", "--full", "--lines=0", service, brokerUnit, controlUnit)
		t.Logf("systemctl status:\n%s", out)
		out, _ = runErr("journalctl", "--no-pager", "--lines=150", "--output=short-monotonic",
			"--unit="+service, "--unit="+brokerUnit, "--unit="+controlUnit)
		t.Logf("the journal of the broker's units, the last 150 lines:\n%s", out)
	})
}

// runErr runs a command, at most two minutes, and returns what it wrote
// to standard output and error.
func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// run is runErr for a command that must succeed.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return out
}

// prop is a property of a unit, as systemctl show gives it.
func prop(t *testing.T, unit, name string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "systemctl", "show", "--value", "--property="+name, unit))
}

// answer is what a systemctl query that answers with its exit status
// (is-enabled, is-failed, is-active) prints, whatever that status.
func answer(args ...string) string {
	out, _ := runErr("systemctl", args...)
	return strings.TrimSpace(out)
}

// journal is the messages of the service's journal, without metadata.
func journal(t *testing.T) string {
	t.Helper()
	return run(t, "journalctl", "--no-pager", "--output=cat", "--unit="+service)
}

// waitFor polls cond every tenth of a second until it holds, and fails t
// if it does not within timeout; cond's second result says what it saw.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, timeout, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// props are properties of a unit, by name.
func props(unit string, names ...string) map[string]string {
	out, _ := runErr("systemctl", "show", "--property="+strings.Join(names, ","), unit)
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// waitRunning waits until the service runs with a main process other than
// old (a MainPID, "" for any) and returns its MainPID.
func waitRunning(t *testing.T, what, old string) string {
	t.Helper()
	var pid string
	waitFor(t, what, time.Minute, func() (bool, string) {
		p := props(service, "ActiveState", "SubState", "MainPID")
		pid = p["MainPID"]
		return p["ActiveState"] == "active" && p["SubState"] == "running" && pid != "" && pid != "0" && pid != old,
			fmt.Sprintf("%s/%s, MainPID %s", p["ActiveState"], p["SubState"], pid)
	})
	return pid
}

// brokerStatus asks the daemon for its status on the control socket.
func brokerStatus() (control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st control.Status
	raw, err := control.Call(ctx, controlSocket, control.Request{Command: control.CmdStatus})
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	return st, err
}

// waitWaiting waits until the daemon has n clients waiting for a peer.
func waitWaiting(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d clients waiting", n), time.Minute, func() (bool, string) {
		st, err := brokerStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Waiting == n, fmt.Sprintf("%d waiting, %d connections", st.Waiting, st.Conns)
	})
}

// waitKept waits until n waiting clients are in systemd's store, each
// under its own name (the daemon's status counts them), so that a crash
// cannot lose them.
func waitKept(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d clients kept for a crash", n), time.Minute, func() (bool, string) {
		st, err := brokerStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Kept == n, fmt.Sprintf("%d kept, %d waiting", st.Kept, st.Waiting)
	})
}

// connected checks that a and b are the two ends of one connection, each
// way, and closes both.
func connected(a, b *os.File) error {
	defer a.Close()
	defer b.Close()
	ca, err := net.FileConn(a)
	if err != nil {
		return err
	}
	defer ca.Close()
	cb, err := net.FileConn(b)
	if err != nil {
		return err
	}
	defer cb.Close()
	deadline := time.Now().Add(30 * time.Second)
	ca.SetDeadline(deadline)
	cb.SetDeadline(deadline)
	for i, ends := range [][2]net.Conn{{ca, cb}, {cb, ca}} {
		msg := []byte(fmt.Sprintf("through the pair, way %d", i+1))
		if _, err := ends[0].Write(msg); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(ends[1], got); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if string(got) != string(msg) {
			return fmt.Errorf("sent %q, the other end read %q", msg, got)
		}
	}
	return nil
}

// pairOnce pairs two clients, server and client, on key and checks the
// pair they get.
func pairOnce(t *testing.T, key string) {
	t.Helper()
	require.NoError(t, pairErr(key))
}

// pairErr pairs two clients on key, each asking again through a restart
// as GetPair does, and checks the pair; it reports what failed instead of
// failing the test, for the goroutines that make load.
func pairErr(key string) error { return pairWithin(key, time.Minute) }

// pairWithin is pairErr giving up after d.
func pairWithin(key string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	type result struct {
		f   *os.File
		err error
	}
	server := make(chan result, 1)
	go func() {
		f, err := libspbroker.GetPair(ctx, brokerSocket, []byte(key), libspbroker.ModeServer)
		server <- result{f, err}
	}()
	c, cerr := libspbroker.GetPair(ctx, brokerSocket, []byte(key), libspbroker.ModeClient)
	s := <-server
	switch {
	case s.err != nil:
		return fmt.Errorf("key %q, the server's GetPair: %w", key, s.err)
	case cerr != nil:
		s.f.Close()
		return fmt.Errorf("key %q, the client's GetPair: %w", key, cerr)
	}
	if err := connected(s.f, c); err != nil {
		return fmt.Errorf("key %q: the pair: %w", key, err)
	}
	return nil
}

// hungUp reports whether err is the broker's hanging up: the end of the
// connection, or a reset.
func hungUp(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

// refused checks that a client asking for key is disconnected without a
// pair, as the policy's refusal does, rather than left waiting. It asks
// once: GetPair may try again after a hang-up.
func refused(t *testing.T, key string) {
	t.Helper()
	c, err := libspbroker.Dial(brokerSocket)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	require.NoError(t, c.SendGetPair([]byte(key), libspbroker.ModeServer))
	f, err := c.ReceiveSetPair()
	if err == nil {
		f.Close()
		t.Fatalf("key %q: paired, but the policy should refuse it", key)
	}
	require.True(t, hungUp(err), "key %q: the broker should hang up on a refused client, not: %v", key, err)
}

// waiter is a client that has sent its GET_PAIR (mode server) and waits
// for the SET_PAIR.
type waiter struct {
	key  string
	conn *libspbroker.Conn
	done chan struct{} // closed when ReceiveSetPair returned
	file *os.File      // what it returned
	err  error
}

// park connects n clients with keys PREFIX-0000 and up, which then wait
// for their peers. They are closed when t ends.
func park(t *testing.T, prefix string, n int) []*waiter {
	t.Helper()
	ws := make([]*waiter, 0, n)
	t.Cleanup(func() {
		for _, w := range ws {
			w.conn.Close()
			<-w.done
			if w.file != nil {
				w.file.Close()
			}
		}
	})
	for i := 0; i < n; i++ {
		w := &waiter{key: fmt.Sprintf("%s-%04d", prefix, i), done: make(chan struct{})}
		c, err := libspbroker.Dial(brokerSocket)
		require.NoError(t, err, "client %d of %d", i+1, n)
		w.conn = c
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		if err := c.SendGetPair([]byte(w.key), libspbroker.ModeServer); err != nil {
			c.Close()
			require.NoError(t, err, "client %d of %d", i+1, n)
		}
		ws = append(ws, w)
		go func() {
			defer close(w.done)
			w.file, w.err = c.ReceiveSetPair()
		}()
	}
	return ws
}

// tally counts failures by their text, to sum a thousand up in a line.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (ta *tally) add(what string) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if ta.n == nil {
		ta.n = map[string]int{}
	}
	ta.n[what]++
}

func (ta *tally) String() string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var parts []string
	for what, n := range ta.n {
		parts = append(parts, fmt.Sprintf("%d× %s", n, what))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// keyless drops the key from an error's text, so that a thousand
// failures of one kind count as one.
func keyless(err error, key string) string {
	return strings.ReplaceAll(err.Error(), key, "KEY")
}

// requireAllPaired sends each waiter its partner (the same key, mode
// client) and fails t unless every pair is made and works, within two
// minutes in all. A partner whose waiter was hung up gives up at once
// instead of waiting for it.
func requireAllPaired(t *testing.T, ws []*waiter, after string) {
	t.Helper()
	var (
		paired   atomic.Int64
		failures tally
		wg       sync.WaitGroup
		slots    = make(chan struct{}, 100)
	)
	all, cancelAll := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelAll()
	for _, w := range ws {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			ctx, cancel := context.WithCancel(all)
			defer cancel()
			go func() {
				select {
				case <-w.done:
					if w.err != nil {
						cancel()
					}
				case <-ctx.Done():
				}
			}()
			waiterFailed := func() bool {
				if w.err != nil {
					failures.add("waiter: " + keyless(w.err, w.key))
					return true
				}
				return false
			}
			f, err := libspbroker.GetPair(ctx, brokerSocket, []byte(w.key), libspbroker.ModeClient)
			if err != nil {
				select {
				case <-w.done:
					if waiterFailed() {
						return
					}
				default:
				}
				failures.add("partner: " + keyless(err, w.key))
				return
			}
			select {
			case <-w.done:
			case <-all.Done():
				f.Close()
				failures.add("the waiter got no SET_PAIR in time, its partner did")
				return
			}
			if waiterFailed() {
				f.Close()
				return
			}
			file := w.file
			w.file = nil
			if err := connected(file, f); err != nil {
				failures.add("the pair: " + keyless(err, w.key))
				return
			}
			paired.Add(1)
		}()
	}
	wg.Wait()
	if n := int(paired.Load()); n != len(ws) {
		t.Fatalf("after %s, %d of %d waiting clients paired; %d did not: %s",
			after, n, len(ws), len(ws)-n, failures.String())
	}
}

// requireHungUp fails t unless the broker hangs up on every waiter within
// half a minute: each sees the end of its connection or a reset, not a
// pairing.
func requireHungUp(t *testing.T, ws []*waiter, after string) {
	t.Helper()
	var failures tally
	bad := 0
	timeout := time.After(30 * time.Second)
	for _, w := range ws {
		select {
		case <-w.done:
		case <-timeout:
			t.Fatalf("after %s, a waiting client was neither paired nor hung up within 30 s", after)
		}
		switch {
		case w.err == nil:
			bad++
			failures.add("paired")
		case !hungUp(w.err):
			bad++
			failures.add(keyless(w.err, w.key))
		}
	}
	if bad > 0 {
		t.Fatalf("after %s, %d of %d waiting clients were not hung up: %s", after, bad, len(ws), failures.String())
	}
}
