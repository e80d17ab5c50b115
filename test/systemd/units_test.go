package systemdtest

// The units as meson installs them (nspawn.sh's "meson" layer), with the
// two sockets enabled as "systemctl enable" does, in a freshly booted
// container: the service has not run yet when a test begins.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/libspbroker"
)

// TestActivation: the sockets listen from boot on, and the first client
// starts the service, which serves it.
func TestActivation(t *testing.T) {
	inside(t)
	for _, u := range []string{brokerUnit, controlUnit} {
		require.Equal(t, "enabled", answer("is-enabled", u), "%s", u)
		require.Equal(t, "active", prop(t, u, "ActiveState"), "%s after boot", u)
	}
	require.FileExists(t, brokerSocket)
	require.Equal(t, "inactive", prop(t, service, "ActiveState"), "the service before any client")
	require.Equal(t, "0", prop(t, service, "ExecMainStartTimestampMonotonic"),
		"the service ran before any client came")

	pairOnce(t, "activation")
	waitRunning(t, "the service, started by the first client", "")
	require.Equal(t, "0", prop(t, service, "NRestarts"))
}

// statusLine is the STATUS= text the daemon sends, as systemctl status
// shows it.
var statusLine = regexp.MustCompile(`Status: "waiting (\d+), paired (\d+), conns (\d+)"`)

// TestStatus: systemctl status shows the daemon's counters.
func TestStatus(t *testing.T) {
	inside(t)
	pairOnce(t, "status")
	park(t, "status", 1)
	// The daemon sends the line anew every two seconds while it changes.
	waitFor(t, `systemctl status shows "waiting 1, paired 1"`, 30*time.Second, func() (bool, string) {
		out, _ := runErr("systemctl", "status", "--no-pager", "--lines=0", service)
		m := statusLine.FindStringSubmatch(out)
		if m == nil {
			return false, out
		}
		return m[1] == "1" && m[2] == "1" && m[3] == "1", m[0]
	})
}

// TestRestart: a thousand clients wait through systemctl restart (the
// unit's --fdstore keeps them in systemd's file descriptor store), and
// each pairs with a partner that comes after it.
func TestRestart(t *testing.T) {
	inside(t)
	run(t, "systemctl", "start", service)
	old := waitRunning(t, "the service", "")
	ws := park(t, "restart", crowd)
	waitWaiting(t, crowd)
	run(t, "systemctl", "restart", service)
	waitRunning(t, "the service after systemctl restart", old)
	requireAllPaired(t, ws, "systemctl restart")
}

// TestKill: a thousand clients wait through the daemon's SIGKILL, after
// which Restart=on-failure starts it again, and each pairs: each waiter
// is in the store under its own name once it has waited a moment, and the
// next process reads its request again (doc/one-socket.md, Surviving a
// crash).
func TestKill(t *testing.T) {
	inside(t)
	run(t, "systemctl", "start", service)
	old := waitRunning(t, "the service", "")
	ws := park(t, "kill", crowd)
	waitWaiting(t, crowd)
	waitKept(t, crowd)
	// Pairs made without pause through the kill: those in flight then
	// are asked again by GetPair, and end paired, but for one the kill
	// may catch between its two SET_PAIRs (doc/one-socket.md, Surviving
	// a crash): its waiter gets a dead end and its newcomer waits on.
	stop := make(chan struct{})
	var loadPairs, loadFailed atomic.Int64
	var loadErr atomic.Value
	var load sync.WaitGroup
	for g := range 2 {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := pairWithin(fmt.Sprintf("load-%d-%d", g, i), 15*time.Second); err != nil {
					if loadFailed.Add(1) > 1 {
						loadErr.Store(err)
						return
					}
					t.Logf("a pairing caught by the kill between its SET_PAIRs: %v", err)
					continue
				}
				loadPairs.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	before := loadPairs.Load()
	run(t, "systemctl", "kill", "--signal=KILL", service)
	waitRunning(t, "the service, started again by Restart=on-failure", old)
	require.Equal(t, "1", prop(t, service, "NRestarts"))
	requireAllPaired(t, ws, "systemctl kill --signal=KILL and the restart")
	time.Sleep(200 * time.Millisecond)
	close(stop)
	load.Wait()
	if err, _ := loadErr.Load().(error); err != nil {
		t.Fatalf("a pairing under load across the kill: %v", err)
	}
	require.Greater(t, loadPairs.Load(), before, "pairs made under load after the kill")
	t.Logf("%d pairs made under load, %d before the kill", loadPairs.Load(), before)
}

// TestStop: a stop for good hangs up on the waiting clients, whether it
// is the service that stops (its sockets stay, and the next client starts
// it again) or the sockets with it.
func TestStop(t *testing.T) {
	inside(t)
	const n = 100
	run(t, "systemctl", "start", service)
	waitRunning(t, "the service", "")
	ws := park(t, "stop", n)
	waitWaiting(t, n)
	run(t, "systemctl", "stop", service)
	requireHungUp(t, ws, "systemctl stop "+service)
	require.Equal(t, "inactive", prop(t, service, "ActiveState"))
	require.Equal(t, "active", prop(t, brokerUnit, "ActiveState"), "the socket, after the service stopped")

	// The next clients start it again; now the sockets go too.
	ws = park(t, "stop-again", n)
	waitWaiting(t, n)
	run(t, "systemctl", "stop", brokerUnit, controlUnit)
	requireHungUp(t, ws, "systemctl stop of the socket units")
	for _, u := range []string{service, brokerUnit, controlUnit} {
		require.Equal(t, "inactive", prop(t, u, "ActiveState"), "%s", u)
	}
	for _, p := range []string{brokerSocket, controlSocket} {
		require.NoFileExists(t, p, "RemoveOnStop=yes")
	}
	_, err := libspbroker.Dial(brokerSocket)
	require.True(t, errors.Is(err, syscall.ENOENT), "a client after the stop: %v", err)
}

const (
	policyDir    = "/etc/one-socket"
	policyFile   = policyDir + "/policy.conf"
	policyDropIn = "/etc/systemd/system/" + service + ".d/policy.conf"
)

// writePolicy replaces the policy file by a complete new one, as the
// documentation says to (a rename), root's and readable by all.
func writePolicy(t *testing.T, text string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(policyDir, 0o755))
	tmp := policyFile + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(text), 0o644))
	require.NoError(t, os.Chmod(tmp, 0o644)) // whatever the umask
	require.NoError(t, os.Rename(tmp, policyFile))
}

// execPath is the daemon's path in the unit's ExecStart=.
var execPath = regexp.MustCompile(`path=(\S+)`)

// withPolicy adds --policy policyFile to the unit's ExecStart= in a
// drop-in, as an operator would, and reloads systemd.
func withPolicy(t *testing.T) {
	t.Helper()
	m := execPath.FindStringSubmatch(prop(t, service, "ExecStart"))
	require.NotNil(t, m, "ExecStart of %s", service)
	require.NoError(t, os.MkdirAll(filepath.Dir(policyDropIn), 0o755))
	require.NoError(t, os.WriteFile(policyDropIn, []byte(fmt.Sprintf(
		"[Service]\nExecStart=\nExecStart=%s --fdstore --policy %s\n", m[1], policyFile)), 0o644))
	run(t, "systemctl", "daemon-reload")
}

// TestPolicy: with a drop-in adding --policy, a broken policy file fails
// the start, with the mistake in the journal; at a reload it is refused
// and the policy in force stays, which the pairings it allows show.
func TestPolicy(t *testing.T) {
	inside(t)
	withPolicy(t)

	// Broken at start. Restart=on-failure tries again a few times, until
	// the start limit leaves the unit failed.
	writePolicy(t, "allow key=good-* mode=sever\n")
	out, err := runErr("systemctl", "start", service)
	require.Error(t, err, "systemctl start with a broken policy succeeded:\n%s", out)
	waitFor(t, "the service failed", time.Minute, func() (bool, string) {
		s := answer("is-failed", service)
		return s == "failed", s
	})
	mistake := `policy.conf:1: unknown mode`
	require.Contains(t, journal(t), mistake, "the journal should say what is wrong with the policy")
	require.Contains(t, answer("status", "--no-pager", "--full", service), mistake, "systemctl status")

	// A good policy, and a start.
	writePolicy(t, "allow key=good-*\n")
	run(t, "systemctl", "reset-failed", service, brokerUnit, controlUnit)
	run(t, "systemctl", "start", brokerUnit, controlUnit, service)
	pid := waitRunning(t, "the service, with a good policy", "")
	pairOnce(t, "good-1")
	refused(t, "other-1")

	// Broken at reload: refused, the policy in force stays. Were the
	// daemon to drop it, other-2 would pair; were it to take the broken
	// file's first line, too; were it to deny all, good-2 would not.
	count := func(s string) int { return strings.Count(journal(t), s) }
	const refusal = "cannot reload the policy; keeping the old one"
	before := count(refusal)
	writePolicy(t, "allow key=good-*\nallow key=other-*\nallow key=* mode=sever\n")
	run(t, "systemctl", "reload", service)
	waitFor(t, "the journal logs the refused reload", 30*time.Second, func() (bool, string) {
		n := count(refusal)
		return n > before, fmt.Sprintf("%d times %q", n, refusal)
	})
	require.Contains(t, journal(t), "policy.conf:3: unknown mode")
	pairOnce(t, "good-2")
	refused(t, "other-2")
	require.Equal(t, pid, prop(t, service, "MainPID"), "a reload does not restart the daemon")
	require.Equal(t, "active", prop(t, service, "ActiveState"))

	// And a good file at reload is taken: the refusal was the file's.
	const reloaded = "policy reloaded"
	before = count(reloaded)
	writePolicy(t, "allow key=good-*\nallow key=other-*\n")
	run(t, "systemctl", "reload", service)
	waitFor(t, "the journal logs the reload", 30*time.Second, func() (bool, string) {
		n := count(reloaded)
		return n > before, fmt.Sprintf("%d times %q", n, reloaded)
	})
	pairOnce(t, "other-3")
	pairOnce(t, "good-3")
}

// TestSecurity: systemd-analyze security, against the running manager,
// scores the unit at or under the threshold test/systemd/security.sh
// holds it to (one number, there, for this test and the offline one in
// cmd/one-socket); nspawn.sh puts the script beside the test binary.
func TestSecurity(t *testing.T) {
	inside(t)
	script := filepath.Join(filepath.Dir(os.Args[0]), "security.sh")
	_, err := os.Stat(script)
	require.NoError(t, err, "nspawn.sh puts test/systemd/security.sh beside the test")
	args := []string{script, "--online"}
	out, err := runErr(args[0], args[1:]...)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Overall exposure level") {
			t.Log(strings.TrimSpace(line))
		}
	}
	require.NoError(t, err, "%s:\n%s", strings.Join(args, " "), out)
}

// TestJournal: the daemon's lines reach the journal with their level as
// the priority: `journalctl -p warning` shows a policy denial, with the
// peer and the key, and not the info lines; the priority prefix itself
// is stripped.
func TestJournal(t *testing.T) {
	inside(t)
	withPolicy(t)
	writePolicy(t, "allow key=good-*\n")
	run(t, "systemctl", "start", brokerUnit, controlUnit, service)
	waitRunning(t, "the service", "")
	pairOnce(t, "good-1")
	refused(t, "bad-1")

	prio := func(p string) string {
		return run(t, "journalctl", "--no-pager", "--output=cat", "--unit="+service, "--priority="+p)
	}
	waitFor(t, "the denial in the journal at warning", 30*time.Second, func() (bool, string) {
		out := prio("warning")
		return strings.Contains(out, "request denied"), out
	})
	warn := prio("warning")
	assert.Contains(t, warn, fmt.Sprintf("pid=%d uid=0 gid=0 mode=server key=bad-1 ", os.Getpid()))
	assert.NotContains(t, warn, "one-socket started", "an info line at priority warning")
	assert.NotContains(t, warn, "<4>", "the prefix was not stripped")
	info := prio("info")
	assert.Contains(t, info, "one-socket started")
	assert.Contains(t, info, "request denied")
	assert.NotContains(t, info, "<6>", "the prefix was not stripped")
}
