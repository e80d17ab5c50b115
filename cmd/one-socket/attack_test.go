package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// The attacks of a hostile local user on a root daemon. The attacker runs
// as attackerUID, a copy of the test binary made an attacker by
// envAttacker.

// envAttacker makes the test binary an attacker: "ATTACK\nARG...".
const envAttacker = "ONE_SOCKET_TEST_ATTACKER"

// attackerUID is the uid and gid of the attacks: no user of the machine.
const attackerUID = 1001

// attacker is the whole attacker process; it runs until killed.
func attacker(spec string) int {
	args := strings.Split(spec, "\n")
	switch args[0] {
	case "swap":
		// Replace every socket that appears at the paths with a symbolic
		// link to the victim, as fast as it can.
		victim, paths := args[1], args[2:]
		for {
			for _, p := range paths {
				if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() == fs.ModeSocket {
					if os.Remove(p) == nil {
						os.Symlink(victim, p)
					}
				}
			}
		}
	case "flood":
		// Hold n connections that never finish a request, silent or
		// sending a byte a second, and open a new one whenever one is
		// closed.
		n, _ := strconv.Atoi(args[2])
		slow := args[3] == "slow"
		for range n {
			go func() {
				for {
					c, err := net.Dial("unix", args[1])
					if err != nil {
						time.Sleep(time.Millisecond)
						continue
					}
					if slow {
						for {
							if _, err := c.Write([]byte{1}); err != nil {
								break
							}
							time.Sleep(time.Second)
						}
					} else {
						io.Copy(io.Discard, c)
					}
					c.Close()
				}
			}()
		}
		select {}
	case "hold":
		// Open n connections that each send the first b bytes of a
		// GET_PAIR (none: silent) and nothing more, and hold them.
		n, _ := strconv.Atoi(args[2])
		b, _ := strconv.Atoi(args[3])
		part := getPairWire([]byte("hostile"), spb.ModeServer)[:b]
		held := make([]net.Conn, 0, n)
		for range n {
			c, err := net.Dial("unix", args[1])
			if err == nil && b > 0 {
				_, err = c.Write(part)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			held = append(held, c)
		}
		for {
			time.Sleep(time.Hour)
			runtime.KeepAlive(held) // unreachable, they would be closed
		}
	case "control":
		// Send one request to the control socket and print the reply.
		c, err := net.Dial("unix", args[1])
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer c.Close()
		fmt.Fprintln(c, args[2])
		reply, err := io.ReadAll(c)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		os.Stdout.Write(reply)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown attack %q\n", args[0])
	return 2
}

// attackerCmd is the attacker process for attack, as attackerUID.
func attackerCmd(o *openDir, attack ...string) *exec.Cmd {
	cmd := exec.Command(o.helper)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), envAttacker+"="+strings.Join(attack, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: attackerUID, Gid: attackerUID}}
	return cmd
}

// startAttacker runs an attack as attackerUID until the test ends.
func startAttacker(t testing.TB, o *openDir, attack ...string) *testutil.Proc {
	t.Helper()
	return testutil.StartProc(t, "attacker", attackerCmd(o, attack...))
}

// worldWritableDir is a directory anyone may write, and not sticky: the
// attacker can replace what root puts there.
func worldWritableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "one-socket-attack-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	return dir
}

// TestAttackSocketModeSymlink races the daemon's start 100 times: an
// attacker who may write the socket's directory swaps each new socket,
// broker's and control's, for a symbolic link to a root file. The daemon
// must never apply --socket-mode (or the control socket's mode) to
// anything but its own socket. Before sockets were bound in a private
// directory, 41 starts of 200 gave the victim mode 0666.
func TestAttackSocketModeSymlink(t *testing.T) {
	testutil.NeedRoot(t)
	o := newOpenDir(t)
	dir := worldWritableDir(t)
	victim := filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(victim, []byte("root only\n"), 0o600))
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "one.ctl")
	startAttacker(t, o, "swap", victim, sock, ctl)

	swapped, refused := 0, 0
	for range 100 {
		d := spawn(t, daemonEnv(), "--socket", sock, "--ctl-socket", ctl, "--socket-mode", "0666")
		// The attacker may make a start fail (it owns the directory's
		// names); never may it make the daemon touch another file.
		require.Eventually(t, func() bool {
			return strings.Contains(d.stderr.String(), "one-socket started") || d.exited()
		}, time.Minute, time.Millisecond)
		if d.exited() {
			assert.Contains(t, d.stderr.String(), "while one-socket was starting")
			refused++
		} else {
			assert.Equal(t, 0, d.stop(syscall.SIGTERM))
		}
		fi, err := os.Stat(victim)
		require.NoError(t, err)
		require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm(), "the daemon changed the mode of a file it did not create")
		for _, p := range []string{sock, ctl} {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() == fs.ModeSymlink {
				swapped++
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				require.NoError(t, err)
			}
		}
	}
	// The race was run: the attacker got its links in.
	assert.NotZero(t, swapped, "the attacker never swapped a socket; the test proves nothing")
	t.Logf("%d sockets of 200 swapped for links, %d starts failed; the victim kept its mode", swapped, refused)
}

// rootFile is a file of root's that no attack may write or change.
func rootFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(p, []byte("root only\n"), 0o600))
	return p
}

// requireUntouched fails t if the victim's content or mode changed.
func requireUntouched(t *testing.T, victim string) {
	t.Helper()
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	require.Equal(t, "root only\n", string(b), "the daemon wrote to a file it must not")
	fi, err := os.Stat(victim)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
}

// asAttacker gives path (a file or a link the test made) to attackerUID,
// as if the attacker had made it.
func asAttacker(t *testing.T, path string) {
	t.Helper()
	require.NoError(t, os.Lchown(path, attackerUID, attackerUID))
}

// TestAttackLogFile puts what an attacker who may write the log's
// directory can at the --log-file path, at start and at a SIGHUP after a
// rotation: a link to a root file, a hard link to it, a file of their own.
// The daemon writes to none of them.
func TestAttackLogFile(t *testing.T) {
	testutil.NeedRoot(t)
	dir := worldWritableDir(t)
	victim := rootFile(t)
	logPath := filepath.Join(dir, "one-socket.log")
	plant := map[string]func(){
		"symbolic link": func() { require.NoError(t, os.Symlink(victim, logPath)); asAttacker(t, logPath) },
		"file of its own": func() {
			require.NoError(t, os.WriteFile(logPath, nil, 0o666))
			asAttacker(t, logPath)
		},
		"named pipe": func() { require.NoError(t, syscall.Mkfifo(logPath, 0o666)); asAttacker(t, logPath) },
	}
	want := map[string]string{
		"symbolic link":   "a symbolic link; the daemon writes only a file of its own",
		"file of its own": "owned by uid 1001, not by the daemon's uid 0",
		"named pipe":      "log file: open " + logPath, // ENXIO: no reader
	}
	for name, put := range plant {
		t.Run("at start: "+name, func(t *testing.T) {
			os.Remove(logPath)
			put()
			code, _, stderr := runDaemon(t, "--socket", sockPath(t), "--log-file", logPath)
			assert.Equal(t, 1, code)
			assert.Contains(t, stderr, want[name])
			requireUntouched(t, victim)
		})
		t.Run("at SIGHUP: "+name, func(t *testing.T) {
			os.Remove(logPath)
			d := spawn(t, daemonEnv(), "--socket", sockPath(t), "--log-file", logPath)
			rotated := logPath + ".1"
			require.Eventually(t, func() bool { return strings.Contains(readFile(t, logPath), "one-socket started") },
				20*time.Second, 10*time.Millisecond, "no start line")
			require.NoError(t, os.Rename(logPath, rotated))
			put()
			require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
			require.Eventually(t, func() bool {
				return strings.Contains(readFile(t, rotated), "cannot reopen the log file; still writing to the old one")
			}, 20*time.Second, 10*time.Millisecond, "no warning:\n%s", readFile(t, rotated))
			assert.Contains(t, readFile(t, rotated), want[name])
			assert.Equal(t, 0, d.stop(syscall.SIGTERM))
			assert.Contains(t, readFile(t, rotated), "one-socket stopped", "the daemon logged on to the old file")
			requireUntouched(t, victim)
		})
	}
}

// readFile returns what path holds, or "" if it cannot be read (yet).
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestAttackPolicyFile puts at the --policy path what the daemon must not
// trust, at start and at a reload: a file of another uid's, one its group
// may write, a link to another uid's file, a named pipe (which once
// wedged reloads and SIGTERM). The start fails without blocking; a reload
// keeps the policy in force, and the daemon still stops on SIGTERM.
func TestAttackPolicyFile(t *testing.T) {
	testutil.NeedRoot(t)
	const rules = "allow uid=0\n"
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.conf")
	theirs := filepath.Join(t.TempDir(), "theirs.conf")
	require.NoError(t, os.WriteFile(theirs, []byte("allow\n"), 0o644))
	require.NoError(t, os.Chown(theirs, attackerUID, attackerUID))
	plant := map[string]func(){
		"another uid's": func() {
			writePolicy(t, path, "allow\n")
			require.NoError(t, os.Chown(path, attackerUID, attackerUID))
		},
		"group-writable": func() {
			writePolicy(t, path, "allow\n")
			require.NoError(t, os.Chown(path, 0, attackerUID))
			require.NoError(t, os.Chmod(path, 0o664))
		},
		"link to another uid's": func() {
			tmp := path + ".link"
			require.NoError(t, os.Symlink(theirs, tmp))
			require.NoError(t, os.Rename(tmp, path))
		},
		"named pipe": func() {
			tmp := path + ".fifo"
			require.NoError(t, syscall.Mkfifo(tmp, 0o644))
			require.NoError(t, os.Rename(tmp, path))
		},
	}
	want := map[string]string{
		"another uid's":         "owned by uid 1001; only root or the daemon's uid may own it",
		"group-writable":        "writable by its group or by everyone (mode 0664)",
		"link to another uid's": "owned by uid 1001",
		"named pipe":            "a named pipe, not a regular file",
	}
	for name, put := range plant {
		t.Run("at start: "+name, func(t *testing.T) {
			os.Remove(path)
			put()
			code, _, stderr := runDaemon(t, "--socket", sockPath(t), "--policy", path)
			assert.Equal(t, 1, code)
			assert.Contains(t, stderr, want[name])
		})
		t.Run("at reload: "+name, func(t *testing.T) {
			os.Remove(path)
			writePolicy(t, path, rules)
			sock := sockPath(t)
			ctl := sock + ".ctl"
			d := startDaemon(t, sock, "--ctl-socket", ctl, "--policy", path)
			put()
			require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
			assert.Contains(t, d.waitLog("cannot reload the policy; keeping the old one"), want[name])
			reply := controlRequest(t, ctl, `{"command":"reload"}`)
			assert.Equal(t, false, reply["ok"])
			assert.Contains(t, reply["error"], want[name])
			assert.Equal(t, "policy "+path+": 1 rule (1 allow, 0 deny), default deny", status(t, ctl)["policy"])
			pairOnce(t, sock)
			assert.Equal(t, 0, d.stop(syscall.SIGTERM))
		})
	}
}

// TestAttackPidFile checks that a pid file another uid owns is not used:
// its owner could write any pid into it for a kill -HUP $(cat ...).
func TestAttackPidFile(t *testing.T) {
	testutil.NeedRoot(t)
	dir := worldWritableDir(t)
	pidPath := filepath.Join(dir, "one-socket.pid")
	require.NoError(t, os.WriteFile(pidPath, []byte("1\n"), 0o666))
	asAttacker(t, pidPath)
	code, _, stderr := runDaemon(t, "--socket", sockPath(t), "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "owned by uid 1001, not by the daemon's uid 0")
	assert.Equal(t, "1\n", readFile(t, pidPath), "the attacker's file is left alone")

	victim := rootFile(t)
	require.NoError(t, os.Remove(pidPath))
	require.NoError(t, os.Symlink(victim, pidPath))
	asAttacker(t, pidPath)
	code, _, stderr = runDaemon(t, "--socket", sockPath(t), "--pidfile", pidPath)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "a symbolic link")
	requireUntouched(t, victim)
}

// attack runs one attack as attackerUID to its end and returns what it
// printed.
func attack(t *testing.T, o *openDir, attack ...string) string {
	t.Helper()
	out, err := attackerCmd(o, attack...).Output()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// TestAttackControlSocket sends every command that changes something to
// an abstract control socket, which any uid can connect to, as uid 1001:
// each is denied and logged, and the daemon serves on. --ctl-allow-uid
// lets that uid in.
func TestAttackControlSocket(t *testing.T) {
	testutil.NeedRoot(t)
	o := newOpenDir(t)
	sock := sockPath(t)
	ctl := fmt.Sprintf("@one-socket-attack-%d", os.Getpid())
	d := startDaemon(t, sock, "--ctl-socket", ctl)
	ws := startWaiters(t, sock, 1)
	for _, req := range []string{
		`{"command":"stop"}`, `{"command":"upgrade"}`, `{"command":"log-level","level":"debug"}`,
		`{"command":"reload"}`, `{"command":"list"}`, `{"command":"status"}`,
		fmt.Sprintf(`{"command":"drop","key":%q}`, base64.StdEncoding.EncodeToString(ws[0].key)),
	} {
		reply := attack(t, o, "control", ctl, req)
		assert.Contains(t, reply, "permission denied: uid 1001 may not use the control socket", req)
	}
	assert.Contains(t, d.waitLog("control: request denied: the peer's uid is not allowed"), "peer_uid=1001")
	select {
	case <-d.done:
		t.Fatal("the daemon stopped")
	default:
	}
	assert.EqualValues(t, 1, status(t, ctl)["waiting"], "the waiter was dropped")
	assert.Equal(t, "info", status(t, ctl)["log_level"])
	pairWaiters(t, sock, ws)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))

	d = startDaemon(t, sockPath(t), "--ctl-socket", ctl, "--ctl-allow-uid", strconv.Itoa(attackerUID))
	assert.Contains(t, attack(t, o, "control", ctl, `{"command":"status"}`), `"ok":true`)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestAttackLogForgery asks for a key made to forge a log line and to run
// a command where a line is pasted into a shell: the daemon's log shows it
// escaped, on the one line of the denial.
func TestAttackLogForgery(t *testing.T) {
	policyPath := filepath.Join(t.TempDir(), "policy.conf")
	writePolicy(t, policyPath, "allow key=ok\n")
	sock := sockPath(t)
	d := startDaemon(t, sock, "--policy", policyPath)
	key := []byte("x\ntime=2026-01-01T00:00:00Z level=ERROR msg=\"forged\" $(reboot)")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := getPair(ctx, sock, key, spb.ModeClient)
	require.Error(t, err)
	line := d.waitLog("request denied")
	assert.Contains(t, line, `key=x\x0atime\x3d2026-01-01T00:00:00Z\x20level\x3dERROR\x20msg\x3d\x22forged\x22\x20\x24\x28reboot\x29 `)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	for _, l := range strings.Split(d.stderr.String(), "\n") {
		assert.NotContains(t, l, "forged\"", "a forged field: %q", l)
		assert.False(t, strings.HasPrefix(l, "time=2026-01-01"), "a forged line: %q", l)
	}
}

// TestAttackFlood has uid 1001 hold as many connections as it can, silent
// and sending a byte a second, reconnecting whenever one is closed, while
// root pairs: every one of root's pairings must succeed, with the default
// share of connections per user and with a share as large as the whole
// broker, where shedding the flooder's newest handshakes makes the room.
// (Before the per-user share, another user got 27 pairings of 231.) The
// latency under the flood is measured by BenchmarkPairUnderFlood.
func TestAttackFlood(t *testing.T) {
	testutil.NeedRoot(t)
	for _, tt := range []struct {
		name  string
		flags []string
		held  float64 // the connections the flooder gets
		proof string  // the counter that shows the flood was held off
		line  string  // the warning that names the flooder
		peer  string  // what it says of it
	}{
		{"default share", []string{"--max-conns", "200"}, 100, "refused_total",
			"refusing connections: a user holds its whole share of connections", `uid=1001 gid=\d+ limit=100 `},
		{"share as large as the broker", []string{"--max-conns", "200", "--max-conns-per-uid", "200"}, 200, "shed_total",
			"shedding a user's newest unfinished connection to make room", `uid=1001 gid=\d+ for_uid=0 limit=200`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := newOpenDir(t)
			sock := filepath.Join(o.dir, "one.socket")
			ctl := filepath.Join(o.dir, "one.ctl")
			d := startDaemon(t, sock, append([]string{"--ctl-socket", ctl, "--socket-mode", "0666"}, tt.flags...)...)
			startAttacker(t, o, "flood", sock, "150", "silent")
			startAttacker(t, o, "flood", sock, "150", "slow")
			require.Eventually(t, func() bool { return status(t, ctl)["conns"] == tt.held },
				time.Minute, 10*time.Millisecond, "the flood never filled its share")
			for range 50 {
				pairOnce(t, sock)
			}
			st := status(t, ctl)
			assert.NotZero(t, st[tt.proof])
			t.Logf("under the flood: conns %v, refused %v, shed %v, paired %v",
				st["conns"], st["refused_total"], st["shed_total"], st["paired_total"])
			// The counter follows the second SET_PAIR, which the client
			// may read first.
			require.Eventually(t, func() bool { return status(t, ctl)["paired_total"] == float64(50) },
				20*time.Second, 10*time.Millisecond, "not every pairing was counted")
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			// The flooder is named, by pid and uid, in a few lines only:
			// its refusals or sheds are many more.
			lines := 0
			for l := range strings.SplitSeq(d.stderr.String(), "\n") {
				if strings.Contains(l, `msg="`+tt.line+`"`) {
					lines++
					assert.Regexp(t, `level=WARN msg="[^"]+" pid=\d+ `+tt.peer, l)
				}
			}
			assert.NotZero(t, lines, "no %q in:\n%s", tt.line, d.stderr.String())
			assert.LessOrEqual(t, lines, 10, "%q not rate-limited", tt.line)
		})
	}
}

// BenchmarkPairUnderFlood measures root's pairings while uid 1001 floods
// the broker as TestAttackFlood does, with a share as large as the broker
// (so that every victim connection needs a shed): one pairing per
// iteration, its latency reported as p50 and p99.
//
//	go test -run '^$' -bench PairUnderFlood ./cmd/one-socket/
func BenchmarkPairUnderFlood(b *testing.B) {
	testutil.NeedRoot(b)
	o := newOpenDir(b)
	sock := filepath.Join(o.dir, "one.socket")
	cmd := exec.Command(daemonBin, "--socket", sock, "--ctl-socket", "none", "--socket-mode", "0666",
		"--max-conns", "200", "--max-conns-per-uid", "200", "--log-level", "error")
	cmd.Env = daemonEnv()
	testutil.StartProc(b, "one-socket", cmd)
	for _, kind := range []string{"silent", "slow"} {
		startAttacker(b, o, "flood", sock, "150", kind)
	}
	time.Sleep(time.Second) // the flood fills the broker
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs := make(chan error, 1)
		go func() {
			f, err := getPair(ctx, sock, []byte("victim"), spb.ModeServer)
			if err == nil {
				f.Close()
			}
			errs <- err
		}()
		f, err := getPair(ctx, sock, []byte("victim"), spb.ModeClient)
		if err == nil {
			f.Close()
		}
		err = errors.Join(err, <-errs)
		cancel()
		if err != nil {
			b.Fatalf("a pairing failed under the flood: %v", err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
