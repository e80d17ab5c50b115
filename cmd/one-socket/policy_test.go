package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// envPairHelper makes the test binary a client instead of a test run: its
// value is "SOCKET\nKEY\nMODE". The client gets a pair, writes pairHello
// on it and exits 0, or prints why it could not and exits 1. The tests
// run it under another uid.
const envPairHelper = "ONE_SOCKET_TEST_PAIR_HELPER"

const pairHello = "hello\n"

// nobody is the uid and gid the tests give the helper.
const nobody = 65534

// pairHelper is the whole helper process.
func pairHelper(spec string) int {
	parts := strings.Split(spec, "\n")
	if len(parts) != 3 {
		fmt.Fprintf(os.Stderr, "bad %s %q\n", envPairHelper, spec)
		return 2
	}
	var mode spb.Mode
	switch parts[2] {
	case "client":
		mode = spb.ModeClient
	case "server":
		mode = spb.ModeServer
	default:
		mode = spb.ModeNone
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := getPair(ctx, parts[0], []byte(parts[1]), mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	if _, err := io.WriteString(f, pairHello); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// openDir is a directory that anyone may enter, holding a copy of the
// test binary that anyone may run: the helper's way in as another user.
type openDir struct {
	dir    string
	helper string
}

func newOpenDir(t testing.TB) *openDir {
	t.Helper()
	dir, err := os.MkdirTemp("", "one-socket-policy-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	self, err := os.Executable()
	require.NoError(t, err)
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	helper := filepath.Join(dir, "helper")
	dst, err := os.OpenFile(helper, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return &openDir{dir: dir, helper: helper}
}

// pairAs runs the helper as uid/gid nobody asking for key in mode, and
// returns its exit status and error output.
func (o *openDir) pairAs(t *testing.T, path, key, mode string) (int, string) {
	t.Helper()
	cmd := exec.Command(o.helper)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), envPairHelper+"="+path+"\n"+key+"\n"+mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "running the helper")
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// serveOne parks a root server on key and returns a channel that gets
// what its peer wrote, or the error.
func serveOne(t *testing.T, path, key string) <-chan string {
	t.Helper()
	got := make(chan string, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	go func() {
		f, err := getPair(ctx, path, []byte(key), spb.ModeServer)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		defer f.Close()
		f.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, len(pairHello))
		if _, err := io.ReadFull(f, buf); err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(buf)
	}()
	return got
}

// status asks the daemon's control socket for its status.
func status(t *testing.T, ctl string) map[string]any {
	t.Helper()
	reply := controlRequest(t, ctl, `{"command":"status"}`)
	require.Equal(t, true, reply["ok"], "%v", reply)
	return reply["result"].(map[string]any)
}

// waitWaiting waits until n clients wait in the daemon.
func waitWaiting(t *testing.T, ctl string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return status(t, ctl)["waiting"] == float64(n) },
		10*time.Second, 10*time.Millisecond, "waiting clients never reached %d", n)
}

// logCount counts the log lines carrying msg.
func (d *daemon) logCount(msg string) int {
	n := 0
	for line := range strings.SplitSeq(d.stderr.String(), "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) {
			n++
		}
	}
	return n
}

const (
	nobodyPolicy = "# nobody connects to its own keys; root serves everything\n" +
		"allow uid=65534 key=nobody-* mode=client\n" +
		"allow uid=0 mode=server\n"
	otherPolicy = "allow uid=65534 key=other-* mode=client\n" +
		"allow uid=0 mode=server\n" +
		"deny key=nobody-*\n"
)

func writePolicy(t *testing.T, path, text string) {
	t.Helper()
	// Through a rename, as an editor would, so that a reader never sees
	// half a file.
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(text), 0o644))
	require.NoError(t, os.Rename(tmp, path))
}

// TestPolicy runs clients as root and as nobody against a daemon with a
// policy, and changes the policy under it by the control socket and by
// SIGHUP.
func TestPolicy(t *testing.T) {
	o := newOpenDir(t)
	path, ctl := filepath.Join(o.dir, "one.socket"), filepath.Join(o.dir, "one-socket.ctl")
	policyPath := filepath.Join(t.TempDir(), "policy.conf")
	writePolicy(t, policyPath, nobodyPolicy)
	// The default mode 0660 and the group let nobody (primary group
	// nogroup, 65534) connect.
	d := startDaemon(t, path, "--policy", policyPath, "--socket-group", "65534")
	started := d.waitLog("one-socket started")
	assert.Contains(t, started, "2 rules (2 allow, 0 deny)")

	allowed := func(key string) {
		t.Helper()
		got := serveOne(t, path, key)
		waitWaiting(t, ctl, 1)
		code, stderr := o.pairAs(t, path, key, "client")
		require.Equal(t, 0, code, "nobody pairing on %s: %s", key, stderr)
		assert.Equal(t, pairHello, <-got)
	}
	denied := func(key, mode string) {
		t.Helper()
		before := status(t, ctl)["denied_total"].(float64)
		code, stderr := o.pairAs(t, path, key, mode)
		assert.Equal(t, 1, code, "nobody asking for %s as %s was let through", key, mode)
		assert.NotEmpty(t, stderr)
		assert.Equal(t, before+1, status(t, ctl)["denied_total"], "denial of %s as %s not counted", key, mode)
	}

	st := status(t, ctl)
	assert.Equal(t, "policy "+policyPath+": 2 rules (2 allow, 0 deny), default deny", st["policy"])
	assert.EqualValues(t, 0, st["denied_total"])

	allowed("nobody-1")
	denied("other-1", "client")  // not its key
	denied("nobody-2", "server") // not its mode
	// Root may serve any key, but not connect as a client.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := getPair(ctx, path, []byte("nobody-3"), spb.ModeClient)
	require.Error(t, err, "root was let in as a client")
	assert.EqualValues(t, 3, status(t, ctl)["denied_total"])
	line := d.waitLog("request denied")
	assert.Contains(t, line, "uid=65534")
	assert.Contains(t, line, "key=other-1")

	// A changed file changes the decision once reloaded.
	writePolicy(t, policyPath, otherPolicy)
	reply := controlRequest(t, ctl, `{"command":"reload"}`)
	want := "policy " + policyPath + ": 3 rules (2 allow, 1 deny), default deny"
	assert.Equal(t, map[string]any{"ok": true, "result": map[string]any{"policy": want}}, reply)
	assert.Equal(t, want, status(t, ctl)["policy"])
	allowed("other-2")
	denied("nobody-4", "client")

	// A broken file is refused; the policy in force stays.
	writePolicy(t, policyPath, "allow uid=65534 mode=srv\n")
	reply = controlRequest(t, ctl, `{"command":"reload"}`)
	assert.Equal(t, false, reply["ok"])
	msg, _ := reply["error"].(string)
	assert.Contains(t, msg, policyPath+`:1: unknown mode "srv"`)
	assert.Contains(t, msg, "old one stays in force")
	line = d.waitLog("cannot reload the policy; keeping the old one")
	assert.Contains(t, line, "level=WARN")
	assert.Contains(t, line, `unknown mode \"srv\"`)
	assert.Contains(t, line, "trigger=control")
	assert.Equal(t, want, status(t, ctl)["policy"])
	allowed("other-3")
	denied("nobody-5", "client")

	// SIGHUP rereads it too, the same way.
	writePolicy(t, policyPath, nobodyPolicy)
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return d.logCount("policy reloaded") == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, d.stderr.String(), "trigger=SIGHUP")
	allowed("nobody-6")
	denied("other-4", "client")

	// A broken file on SIGHUP: the log says why, the old policy stays.
	writePolicy(t, policyPath, "allow key=[\n")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return d.logCount("cannot reload the policy; keeping the old one") == 2 },
		10*time.Second, 10*time.Millisecond)
	allowed("nobody-7")

	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	assert.EqualValues(t, 6, logCounter(t, d.stderr.String(), "denied"))
	assert.EqualValues(t, 5, logCounter(t, d.stderr.String(), "paired"))
}

// TestPolicyAtStart checks that a broken policy keeps the daemon from
// starting, and that reload without --policy is no error.
func TestPolicyAtStart(t *testing.T) {
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.conf")
	writePolicy(t, policyPath, "allow uid=0\npermit uid=0\n")
	code, _, stderr := runDaemon(t, "--socket", filepath.Join(dir, "one.socket"), "--policy", policyPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "cannot start")
	assert.Contains(t, stderr, policyPath+":2:")
	requireGone(t, filepath.Join(dir, "one.socket"), filepath.Join(dir, "one-socket.ctl"))

	code, _, stderr = runDaemon(t, "--socket", filepath.Join(dir, "one.socket"), "--policy", filepath.Join(dir, "missing"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "no such file or directory")

	path := filepath.Join(dir, "one.socket")
	d := startDaemon(t, path)
	ctl := filepath.Join(dir, "one-socket.ctl")
	reply := controlRequest(t, ctl, `{"command":"reload"}`)
	assert.Equal(t, map[string]any{"ok": true, "result": map[string]any{"policy": "no policy configured"}}, reply)
	assert.Equal(t, "none", status(t, ctl)["policy"])
	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestMaxWaitingPerUID lets root park two clients and refuses the third.
func TestMaxWaitingPerUID(t *testing.T) {
	path := sockPath(t)
	ctl := filepath.Join(filepath.Dir(path), "one-socket.ctl")
	d := startDaemon(t, path, "--max-waiting-per-uid", "2")
	assert.Contains(t, d.waitLog("one-socket started"), "max_waiting_per_uid=2")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	parked := make(chan error, 2)
	for i := range 2 {
		go func() {
			f, err := getPair(ctx, path, fmt.Appendf(nil, "quota-%d", i), spb.ModeServer)
			if f != nil {
				f.Close()
			}
			parked <- err
		}()
	}
	waitWaiting(t, ctl, 2)
	_, err := getPair(ctx, path, []byte("quota-3"), spb.ModeServer)
	require.Error(t, err, "a third waiter was let in")
	st := status(t, ctl)
	assert.EqualValues(t, 1, st["over_quota_total"])
	assert.EqualValues(t, 2, st["waiting"])

	// Once one of them is paired, there is room again.
	pairDone := make(chan error, 1)
	go func() {
		f, err := getPair(ctx, path, []byte("quota-0"), spb.ModeClient)
		if f != nil {
			f.Close()
		}
		pairDone <- err
	}()
	require.NoError(t, <-pairDone)
	require.NoError(t, <-parked)
	waitWaiting(t, ctl, 1)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	require.Error(t, <-parked, "the last waiter was not disconnected at the stop")
	assert.EqualValues(t, 1, logCounter(t, d.stderr.String(), "over_quota"))
}

// TestMaxWait checks that a lone waiter is disconnected after --max-wait.
func TestMaxWait(t *testing.T) {
	path := sockPath(t)
	ctl := filepath.Join(filepath.Dir(path), "one-socket.ctl")
	d := startDaemon(t, path, "--max-wait", "300ms")
	assert.Contains(t, d.waitLog("one-socket started"), "max_wait=300ms")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	_, err := getPair(ctx, path, []byte("lonely"), spb.ModeServer)
	require.Error(t, err)
	waited := time.Since(start)
	assert.GreaterOrEqual(t, waited, 300*time.Millisecond)
	assert.Less(t, waited, 5*time.Second)
	assert.EqualValues(t, 1, status(t, ctl)["expired_total"])
	pairOnce(t, path) // a pair within the time is not affected
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	assert.EqualValues(t, 1, logCounter(t, d.stderr.String(), "expired"))
}

// TestSocketGroup checks that --socket-group sets the socket file's group
// by name and by number, and refuses a group that does not exist.
func TestSocketGroup(t *testing.T) {
	g, err := user.LookupGroupId(fmt.Sprint(nobody))
	require.NoError(t, err, "the test needs a group with gid %d", nobody)
	for _, group := range []string{g.Name, g.Gid} {
		path := sockPath(t)
		d := startDaemon(t, path, "--socket-group", group, "--socket-mode", "0640")
		fi, err := os.Lstat(path)
		require.NoError(t, err)
		assert.EqualValues(t, nobody, fi.Sys().(*syscall.Stat_t).Gid, "group of the socket with --socket-group %s", group)
		assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
		assert.Contains(t, d.waitLog("one-socket started"), "group="+group)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
	}

	path := sockPath(t)
	code, _, stderr := runDaemon(t, "--socket", path, "--socket-group", "no-such-group-here")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "--socket-group")
	assert.Contains(t, stderr, "no-such-group-here")
	requireGone(t, path)

	code, _, stderr = runDaemon(t, "--socket", "@one-socket-group-test", "--ctl-socket", "none", "--socket-group", g.Name)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "abstract")
}
