package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
	"github.com/one-socket/one-socket/libspbroker"
)

func waiter(key, mode string, waited float64) control.Waiter {
	return control.Waiter{Key: []byte(key), KeyText: key, KeyHex: fmt.Sprintf("%x", key), Mode: mode, WaitedSeconds: waited}
}

func TestTopGroups(t *testing.T) {
	ws := []control.Waiter{
		waiter("vm/a", "server", 3),
		waiter("vm/b", "client", 7),
		waiter("ci:x", "none", 5),
		waiter("plain", "none", 1),
		{Key: []byte{0, 1}, KeyHex: "0001", Mode: "none", WaitedSeconds: 2},
	}
	var got []string
	for _, g := range groups(ws, "") {
		got = append(got, fmt.Sprintf("%s %d %v %.0f", g.name, g.n, g.modes, g.oldest))
	}
	assert.Equal(t, []string{
		"vm/b 1 map[client:1] 7", "ci:x 1 map[none:1] 5", "vm/a 1 map[server:1] 3",
		"0x0001 1 map[none:1] 2", "plain 1 map[none:1] 1",
	}, got)
	got = nil
	for _, g := range groups(ws, "/") {
		got = append(got, fmt.Sprintf("%s %d %v %.0f", g.name, g.n, g.modes, g.oldest))
	}
	assert.Equal(t, []string{
		"vm/* 2 map[client:1 server:1] 7", "ci:x 1 map[none:1] 5",
		"0x0001 1 map[none:1] 2", "plain 1 map[none:1] 1",
	}, got)
	got = nil
	for _, g := range groups(ws, ":") {
		got = append(got, g.name)
	}
	assert.Equal(t, []string{"vm/b", "ci:*", "vm/a", "0x0001", "plain"}, got)
}

func TestTopFrame(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 16, 0, 0, 0, time.UTC)
	prev := &sample{at: t0, status: control.Status{PID: 7, MaxConns: 100, PairedTotal: 10, DeniedTotal: 1,
		ProtocolErrors: map[string]uint64{"size": 1}}}
	cur := &sample{at: t0.Add(2 * time.Second), status: control.Status{PID: 7, Version: "v1", MaxConns: 100, Conns: 25, Waiting: 3,
		PairedTotal: 14, DeniedTotal: 2, ProtocolErrors: map[string]uint64{"size": 2, "truncated": 3}},
		waiters: []control.Waiter{
			waiter("a-rather-long-key-that-will-not-fit-a-narrow-screen", "server", 70),
			waiter("k", "none", 1), waiter("k", "client", 2),
		}}
	text := strings.Join(frame(cur, prev, "", 100, 40), "\n")
	assert.Contains(t, text, "descriptors: 25 of 100 connections (25.0%), 3 waiting")
	assert.Contains(t, text, "pairs/s: 2.0  paired: 14")
	assert.Regexp(t, `\ndenied \(policy\) +0\.5 +2\n`, text)
	assert.Regexp(t, `\nprotocol errors +2\.0 +5\n`, text)
	assert.Regexp(t, `\na-rather-long-key-that-will-not-fit-a-narrow-screen +1 +0 +0 +1 +1m10s\nk +2 +1 +1 +0 +2\.0s\n`, text)
	assert.True(t, strings.HasSuffix(text, "\nq quits  100x40"), text)

	// The first frame has no rates; a daemon that restarted (another
	// pid) neither.
	assert.Contains(t, strings.Join(frame(cur, nil, "", 100, 40), "\n"), "pairs/s: -  paired: 14")
	restarted := *prev
	restarted.status.PID = 8
	assert.Contains(t, strings.Join(frame(cur, &restarted, "", 100, 40), "\n"), "pairs/s: -  paired: 14")

	// Narrow and short: every line fits, the keys that do not are
	// counted, the refusals take a line or two.
	lines := frame(cur, prev, "", 50, 12)
	require.Len(t, lines, 12)
	for _, l := range lines {
		assert.LessOrEqual(t, utf8.RuneCountInString(l), 50, "%q", l)
	}
	text = strings.Join(lines, "\n")
	assert.Contains(t, text, "refusals: refused 0 shed 0 denied 2 (0.5/s)")
	assert.Contains(t, text, "\na-rather-l~ ")
	lines = frame(cur, prev, "", 50, 10)
	assert.Contains(t, strings.Join(lines, "\n"), "\n... 2 more keys, 3 clients\nq quits  50x10")

	// Wide characters take two columns, combining marks none.
	assert.Equal(t, "键~", fit("键盘/一", 4))
	assert.Equal(t, "e\u0301t\u00e9", fit("e\u0301t\u00e9", 3))
	assert.Equal(t, "ab~", fit("abc\u00e9", 3))
	assert.Equal(t, 6, columns(padRight("键盘", 6)))

	// What the daemon says reaches the terminal without its escapes.
	assert.Equal(t, "v1?[2J~", fit("v1\x1b[2J and more", 7))

	// A daemon that does not answer.
	down := &sample{at: cur.at, err: "no control socket at /x: is one-socket running?"}
	assert.Contains(t, strings.Join(frame(down, cur, "", 80, 24), "\n"), "\nno control socket at /x")
}

func TestTopOnce(t *testing.T) {
	be := startBackend(t)
	be.park(t, []byte("vm/one"), libspbroker.ModeServer)
	be.park(t, []byte("vm/two"), libspbroker.ModeNone)
	be.park(t, []byte("other"), libspbroker.ModeClient)
	be.waitWaiting(t, 3)

	// Standard output is a pipe: one frame, no escapes.
	r := be.ctl(t, "top")
	require.Equal(t, 0, r.code, r.stderr)
	assert.NotContains(t, r.stdout, "\x1b")
	assert.Regexp(t, `(?m)^descriptors: 3 of 64 connections \(4\.7%\), 3 waiting`, r.stdout)
	for _, k := range []string{"vm/one", "vm/two", "other"} {
		assert.Regexp(t, `(?m)^`+k+` +1 `, r.stdout)
	}
	r = be.ctl(t, "top", "--once", "--group", "/")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `(?m)^vm/\* +2 +1 +0 +1 `, r.stdout)
	assert.Regexp(t, `(?m)^other +1 +0 +1 +0 `, r.stdout)

	r = run(t, testEnv(), "", "--ctl-socket", filepath.Join(be.dir, "none.ctl"), "top")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no control socket at ")
	r = inProcess(0, nil, "top", "--group=")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "want a separator")
	r = inProcess(0, nil, "top", "--json")
	assert.Equal(t, exitUsage, r.code)
}

// tmux drives a tmux server of its own, on a socket in dir.
type tmux struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T) *tmux {
	t.Helper()
	_, err := exec.LookPath("tmux")
	testutil.Need(t, err == nil, "tmux is not installed")
	tm := &tmux{t: t, sock: filepath.Join(shortTempDir(t), "tmux")}
	t.Cleanup(func() { exec.Command("tmux", "-S", tm.sock, "kill-server").Run() })
	return tm
}

// on is tm for a subtest t.
func (tm *tmux) on(t *testing.T) *tmux { return &tmux{t: t, sock: tm.sock} }

// run runs a tmux command and returns its output.
func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", tm.sock, "-f", "/dev/null"}, args...)...)
	cmd.Env = testEnv()
	out, err := cmd.CombinedOutput()
	require.NoError(tm.t, err, "tmux %q: %s", args, out)
	return string(out)
}

// await polls the pane until its content matches re, and returns it.
func (tm *tmux) await(target string, re *regexp.Regexp) string {
	tm.t.Helper()
	var screen string
	deadline := time.Now().Add(3 * waitFor)
	for time.Now().Before(deadline) {
		screen = tm.run("capture-pane", "-p", "-t", target)
		if re.MatchString(screen) {
			return screen
		}
		time.Sleep(50 * time.Millisecond)
	}
	tm.t.Fatalf("the pane never matched %s; it shows:\n%s", re, screen)
	return ""
}

// startDaemon runs the real one-socket on sockets in a new directory
// until the test ends, and returns their paths.
func startDaemon(t *testing.T) (sock, ctlPath string) {
	t.Helper()
	sock, ctlPath, _ = startDaemonIn(t, shortTempDir(t))
	return sock, ctlPath
}

// startDaemonIn is startDaemon on sockets in dir; it returns the process
// too.
func startDaemonIn(t *testing.T, dir string) (sock, ctlPath string, daemon *exec.Cmd) {
	t.Helper()
	bin := buildDaemon(t)
	sock, ctlPath = filepath.Join(dir, "one.socket"), filepath.Join(dir, "one-socket.ctl")
	daemon = exec.Command(bin, "--socket", sock)
	daemon.Env = testEnv()
	var logs testutil.LockedBuffer
	daemon.Stderr = &logs
	require.NoError(t, daemon.Start())
	exited := make(chan struct{})
	go func() {
		daemon.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		daemon.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("one-socket's log:\n%s", logs.String())
		}
	})
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := control.Call(ctx, ctlPath, control.Request{Command: control.CmdStatus})
		return err == nil
	}, waitFor, 10*time.Millisecond, "the daemon's control socket never answered")
	return sock, ctlPath, daemon
}

// TestTopInTmux runs top in a terminal, tmux's, against the real daemon:
// it shows the waiting keys and the counters, redraws to fit a resized
// window, and on q or Ctrl-C exits 0 and leaves the terminal as it was.
func TestTopInTmux(t *testing.T) {
	tm := newTmux(t)
	sock, ctlPath := startDaemon(t)
	park := func(key string, mode libspbroker.Mode) *libspbroker.Conn {
		c, err := libspbroker.Dial(sock)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SendGetPair([]byte(key), mode))
		return c
	}
	long := "vm/a-key-long-enough-to-be-cut-at-sixty-columns"
	park(long, libspbroker.ModeServer)
	park("vm/b", libspbroker.ModeNone)
	park("ci:1", libspbroker.ModeClient)

	for _, quit := range []string{"q", "C-c"} {
		t.Run(quit, func(t *testing.T) {
			tm := tm.on(t)
			session := "top-" + strings.ReplaceAll(quit, "-", "")
			// The shell around top says how it exited and whether the
			// terminal's modes are those it had before.
			script := fmt.Sprintf(`before=$(stty -g); %s --ctl-socket %s top; rc=$?; `+
				`[ "$(stty -g)" = "$before" ] && echo "modes restored"; echo "top exited $rc"; exec sleep 600`,
				ctlBin, ctlPath)
			tm.run("new-session", "-d", "-s", session, "-x", "100", "-y", "30", script)
			target := session + ":0.0"

			screen := tm.await(target, regexp.MustCompile(`(?m)^ci:1 +1 +0 +1 +0 `))
			lines := strings.Split(screen, "\n")
			assert.True(t, strings.HasPrefix(lines[0], "one-socket "+daemonVersion+", pid "), "%q", lines[0])
			assert.Regexp(t, `(?m)^descriptors: 3 of \d+ connections .*, 3 waiting`, screen)
			assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(long)+` +1 +0 +0 +1 `, screen)
			assert.Regexp(t, `(?m)^vm/b +1 +1 +0 +0 `, screen)
			assert.Equal(t, "q quits  100x30", lines[29])
			assert.Equal(t, "1\n", tm.run("display-message", "-p", "-t", target, "#{alternate_on}"))

			// Smaller: the frame is redrawn to the new size, the long key
			// cut to fit, nothing wrapped (the first line stays first,
			// the footer last).
			tm.run("resize-window", "-t", session, "-x", "60", "-y", "20")
			screen = tm.await(target, regexp.MustCompile(`q quits  60x20`))
			lines = strings.Split(screen, "\n")
			assert.True(t, strings.HasPrefix(lines[0], "one-socket "), "%q", lines[0])
			assert.Equal(t, "q quits  60x20", lines[19])
			assert.Contains(t, screen, "\n"+long[:20]+"~ ")
			for _, l := range lines {
				assert.LessOrEqual(t, utf8.RuneCountInString(l), 60, "%q", l)
			}

			tm.run("send-keys", "-t", target, quit)
			screen = tm.await(target, regexp.MustCompile(`top exited \d+`))
			assert.Contains(t, screen, "modes restored\ntop exited 0")
			assert.NotContains(t, screen, "q quits", "the frame stays on the alternate screen")
			assert.Equal(t, "0\n", tm.run("display-message", "-p", "-t", target, "#{alternate_on}"))
		})
	}

	// Ctrl-Z in an interactive shell: the shell gets its terminal back,
	// fg brings the view back.
	t.Run("suspend", func(t *testing.T) {
		tm := tm.on(t)
		bash, err := exec.LookPath("bash")
		testutil.Need(t, err == nil, "no bash for job control")
		tm.run("new-session", "-d", "-s", "suspend", "-x", "80", "-y", "24", bash+" --norc --noprofile -i")
		tm.await("suspend", regexp.MustCompile(`(?m)[$#]$`))
		tm.run("send-keys", "-t", "suspend", fmt.Sprintf("%s --ctl-socket %s top", ctlBin, ctlPath), "Enter")
		tm.await("suspend", regexp.MustCompile(`(?m)^q quits  80x24$`))
		tm.run("send-keys", "-t", "suspend", "C-z")
		screen := tm.await("suspend", regexp.MustCompile(`Stopped`))
		assert.NotContains(t, screen, "q quits")
		assert.Equal(t, "0\n", tm.run("display-message", "-p", "-t", "suspend", "#{alternate_on}"))
		tm.run("send-keys", "-t", "suspend", "fg", "Enter")
		tm.await("suspend", regexp.MustCompile(`(?m)^q quits  80x24$`))
		assert.Equal(t, "1\n", tm.run("display-message", "-p", "-t", "suspend", "#{alternate_on}"))
		tm.run("send-keys", "-t", "suspend", "q")
		// Typed before top has gone, the next line would be top's input.
		for deadline := time.Now().Add(3 * waitFor); ; time.Sleep(50 * time.Millisecond) {
			if tm.run("display-message", "-p", "-t", "suspend", "#{pane_current_command}") == "bash\n" {
				break
			}
			require.True(t, time.Now().Before(deadline), "top did not exit")
		}
		tm.run("send-keys", "-t", "suspend", "echo status $? modes $(stty -a | grep -o -- '-\\?icanon') $(stty -a | grep -o -- ' -\\?echo ')", "Enter")
		tm.await("suspend", regexp.MustCompile(`(?m)^status 0 modes icanon echo$`))
	})

	// Counters move: a pair made and a protocol error show up.
	t.Run("counters", func(t *testing.T) {
		tm := tm.on(t)
		tm.run("new-session", "-d", "-s", "counters", "-x", "100", "-y", "30",
			fmt.Sprintf("%s --ctl-socket %s top; exec sleep 600", ctlBin, ctlPath))
		tm.await("counters", regexp.MustCompile(`paired: 0 `))
		park("vm/b", libspbroker.ModeNone)
		bad, err := net.Dial("unix", sock)
		require.NoError(t, err)
		bad.Write([]byte{0xff})
		bad.Close()
		screen := tm.await("counters", regexp.MustCompile(`(?m)paired: 1 [\s\S]*^protocol errors +\S+ +1$`))
		assert.NotContains(t, screen, "\nvm/b ")
		tm.run("send-keys", "-t", "counters", "q")
	})
	// A daemon that goes away: the last frame stays, with why; a new one
	// on the same sockets takes over.
	t.Run("daemon-gone", func(t *testing.T) {
		tm := tm.on(t)
		dir := shortTempDir(t)
		_, ctlPath, first := startDaemonIn(t, dir)
		tm.run("new-session", "-d", "-s", "gone", "-x", "100", "-y", "30",
			fmt.Sprintf("%s --ctl-socket %s top; exec sleep 600", ctlBin, ctlPath))
		tm.await("gone", regexp.MustCompile(fmt.Sprintf(`pid %d,`, first.Process.Pid)))
		require.NoError(t, first.Process.Signal(syscall.SIGTERM))
		screen := tm.await("gone", regexp.MustCompile(`(?m)^! no control socket at `+regexp.QuoteMeta(ctlPath)))
		assert.Contains(t, screen, "\ndescriptors: 0 of ")
		_, _, second := startDaemonIn(t, dir)
		tm.await("gone", regexp.MustCompile(fmt.Sprintf(`(?m)pid %d,[^!]*\z`, second.Process.Pid)))
		tm.run("send-keys", "-t", "gone", "q")
	})
}
