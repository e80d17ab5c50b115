package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	case "swap", "swap-hard":
		// Replace every socket that appears at the paths with a symbolic
		// link (or a hard link) to the victim, as fast as it can.
		link := os.Symlink
		if args[0] == "swap-hard" {
			link = os.Link
		}
		victim, paths := args[1], args[2:]
		for {
			for _, p := range paths {
				if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() == fs.ModeSocket {
					if os.Remove(p) == nil {
						link(victim, p)
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
	case "pairs":
		// Pair two clients of this uid with each other, one pairing
		// after another, for a while ("4s") or a number of times ("x500");
		// print why the first few failed, the successful ones' latency,
		// and how many succeeded, and fail if any did not.
		var more func() bool
		if n, err := strconv.Atoi(strings.TrimPrefix(args[2], "x")); err == nil && strings.HasPrefix(args[2], "x") {
			more = func() bool { n--; return n >= 0 }
		} else {
			d, _ := time.ParseDuration(args[2])
			end := time.Now().Add(d)
			more = func() bool { return time.Now().Before(end) }
		}
		paired, failed := 0, 0
		var lat []time.Duration
		for more() {
			start := time.Now()
			if err := pairSelf(args[1], fmt.Appendf(nil, "victim-%d-%d", os.Getpid(), paired+failed)); err != nil {
				if failed++; failed <= 5 {
					fmt.Printf("pairing failed: %q\n", err.Error())
				}
				continue
			}
			lat = append(lat, time.Since(start))
			paired++
		}
		if len(lat) > 0 {
			slices.Sort(lat)
			fmt.Printf("latency p50 %d p99 %d µs\n", lat[len(lat)/2].Microseconds(), lat[len(lat)*99/100].Microseconds())
		}
		fmt.Printf("paired %d of %d\n", paired, paired+failed)
		if failed > 0 {
			return 1
		}
		return 0
	case "wait":
		// Park n servers on the key, say so, then say of each in turn
		// whether the broker paired it or closed it.
		n, _ := strconv.Atoi(args[3])
		var cs []*spb.Conn
		for range n {
			c, err := spb.Dial(args[1])
			if err == nil {
				err = c.SendGetPair([]byte(args[2]), spb.ModeServer)
			}
			if err != nil {
				fmt.Println(err)
				return 1
			}
			cs = append(cs, c)
		}
		fmt.Println("waiting")
		for _, c := range cs {
			c.SetDeadline(time.Now().Add(time.Minute))
			if f, err := c.ReceiveSetPair(); err != nil {
				fmt.Println("closed:", err)
			} else {
				f.Close()
				fmt.Println("paired")
			}
		}
		return 0
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

// pairSelf pairs a server and a client on key through the broker at
// path, and checks that a byte goes from one to the other.
func pairSelf(path string, key []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server := make(chan *os.File, 1)
	errs := make(chan error, 1)
	go func() {
		f, err := getPair(ctx, path, key, spb.ModeServer)
		server <- f
		errs <- err
	}()
	c, err := getPair(ctx, path, key, spb.ModeClient)
	s, serr := <-server, <-errs
	for _, f := range []*os.File{c, s} {
		if f != nil {
			defer f.Close()
		}
	}
	if err = errors.Join(err, serr); err != nil {
		return err
	}
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(s, b); err != nil {
		return fmt.Errorf("the pair is not connected: %w", err)
	}
	return nil
}

// attackerCmd is the attacker process for attack, as attackerUID.
func attackerCmd(o *openDir, attack ...string) *exec.Cmd {
	return attackerCmdAs(o, attackerUID, attack...)
}

// attackerCmdAs is the attacker process for attack, as uid (and the gid
// of the same number).
func attackerCmdAs(o *openDir, uid uint32, attack ...string) *exec.Cmd {
	cmd := exec.Command(o.helper)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), envAttacker+"="+strings.Join(attack, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return cmd
}

// startAttacker runs an attack as attackerUID until the test ends.
func startAttacker(t testing.TB, o *openDir, attack ...string) *testutil.Proc {
	t.Helper()
	return startAttackerAs(t, o, attackerUID, attack...)
}

// startAttackerAs runs an attack as uid until the test ends.
func startAttackerAs(t testing.TB, o *openDir, uid uint32, attack ...string) *testutil.Proc {
	t.Helper()
	return testutil.StartProc(t, fmt.Sprintf("attacker %d", uid), attackerCmdAs(o, uid, attack...))
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
// must never apply --socket-mode (or the control socket's mode), nor
// --socket-group (the attacker's own group), to anything but its own
// socket. Before sockets were bound in a private directory, 41 starts of
// 200 gave the victim mode 0666. The same race with hard links is run by
// root, standing in for an attacker on a machine whose
// fs.protected_hardlinks is 0 (the kernel's default), where uid 1001
// could link a root file too: before the group was set through a
// descriptor of the socket, the victim got the attacker's group.
func TestAttackSocketModeSymlink(t *testing.T) {
	testutil.NeedRoot(t)
	for _, tt := range []struct {
		name, attack string
		uid          uint32
	}{
		{"symbolic links", "swap", attackerUID},
		{"hard links", "swap-hard", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := newOpenDir(t)
			dir := worldWritableDir(t)
			victim := rootFile(t)
			sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "one.ctl")
			startAttackerAs(t, o, tt.uid, tt.attack, victim, sock, ctl)

			swapped, refused := 0, 0
			for range 100 {
				d := spawn(t, daemonEnv(), "--socket", sock, "--ctl-socket", ctl, "--socket-mode", "0666",
					"--socket-group", strconv.Itoa(attackerUID))
				// The attacker may make a start fail (it owns the
				// directory's names); never may it make the daemon touch
				// another file.
				require.Eventually(t, func() bool {
					return strings.Contains(d.stderr.String(), "one-socket started") || d.exited()
				}, time.Minute, time.Millisecond)
				if d.exited() {
					// Swapped while it started, or already swapped
					// before (the attacker keeps at it between starts).
					assert.Regexp(t, `while one-socket was starting|exists and is not a socket`, d.stderr.String())
					refused++
				} else {
					assert.Equal(t, 0, d.stop(syscall.SIGTERM))
				}
				requireUntouched(t, victim)
				for _, p := range []string{sock, ctl} {
					if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() != fs.ModeSocket {
						swapped++
					}
					if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
						require.NoError(t, err)
					}
				}
			}
			// The race was run: the attacker got its links in.
			assert.NotZero(t, swapped, "the attacker never swapped a socket; the test proves nothing")
			t.Logf("%d sockets of 200 swapped for %s, %d starts failed; the victim kept its mode, owner and group",
				swapped, tt.name, refused)
		})
	}
}

// rootFile is a file of root's that no attack may write or change.
func rootFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(p, []byte("root only\n"), 0o600))
	return p
}

// requireUntouched fails t if the victim's content, mode, owner or group
// changed.
func requireUntouched(t *testing.T, victim string) {
	t.Helper()
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	require.Equal(t, "root only\n", string(b), "the daemon wrote to a file it must not")
	fi, err := os.Stat(victim)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm(), "the daemon changed the mode of a file it did not create")
	st := fi.Sys().(*syscall.Stat_t)
	require.Equal(t, [2]uint32{0, 0}, [2]uint32{st.Uid, st.Gid}, "the daemon changed the owner or group of a file it did not create")
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

// TestAttackControlKeys sends the running daemon's control socket requests
// whose meaning depends on which of two spellings a decoder keeps: a key
// given twice (encoding/json keeps the last, so the first of these once
// stopped the daemon), a key in another case (which encoding/json
// matches), and a field no request has. Each is refused, saying why, and
// nothing of it is done.
func TestAttackControlKeys(t *testing.T) {
	sock := sockPath(t)
	ctl := sock + ".ctl"
	d := startDaemon(t, sock, "--ctl-socket", ctl)
	for req, why := range map[string]string{
		`{"command":"status","command":"stop"}`:                  `malformed request: field "command" given twice`,
		`{"command":"stop","command":"status"}`:                  `malformed request: field "command" given twice`,
		`{"Command":"stop"}`:                                     `malformed request: json: unknown field "Command"`,
		`{"command":"status","COMMAND":"stop"}`:                  `malformed request: json: unknown field "COMMAND"`,
		`{"command":"log-level","level":"info","Level":"debug"}`: `malformed request: json: unknown field "Level"`,
		`{"command":"stop","force":true}`:                        `malformed request: json: unknown field "force"`,
	} {
		reply := controlRequest(t, ctl, req)
		assert.Equal(t, false, reply["ok"], req)
		assert.Equal(t, why, reply["error"], req)
	}
	st := status(t, ctl)
	assert.Equal(t, "info", st["log_level"])
	assert.Zero(t, d.logCount("control: stop requested"), "a refused request stopped the daemon")
	assert.False(t, d.exited(), "the daemon stopped")
	pairOnce(t, sock)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// TestAttackReloadRevokes has uid 1001 wait on a key that a reload, by
// SIGHUP or by the control socket, no longer lets it have: every one of
// its clients is disconnected at once, a client of an allowed uid that
// then asks for the key is not paired with any of them, and the log says,
// at the default level, whom it dropped (pid, uid and key; the first
// logBurst of them, then how many).
func TestAttackReloadRevokes(t *testing.T) {
	testutil.NeedRoot(t)
	const waiters = 12
	for _, trigger := range []string{"SIGHUP", "control"} {
		t.Run(trigger, func(t *testing.T) {
			o := newOpenDir(t)
			sock := filepath.Join(o.dir, "one.socket")
			ctl := filepath.Join(o.dir, "one.ctl")
			policyPath := filepath.Join(t.TempDir(), "policy.conf")
			writePolicy(t, policyPath, "allow uid=1001 key=shared-* mode=server\nallow uid=0\n")
			d := startDaemon(t, sock, "--ctl-socket", ctl, "--socket-mode", "0666", "--policy", policyPath)
			key := string(uniqueKey("shared"))
			cmd := attackerCmd(o, "wait", sock, key, strconv.Itoa(waiters))
			var out testutil.LockedBuffer
			cmd.Stdout = &out
			p := testutil.StartProc(t, "waiter", cmd)
			require.Eventually(t, func() bool { return strings.Contains(out.String(), "waiting\n") },
				20*time.Second, 10*time.Millisecond, "uid 1001's clients never waited: %s", out.String())
			waitWaiting(t, ctl, waiters)

			writePolicy(t, policyPath, "allow uid=0\n")
			if trigger == "SIGHUP" {
				require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
				d.waitLog("policy reloaded")
			} else {
				reply := controlRequest(t, ctl, `{"command":"reload"}`)
				require.Equal(t, true, reply["ok"], "%v", reply)
			}
			select {
			case <-p.Done():
			case <-time.After(20 * time.Second):
				t.Fatalf("uid 1001's clients are still connected: %s", out.String())
			}
			assert.Equal(t, waiters, strings.Count(out.String(), "closed: "), "uid 1001's clients:\n%s", out.String())
			assert.NotContains(t, out.String(), "paired")
			st := status(t, ctl)
			assert.EqualValues(t, 0, st["waiting"])
			assert.EqualValues(t, waiters, st["denied_total"])

			// Root, still allowed, asks for the key: nothing waits there
			// to pair it with, so it waits, and then pairs with a server
			// of its own.
			c, err := spb.Dial(sock)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SendGetPair([]byte(key), spb.ModeClient))
			waitWaiting(t, ctl, 1)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			f, err := getPair(ctx, sock, []byte(key), spb.ModeServer)
			require.NoError(t, err)
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			g, err := c.ReceiveSetPair()
			require.NoError(t, err)
			expectConnected(t, f, g)
			f.Close()
			g.Close()

			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			stderr := d.stderr.String()
			var named int
			for l := range strings.SplitSeq(stderr, "\n") {
				if strings.Contains(l, `msg="waiting client disconnected: the new policy does not allow it"`) {
					named++
					assert.Regexp(t, fmt.Sprintf(`level=WARN msg="[^"]+" pid=%d uid=1001 gid=1001 mode=server key=%s reason=`,
						cmd.Process.Pid, regexp.QuoteMeta(key)), l)
				}
			}
			assert.Equal(t, 10, named, "the dropped clients are named, %d at most:\n%s", 10, stderr)
			assert.Contains(t, logLine(t, stderr, "waiting clients disconnected: the new policy does not allow them"),
				fmt.Sprintf("dropped=%d", waiters))
		})
	}
}

// TestAttackLogForgery asks for keys made to forge a log line or field,
// in the text format and in JSON, to colour or overwrite a terminal's line
// (ANSI escapes, a carriage return), and to run a command where a line is
// pasted into a shell. Every line the daemon writes then parses as one
// record, each denial with exactly its fields and the key escaped, and no
// control byte reaches the output.
func TestAttackLogForgery(t *testing.T) {
	forged := map[string]string{
		"x\ntime=2026-01-01T00:00:00Z level=ERROR msg=\"forged\" $(reboot)":    `x\x0atime\x3d2026-01-01T00:00:00Z\x20level\x3dERROR\x20msg\x3d\x22forged\x22\x20\x24\x28reboot\x29`,
		"\x1b[31mred\x1b[0m\rtime=2026-01-01T00:00:00Z level=ERROR msg=forged": `\x1b\x5b31mred\x1b\x5b0m\x0dtime\x3d2026-01-01T00:00:00Z\x20level\x3dERROR\x20msg\x3dforged`,
		`x","level":"ERROR","msg":"forged`:                                     `x\x22,\x22level\x22:\x22ERROR\x22,\x22msg\x22:\x22forged`,
	}
	denial := []string{"time", "level", "msg", "pid", "uid", "gid", "mode", "key", "reason"}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			policyPath := filepath.Join(t.TempDir(), "policy.conf")
			writePolicy(t, policyPath, "allow key=ok\n")
			sock := sockPath(t)
			d := startDaemon(t, sock, "--policy", policyPath, "--log-format", format)
			for key := range forged {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				_, err := getPair(ctx, sock, []byte(key), spb.ModeClient)
				cancel()
				require.Error(t, err)
			}
			require.Eventually(t, func() bool { return strings.Count(d.stderr.String(), "request denied") == len(forged) },
				15*time.Second, 10*time.Millisecond, "not every request was denied:\n%s", d.stderr.String())
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			out := d.stderr.String()
			for i := range len(out) {
				if c := out[i]; (c < ' ' && c != '\n') || c == 0x7f {
					t.Fatalf("control byte %#x at %d reached the log:\n%q", c, i, out)
				}
			}
			var keys []string
			for l := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
				names, values, err := parseRecord(format, l)
				require.NoError(t, err, "a line that is not one record: %q", l)
				require.GreaterOrEqual(t, len(names), 3, "%q", l)
				assert.Equal(t, []string{"time", "level", "msg"}, names[:3], "%q", l)
				assert.NotContains(t, values["msg"], "forged", "a forged record: %q", l)
				if values["msg"] == "request denied" {
					assert.Equal(t, denial, names, "the fields of a denial: %q", l)
					keys = append(keys, values["key"])
				}
			}
			assert.ElementsMatch(t, slices.Collect(maps.Values(forged)), keys, "the keys as logged")
		})
	}
}

// parseRecord splits one log line of format (text or json) into its field
// names, in order, and their values as text; it fails unless the whole
// line is one record.
func parseRecord(format, line string) ([]string, map[string]string, error) {
	var names []string
	values := map[string]string{}
	if format == "json" {
		dec := json.NewDecoder(strings.NewReader(line))
		if t, err := dec.Token(); err != nil || t != json.Delim('{') {
			return nil, nil, fmt.Errorf("not a JSON object: %v", err)
		}
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return nil, nil, err
			}
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, nil, err
			}
			name := t.(string)
			if _, dup := values[name]; dup {
				return nil, nil, fmt.Errorf("field %q twice", name)
			}
			names = append(names, name)
			values[name] = fmt.Sprint(v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, nil, err
		}
		if dec.More() || int(dec.InputOffset()) != len(line) {
			return nil, nil, errors.New("data after the record")
		}
		return names, values, nil
	}
	// slog's text format: name=value separated by one space, a value
	// quoted as Go does when it holds a space, '=', '"' or a control
	// character.
	for rest := line; ; {
		name, after, ok := strings.Cut(rest, "=")
		if !ok || name == "" || strings.ContainsAny(name, " \"") {
			return nil, nil, fmt.Errorf("no name=value at %q", rest)
		}
		var value string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", name, err)
			}
			value, _ = strconv.Unquote(q)
			rest = after[len(q):]
		} else {
			end := strings.IndexByte(after, ' ')
			if end < 0 {
				end = len(after)
			}
			value, rest = after[:end], after[end:]
			if strings.ContainsAny(value, "\"=") {
				return nil, nil, fmt.Errorf("%s: unquoted value %q", name, value)
			}
		}
		if _, dup := values[name]; dup {
			return nil, nil, fmt.Errorf("field %q twice", name)
		}
		names = append(names, name)
		values[name] = value
		if rest == "" {
			break
		}
		if rest[0] != ' ' {
			return nil, nil, fmt.Errorf("%s: no space after the value", name)
		}
		rest = rest[1:]
	}
	return names, values, nil
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

// TestAttackFloodUnprivileged is TestAttackFlood with a victim that, unlike
// root, has a share too: uid 1002 pairs its own clients while uids 1001
// and 1003 each hold their whole share (half the broker) with silent and
// 1-byte-a-second connections, reconnecting whenever one is closed. The
// broker is thus full of handshakes, and a 1 s handshake deadline drops
// and lets back hundreds of them each second while the victim pairs for
// several deadlines. Every one of its pairings must succeed.
func TestAttackFloodUnprivileged(t *testing.T) {
	testutil.NeedRoot(t)
	const victimUID = 1002
	o := newOpenDir(t)
	sock := filepath.Join(o.dir, "one.socket")
	ctl := filepath.Join(o.dir, "one.ctl")
	d := startDaemon(t, sock, "--ctl-socket", ctl, "--socket-mode", "0666",
		"--max-conns", "200", "--handshake-timeout", "1s")
	for _, uid := range []uint32{attackerUID, 1003} {
		startAttackerAs(t, o, uid, "flood", sock, "150", "silent")
		startAttackerAs(t, o, uid, "flood", sock, "150", "slow")
	}
	require.Eventually(t, func() bool { return status(t, ctl)["conns"] == float64(200) },
		time.Minute, 10*time.Millisecond, "the flood never filled the broker")
	before := status(t, ctl)

	out, err := attackerCmdAs(o, victimUID, "pairs", sock, "4s").Output()
	assert.NoError(t, err, "the victim's pairings:\n%s", out)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	var paired, tried int
	_, err = fmt.Sscanf(lines[len(lines)-1], "paired %d of %d", &paired, &tried)
	require.NoError(t, err, "the victim's last line:\n%s", out)
	assert.Equal(t, tried, paired, "pairings of uid %d that failed:\n%s", victimUID, out)
	assert.NotZero(t, paired)

	after := status(t, ctl)
	// The flood ran as it should for the test to prove anything: the
	// deadline dropped the flooders' connections while the victim paired,
	// and the victim got in only by shedding them.
	assert.Greater(t, after["timed_out_total"], before["timed_out_total"], "no handshake deadline passed")
	assert.Greater(t, after["shed_total"], before["shed_total"], "nothing was shed for the victim")
	t.Logf("uid %d paired %d times (%s); meanwhile %v handshakes timed out, %v were shed, %v connections refused",
		victimUID, paired, strings.Join(lines[:len(lines)-1], "; "), after["timed_out_total"].(float64)-before["timed_out_total"].(float64),
		after["shed_total"].(float64)-before["shed_total"].(float64),
		after["refused_total"].(float64)-before["refused_total"].(float64))
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}

// floodedDaemon starts a daemon of --max-conns 200 (and flags) for a
// benchmark, has each of uids hold 150 silent and 150 one-byte-a-second
// connections to it, reconnecting whenever dropped, and returns once the
// flood has had a second to fill the broker.
func floodedDaemon(b *testing.B, uids []uint32, flags ...string) (*openDir, string) {
	testutil.NeedRoot(b)
	o := newOpenDir(b)
	sock := filepath.Join(o.dir, "one.socket")
	cmd := exec.Command(daemonBin, append([]string{"--socket", sock, "--ctl-socket", "none", "--socket-mode", "0666",
		"--max-conns", "200", "--log-level", "error"}, flags...)...)
	cmd.Env = daemonEnv()
	testutil.StartProc(b, "one-socket", cmd)
	for _, uid := range uids {
		startAttackerAs(b, o, uid, "flood", sock, "150", "silent")
		startAttackerAs(b, o, uid, "flood", sock, "150", "slow")
	}
	time.Sleep(time.Second) // the flood fills the broker
	return o, sock
}

// BenchmarkPairUnderFlood measures root's pairings while uid 1001 floods
// the broker as TestAttackFlood does, with a share as large as the broker
// (so that every victim connection needs a shed): one pairing per
// iteration, its latency reported as p50 and p99.
//
//	go test -run '^$' -bench PairUnderFlood ./cmd/one-socket/
func BenchmarkPairUnderFlood(b *testing.B) {
	_, sock := floodedDaemon(b, []uint32{attackerUID}, "--max-conns-per-uid", "200")
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

// BenchmarkPairUnderFloodUnprivileged measures the pairings of uid 1002
// while uids 1001 and 1003 flood the broker as TestAttackFloodUnprivileged
// does, within the default share, past the handshake deadline: b.N
// pairings of the victim, its latency reported as p50 and p99 (a pairing
// here also sends a byte through the pair).
//
//	go test -run '^$' -bench PairUnderFloodUnprivileged -benchtime 2000x ./cmd/one-socket/
func BenchmarkPairUnderFloodUnprivileged(b *testing.B) {
	o, sock := floodedDaemon(b, []uint32{attackerUID, 1003}, "--handshake-timeout", "1s")
	b.ResetTimer()
	out, err := attackerCmdAs(o, 1002, "pairs", sock, fmt.Sprintf("x%d", b.N)).Output()
	b.StopTimer()
	if err != nil {
		b.Fatalf("the victim's pairings failed (%v):\n%s", err, out)
	}
	var p50, p99 int
	for l := range strings.Lines(string(out)) {
		if _, err := fmt.Sscanf(l, "latency p50 %d p99 %d µs", &p50, &p99); err == nil {
			b.ReportMetric(float64(p50), "p50-µs")
			b.ReportMetric(float64(p99), "p99-µs")
			return
		}
	}
	b.Fatalf("the victim printed no latency:\n%s", out)
}
