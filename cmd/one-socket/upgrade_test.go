package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// spawnAt starts the daemon binary at bin, which a test may replace.
func spawnAt(t *testing.T, bin, sock string, args ...string) *daemon {
	t.Helper()
	saved := daemonBin
	daemonBin = bin
	d := spawn(t, daemonEnv(), append([]string{"--socket", sock}, args...)...)
	daemonBin = saved
	d.path = sock
	d.waitAccepting()
	return d
}

// copyDaemon copies the test binary into dir and returns the copy's path.
func copyDaemon(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(daemonBin)
	require.NoError(t, err)
	bin := filepath.Join(dir, "one-socket")
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	return bin
}

// waitLogCount waits until the daemon's stderr has n lines with msg.
func (d *daemon) waitLogCount(msg string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	count := func() int {
		s := d.stderr.String()
		return strings.Count(s, `msg="`+msg+`"`) + strings.Count(s, "msg="+msg+" ")
	}
	for count() < n {
		select {
		case <-d.done:
			d.t.Fatalf("one-socket exited before logging %q %d times:\n%s", msg, n, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("one-socket did not log %q %d times:\n%s", msg, n, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waiter is a client that sent its GET_PAIR and waits for its peer.
type waiter struct {
	key  []byte
	conn *spb.Conn
}

func startWaiters(t *testing.T, path string, n int) []waiter {
	t.Helper()
	var ws []waiter
	for range n {
		c, err := spb.Dial(path)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		w := waiter{key: uniqueKey("wait"), conn: c}
		require.NoError(t, c.SendGetPair(w.key, spb.ModeServer))
		ws = append(ws, w)
	}
	return ws
}

// pairWaiters pairs every waiter with a new client and checks the pairs.
func pairWaiters(t *testing.T, path string, ws []waiter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, w := range ws {
		f, err := getPair(ctx, path, w.key, spb.ModeClient)
		require.NoError(t, err)
		require.NoError(t, w.conn.SetDeadline(time.Now().Add(10*time.Second)))
		g, err := w.conn.ReceiveSetPair()
		require.NoError(t, err)
		expectConnected(t, f, g)
		f.Close()
		g.Close()
	}
}

func TestUpgradeBySIGUSR2(t *testing.T) {
	dir := t.TempDir()
	sock, ctl, pidPath := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket"), filepath.Join(dir, "one.pid")
	d := spawnAt(t, copyDaemon(t, dir), sock, "--ctl-socket", ctl, "--pidfile", pidPath)
	pid := d.pid()

	// Two waiters with the same key: FIFO must hold across the upgrade.
	key := uniqueKey("fifo")
	var first, second *spb.Conn
	for _, p := range []**spb.Conn{&first, &second} {
		c, err := spb.Dial(sock)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SendGetPair(key, spb.ModeServer))
		*p = c
		waitWaiting(t, ctl, map[**spb.Conn]int{&first: 1, &second: 2}[p])
	}
	ws := startWaiters(t, sock, 3)
	// A client that sent half its request.
	halfKey := uniqueKey("half")
	wire := getPairWire(halfKey, spb.ModeServer)
	half, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer half.Close()
	_, err = half.Write(wire[:len(wire)/2])
	require.NoError(t, err)
	waitWaiting(t, ctl, 5)

	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "msg=upgraded clients=6 waiting=5 kept=0 counters=carried policy=none ")
	assert.Equal(t, pid, d.pid())
	data, err := os.ReadFile(pidPath)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(pid), strings.TrimSpace(string(data)))

	// FIFO: the first waiter gets the first peer.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, c := range []*spb.Conn{first, second} {
		f, err := getPair(ctx, sock, key, spb.ModeClient)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		g, err := c.ReceiveSetPair()
		require.NoError(t, err)
		expectConnected(t, f, g)
		f.Close()
		g.Close()
	}
	pairWaiters(t, sock, ws)

	// The half-sent request completes.
	_, err = half.Write(wire[len(wire)/2:])
	require.NoError(t, err)
	f, err := getPair(ctx, sock, halfKey, spb.ModeClient)
	require.NoError(t, err)
	f.Close()
	buf := make([]byte, spb.MessageSize)
	oob := make([]byte, 64)
	require.NoError(t, half.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, oobn, _, _, err := half.(*net.UnixConn).ReadMsgUnix(buf, oob)
	require.NoError(t, err)
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	fds, err := syscall.ParseUnixRights(&msgs[0])
	require.NoError(t, err)
	for _, fd := range fds {
		syscall.Close(fd)
	}

	// The control socket is served and the pid file still locked.
	st := controlRequest(t, ctl, `{"command":"status"}`)
	assert.Equal(t, true, st["ok"])
	code, _, stderr := runDaemon(t, "--socket", filepath.Join(dir, "other.socket"), "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "holds")

	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl, pidPath)
}

func TestUpgradeByControl(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	d := spawnAt(t, copyDaemon(t, dir), sock, "--ctl-socket", ctl)
	ws := startWaiters(t, sock, 2)
	waitWaiting(t, ctl, 2)

	reply := controlRequest(t, ctl, `{"command":"upgrade"}`)
	assert.Equal(t, true, reply["ok"], "%v", reply)
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "msg=upgraded clients=2 ")
	pairWaiters(t, sock, ws)
	pairOnce(t, sock)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl)
}

func TestUpgradeRefused(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl)
	ws := startWaiters(t, sock, 2)
	waitWaiting(t, ctl, 2)

	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho 2\n"), 0o755))
	reply := controlRequest(t, ctl, `{"command":"upgrade"}`)
	assert.Equal(t, false, reply["ok"])
	assert.Contains(t, reply["error"], "handover version")

	require.NoError(t, os.Remove(bin))
	reply = controlRequest(t, ctl, `{"command":"upgrade"}`)
	assert.Equal(t, false, reply["ok"])
	assert.Contains(t, reply["error"], "upgrade refused")

	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgrade refused", 3)
	waitWaiting(t, ctl, 2)

	// A binary that passes the check and is gone at the exec: the daemon
	// serves the same clients again, control socket included.
	// (Its configuration check removes it.)
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"+
		"case \"$1\" in --handover-version) echo 1;; --handover-check) rm -f \"$0\";; esac\n"), 0o755))
	reply = controlRequest(t, ctl, `{"command":"upgrade"}`)
	assert.Equal(t, true, reply["ok"], "%v", reply)
	d.waitLogCount("upgrade failed; serving on", 1)
	waitWaiting(t, ctl, 2)
	pairWaiters(t, sock, ws)
	pairOnce(t, sock)
	assert.NotContains(t, d.stderr.String(), `msg=upgraded `)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl)
}

func TestUpgradeUnderLoad(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	d := spawnAt(t, copyDaemon(t, dir), sock, "--ctl-socket", ctl)
	ws := startWaiters(t, sock, 200)
	waitWaiting(t, ctl, 200)

	var stop atomic.Bool
	var pairs, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			key := uniqueKey("load")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			errs := make(chan error, 2)
			for _, mode := range []spb.Mode{spb.ModeServer, spb.ModeClient} {
				go func() {
					f, err := getPair(ctx, sock, key, mode)
					if f != nil {
						f.Close()
					}
					errs <- err
				}()
			}
			for range 2 {
				if err := <-errs; err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
			cancel()
			pairs.Add(1)
		}
	})
	for i := range 10 {
		require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
		d.waitLogCount("upgraded", i+1)
	}
	stop.Store(true)
	wg.Wait()
	assert.Zero(t, failures.Load(), "first error: %v", firstErr.Load())
	assert.Positive(t, pairs.Load())
	pairWaiters(t, sock, ws)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl)
}

func TestHandoverVersionFlag(t *testing.T) {
	code, stdout, _ := runDaemon(t, "--handover-version")
	assert.Equal(t, 0, code)
	assert.Equal(t, "1\n", stdout)
}

// TestUpgradeDetached upgrades a --detach daemon started by a relative
// path with relative files: it runs from / by then, yet the upgrade finds
// its binary, log file and pid file.
func TestUpgradeDetached(t *testing.T) {
	dir := t.TempDir()
	copyDaemon(t, dir)
	t.Chdir(dir)
	saved := daemonBin
	daemonBin = "./one-socket"
	code, _, stderr := runDaemon(t, "--detach", "--socket", "one.socket", "--pidfile", "one.pid",
		"--log-file", "one.log", "--ctl-socket", "ctl.socket")
	daemonBin = saved
	require.Equal(t, 0, code, "stderr: %s", stderr)
	data, err := os.ReadFile("one.pid")
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	killOnCleanup(t, pid)
	sock := filepath.Join(dir, "one.socket")
	ws := startWaiters(t, sock, 3)
	waitWaiting(t, filepath.Join(dir, "ctl.socket"), 3)

	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "one.log"))
		return strings.Contains(string(b), "msg=upgraded clients=3 ")
	}, 15*time.Second, 10*time.Millisecond)
	pairWaiters(t, sock, ws)
	pairOnce(t, sock)

	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	waitExited(t, pid)
	requireGone(t, sock, filepath.Join(dir, "ctl.socket"), filepath.Join(dir, "one.pid"))
}

// TestUpgradeRefusedBadPolicy checks that an upgrade whose new program
// could not load the policy is refused before anything is handed over,
// and that a new program that still fails to load it keeps the clients
// and denies every request until a reload succeeds.
func TestUpgradeRefusedBadPolicy(t *testing.T) {
	dir := t.TempDir()
	sock, ctl, policyPath := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket"), filepath.Join(dir, "policy")
	const good = "allow uid=0\n"
	writePolicy(t, policyPath, good)
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl, "--policy", policyPath)
	ws := startWaiters(t, sock, 2)
	waitWaiting(t, ctl, 2)

	writePolicy(t, policyPath, "allow key=[\n")
	reply := controlRequest(t, ctl, `{"command":"upgrade"}`)
	assert.Equal(t, false, reply["ok"])
	assert.Contains(t, reply["error"], "the policy does not load")
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgrade refused", 2)
	assert.NotContains(t, d.stderr.String(), `msg=upgrading`)
	pairWaiters(t, sock, ws[:1])

	// The check passes, and the policy breaks before the new program
	// reads it: it must keep the waiting client, deny new requests, and
	// allow them again once the policy is fixed and reloaded.
	writePolicy(t, policyPath, good)
	script := fmt.Sprintf("#!/bin/sh\n"+
		"case \"$1\" in --handover-version|--handover-check) exec %[1]q \"$@\";; esac\n"+
		"printf 'allow key=[\\n' >%[2]q\n"+
		"exec %[1]q \"$@\"\n", daemonBin, policyPath)
	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "cannot load the policy after the upgrade: every request is denied until a reload succeeds")
	waitWaiting(t, ctl, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := getPair(ctx, sock, ws[1].key, spb.ModeClient)
	require.Error(t, err, "a request was let through with no policy in force")
	d.waitLogCount("request denied", 1)
	waitWaiting(t, ctl, 1)

	writePolicy(t, policyPath, good)
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGHUP))
	d.waitLogCount("policy reloaded", 1)
	pairWaiters(t, sock, ws[1:])
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// newProgram writes, at bin, a script that passes the upgrade's checks by
// running the real daemon and then, for the start itself, runs the real
// daemon with extra flags: a new program that fails as it starts.
func newProgram(t *testing.T, bin string, startFlags string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\n"+
		"case \"$1\" in --handover-version|--handover-check) exec %[1]q \"$@\";; esac\n"+
		"exec %[1]q \"$@\" %[2]s\n", daemonBin, startFlags)
	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
}

// TestUpgradeGivesBack upgrades to a program that passes every check and
// then cannot start: it must give the clients back to the previous binary,
// by its descriptor (its file is replaced), which serves them on.
func TestUpgradeGivesBack(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl)
	pid := d.pid()
	ws := startWaiters(t, sock, 3)
	waitWaiting(t, ctl, 3)

	newProgram(t, bin, "--max-conns=-1")
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	line := d.waitLog("the new program could not start; this one took the clients back")
	assert.Contains(t, line, "--max-conns must be 0 (derived) or more")
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "msg=upgraded clients=3 ")
	assert.Equal(t, pid, d.pid())
	waitWaiting(t, ctl, 3)
	pairWaiters(t, sock, ws)
	pairOnce(t, sock)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl)
}

// TestUpgradeRefusedConfig upgrades to a binary that would not start with
// the daemon's flags: the new program's own check refuses it before
// anything is handed over.
func TestUpgradeRefusedConfig(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl)
	ws := startWaiters(t, sock, 1)
	script := fmt.Sprintf("#!/bin/sh\n"+
		"[ \"$1\" = --handover-version ] && exec %[1]q \"$1\"\n"+
		"exec %[1]q \"$@\" --no-such-flag\n", daemonBin)
	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	reply := controlRequest(t, ctl, `{"command":"upgrade"}`)
	assert.Equal(t, false, reply["ok"])
	assert.Contains(t, reply["error"], "the new program would not start")
	assert.Contains(t, reply["error"], "flag provided but not defined: -no-such-flag")
	pairWaiters(t, sock, ws)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestUpgradeKeepsLimit checks that the connection limit derived from the
// descriptor limit is the same after an upgrade as before, with clients
// taken over (the new program once counted them as its own overhead).
func TestUpgradeKeepsLimit(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	d := spawnAt(t, copyDaemon(t, dir), sock, "--ctl-socket", ctl)
	before := status(t, ctl)["max_conns"]
	ws := startWaiters(t, sock, 200)
	waitWaiting(t, ctl, 200)
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Equal(t, before, status(t, ctl)["max_conns"])
	pairWaiters(t, sock, ws)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestUpgradeWhenFull fills the broker to its connection limit with
// silent clients and upgrades: the new program must take them all over
// with the same limit (it once found no room left and exited, losing
// every client).
func TestUpgradeWhenFull(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	bin := copyDaemon(t, dir)
	cmd := exec.Command("sh", "-c", `ulimit -n 256 && exec "$@"`, "sh", bin,
		"--socket", sock, "--ctl-socket", ctl, "--handshake-timeout", "5m", "--max-conns-per-uid", "-1")
	cmd.Env = daemonEnv()
	d := start(t, cmd, sock, "one-socket")
	d.waitAccepting()
	limit := int(status(t, ctl)["max_conns"].(float64))
	require.Less(t, limit, 256)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for len(held) < limit {
		c, err := net.Dial("unix", sock)
		require.NoError(t, err)
		held = append(held, c)
	}
	require.Eventually(t, func() bool { return status(t, ctl)["conns"] == float64(limit) }, time.Minute, 10*time.Millisecond)
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), fmt.Sprintf("msg=upgraded clients=%d ", limit))
	st := status(t, ctl)
	assert.EqualValues(t, limit, st["max_conns"])
	assert.EqualValues(t, limit, st["conns"])
	for _, c := range held {
		c.Close()
	}
	held = nil
	require.Eventually(t, func() bool { return status(t, ctl)["conns"] == float64(0) }, time.Minute, 10*time.Millisecond)
	pairOnce(t, sock)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestUpgradeKeeperTakesOver upgrades a daemon without a file descriptor
// store to a binary that passes every check and is SIGKILLed as it
// starts: the daemon's keeper must take every client back and serve them
// under its own pid, with the pid file and the control socket.
func TestUpgradeKeeperTakesOver(t *testing.T) {
	dir := t.TempDir()
	sock, ctl, pidPath := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket"), filepath.Join(dir, "one.pid")
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl, "--pidfile", pidPath)
	ws := startWaiters(t, sock, 4)
	waitWaiting(t, ctl, 4)

	script := "#!/bin/sh\n" +
		"case \"$1\" in --handover-version|--handover-check) exec " + daemonBin + " \"$@\";; esac\n" +
		"kill -KILL $$\n"
	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	// The keeper holds the daemon's standard error, so d.done waits for
	// it: the process's end is its pid's.
	require.Eventually(t, func() bool { return syscall.Kill(d.pid(), 0) != nil }, 20*time.Second, 10*time.Millisecond)

	var keeper int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidPath)
		if err != nil {
			return false
		}
		keeper, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && keeper != d.pid()
	}, 20*time.Second, 10*time.Millisecond, "no keeper took over:\n%s", d.stderr.String())
	t.Cleanup(func() { syscall.Kill(keeper, syscall.SIGKILL) })
	assert.Contains(t, d.waitLog("the new program could not start; this one took the clients back"), "its keeper took the clients back")
	assert.EqualValues(t, keeper, status(t, ctl)["pid"])
	waitWaiting(t, ctl, 4)
	pairWaiters(t, sock, ws)
	pairOnce(t, sock)

	require.NoError(t, syscall.Kill(keeper, syscall.SIGTERM))
	require.Eventually(t, func() bool { return syscall.Kill(keeper, 0) != nil }, 20*time.Second, 10*time.Millisecond)
	requireGone(t, sock, ctl, pidPath)
}

// TestUpgradeCarriesCounters checks that the totals in status cover the
// daemon's run across an upgrade, and across an upgrade whose exec fails.
func TestUpgradeCarriesCounters(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl)
	for range 3 {
		pairOnce(t, sock)
	}
	// The counter follows the second SET_PAIR, which a client may read
	// before it is counted.
	pairedIs := func(n float64) bool { return status(t, ctl)["paired_total"] == n }
	require.Eventually(t, func() bool { return pairedIs(3) }, 20*time.Second, 10*time.Millisecond)
	before := status(t, ctl)
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	after := status(t, ctl)
	for _, k := range []string{"paired_total", "accepted_total"} {
		assert.Equal(t, before[k], after[k], k)
	}

	// An exec that fails (the binary is gone after its check): the
	// broker made again in this process carries them too.
	require.NoError(t, os.Remove(bin))
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"+
		"case \"$1\" in --handover-version) echo 1;; --handover-check) rm -f \"$0\";; esac\n"), 0o755))
	reply := controlRequest(t, ctl, `{"command":"upgrade"}`)
	require.Equal(t, true, reply["ok"], "%v", reply)
	d.waitLogCount("upgrade failed; serving on", 1)
	assert.EqualValues(t, 3, status(t, ctl)["paired_total"])
	pairOnce(t, sock)
	assert.Eventually(t, func() bool { return pairedIs(4) }, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// openFDs counts the descriptors process pid holds.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(ents)
}

// TestUpgradeNoDescriptors upgrades a daemon whose descriptor limit was
// lowered under it (prlimit, as an operator would): first to what it
// holds, when the upgrade's own checks cannot run and it is refused; then
// to a few more, enough for the checks and too few for the new program,
// which finds no room for clients and gives them back. The previous
// program must serve the same waiters, in the same process, with the
// limit it had: it once failed as the new one had, and every client was
// lost.
func TestUpgradeNoDescriptors(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	d := spawnAt(t, copyDaemon(t, dir), sock, "--ctl-socket", ctl)
	pid := d.pid()
	before := status(t, ctl)["max_conns"]
	ws := startWaiters(t, sock, 3)
	waitWaiting(t, ctl, 3)

	var rl unix.Rlimit
	require.NoError(t, unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &rl))
	full := unix.Rlimit{Cur: uint64(openFDs(t, pid)), Max: rl.Max}
	require.NoError(t, unix.Prlimit(pid, unix.RLIMIT_NOFILE, &full, nil))
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	assert.Contains(t, d.waitLog("upgrade refused"), "too many open files")
	require.NoError(t, unix.Prlimit(pid, unix.RLIMIT_NOFILE, &rl, nil))
	waitWaiting(t, ctl, 3)

	// 12 more: the checks need 7 at most; the new program keeps 32 free
	// besides what it holds, and finds the limit leaves no room.
	n := uint64(openFDs(t, pid) + 12)
	require.NoError(t, unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}, nil))
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	line := d.waitLog("the new program could not start; this one took the clients back")
	assert.Contains(t, line, fmt.Sprintf("RLIMIT_NOFILE of %d leaves no room for clients", n))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "msg=upgraded clients=3 waiting=3 ")
	st := status(t, ctl)
	assert.EqualValues(t, pid, st["pid"])
	assert.Equal(t, before, st["max_conns"])
	pairWaiters(t, sock, ws)
	pairOnce(t, sock)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl)
}

// manyClients is how many clients TestUpgradeManyClients holds at the
// upgrade: as many as once shrank the limit from 19,958 to 16,656.
const manyClients = 3_300

// TestUpgradeManyClients upgrades a daemon that holds 3,300 clients of
// every kind: root's waiters, silent connections and half-sent requests,
// and uid 1001's silent and half-sent ones. The new program must take all
// of them over with the connection limit the daemon had (it once counted
// them as its own overhead, and the limit stayed shrunk after they left),
// keep that limit once they are gone and across another upgrade, and pair.
func TestUpgradeManyClients(t *testing.T) {
	testutil.NeedRoot(t)
	var rl unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
	require.Greater(t, rl.Cur, uint64(manyClients+500), "the test needs more descriptors than RLIMIT_NOFILE allows")
	o := newOpenDir(t)
	sock, ctl := filepath.Join(o.dir, "one.socket"), filepath.Join(o.dir, "ctl.socket")
	d := spawnAt(t, copyDaemon(t, o.dir), sock, "--ctl-socket", ctl, "--socket-mode", "0666",
		"--handshake-timeout", "10m")
	before := status(t, ctl)
	connsAre := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return status(t, ctl)["conns"] == float64(n) },
			time.Minute, 10*time.Millisecond, "the daemon never held %d connections", n)
	}

	// Root: 300 waiters, 700 silent, 300 half-sent; uid 1001: 1,000 each.
	ws := startWaiters(t, sock, 300)
	wire := getPairWire(uniqueKey("half"), spb.ModeServer)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range 1000 {
		c, err := net.Dial("unix", sock)
		require.NoError(t, err)
		held = append(held, c)
		if i < 300 {
			_, err = c.Write(wire[:len(wire)/2])
			require.NoError(t, err)
		}
	}
	hostile := []*testutil.Proc{
		startAttacker(t, o, "hold", sock, "1000", "0"),
		startAttacker(t, o, "hold", sock, "1000", strconv.Itoa(len(wire)/2)),
	}
	connsAre(manyClients)

	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), fmt.Sprintf("msg=upgraded clients=%d waiting=300 ", manyClients))
	st := status(t, ctl)
	for _, k := range []string{"max_conns", "max_conns_per_uid"} {
		assert.Equal(t, before[k], st[k], "%s right after the upgrade", k)
	}
	// The new engine counts the clients as it takes them in, after the
	// log line: all of them, none lost.
	connsAre(manyClients)
	pairOnce(t, sock)
	pairWaiters(t, sock, ws)

	for _, c := range held {
		c.Close()
	}
	held = nil
	for _, p := range hostile {
		p.Kill()
	}
	connsAre(0)
	assert.Equal(t, before["max_conns"], status(t, ctl)["max_conns"], "once the clients left")
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 2)
	assert.Equal(t, before["max_conns"], status(t, ctl)["max_conns"], "after another upgrade")
	pairOnce(t, sock)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// BenchmarkUpgradeGap measures how long nobody accepts during an upgrade
// by SIGUSR2: the old program serves through the new binary's checks, and
// stops from the hand-over until the new program serves; clients that
// connect in between wait in the socket's queue. A client pairs back to
// back while the daemon, holding the waiters given, upgrades once an
// iteration; the slowest pairing of each upgrade is the gap plus one
// pairing, reported as its median and worst, with the daemon's own
// median time from "upgrading" to "upgraded" (its log has milliseconds).
//
//	go test -run '^$' -bench UpgradeGap -benchtime 20x ./cmd/one-socket/
func BenchmarkUpgradeGap(b *testing.B) {
	for _, waiters := range []int{0, 1000} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			sock := filepath.Join(b.TempDir(), "one.socket")
			var stderr testutil.LockedBuffer
			cmd := exec.Command(daemonBin, "--socket", sock, "--ctl-socket", "none")
			cmd.Env, cmd.Stderr = daemonEnv(), &stderr
			testutil.StartProc(b, "one-socket", cmd)
			for {
				if c, err := net.Dial("unix", sock); err == nil {
					c.Close()
					break
				}
				time.Sleep(time.Millisecond)
			}
			for range waiters {
				c, err := spb.Dial(sock)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				if err := c.SendGetPair(uniqueKey("wait"), spb.ModeServer); err != nil {
					b.Fatal(err)
				}
			}

			// The pairer: one pairing at a time, each one's start and
			// length kept.
			type pairing struct {
				start time.Time
				took  time.Duration
			}
			var mu sync.Mutex
			var done []pairing
			var failed atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					key, start := uniqueKey("gap"), time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					errs := make(chan error, 1)
					go func() {
						f, err := getPair(ctx, sock, key, spb.ModeServer)
						if err == nil {
							f.Close()
						}
						errs <- err
					}()
					f, err := getPair(ctx, sock, key, spb.ModeClient)
					if err == nil {
						f.Close()
					}
					err = errors.Join(err, <-errs)
					cancel()
					if err != nil {
						failed.CompareAndSwap(nil, err)
						return
					}
					mu.Lock()
					done = append(done, pairing{start, time.Since(start)})
					mu.Unlock()
				}
			})
			defer func() {
				close(stop)
				wg.Wait()
			}()

			var worst []time.Duration
			upgrades := 0
			for b.Loop() {
				mu.Lock()
				from := len(done)
				mu.Unlock()
				sent := time.Now()
				if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
					b.Fatal(err)
				}
				upgrades++
				for strings.Count(stderr.String(), "msg=upgraded ") < upgrades {
					if err := failed.Load(); err != nil {
						b.Fatalf("a pairing failed: %v", err)
					}
					if time.Since(sent) > 20*time.Second {
						b.Fatalf("no upgrade:\n%s", stderr.String())
					}
					time.Sleep(time.Millisecond)
				}
				// The pairer runs one pairing at a time: once one began after
				// the new program served, the one held up by the upgrade is
				// done.
				served := time.Now()
				var w time.Duration
				for {
					mu.Lock()
					after := slices.Clone(done[from:])
					mu.Unlock()
					if n := len(after); n > 0 && after[n-1].start.After(served) {
						for _, p := range after {
							w = max(w, p.took)
						}
						break
					}
					if err := failed.Load(); err != nil {
						b.Fatalf("a pairing failed: %v", err)
					}
					time.Sleep(time.Millisecond)
				}
				worst = append(worst, w)
			}
			if err := failed.Load(); err != nil {
				b.Fatalf("a pairing failed: %v", err)
			}
			b.StopTimer()
			slices.Sort(worst)
			b.ReportMetric(float64(worst[len(worst)/2].Microseconds())/1000, "worst-pairing-p50-ms")
			b.ReportMetric(float64(worst[len(worst)-1].Microseconds())/1000, "worst-pairing-max-ms")
			b.ReportMetric(float64(medianGap(b, stderr.String()).Microseconds())/1000, "daemon-gap-p50-ms")
		})
	}
}

// medianGap is the median time from each "upgrading" line of a text log
// to the "upgraded" line after it.
func medianGap(b *testing.B, log string) time.Duration {
	var gaps []time.Duration
	var begun time.Time
	for line := range strings.SplitSeq(log, "\n") {
		stamp, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		switch {
		case err != nil:
		case strings.Contains(line, "msg=upgrading "):
			begun = at
		case strings.Contains(line, "msg=upgraded ") && !begun.IsZero():
			gaps = append(gaps, at.Sub(begun))
		}
	}
	if len(gaps) == 0 {
		b.Fatalf("no upgrade in the log:\n%s", log)
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}
