package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
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
	}
	fmt.Fprintf(os.Stderr, "unknown attack %q\n", args[0])
	return 2
}

// startAttacker runs an attack as attackerUID until the test ends.
func startAttacker(t *testing.T, o *openDir, attack ...string) *testutil.Proc {
	t.Helper()
	cmd := exec.Command(o.helper)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), envAttacker+"="+strings.Join(attack, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: attackerUID, Gid: attackerUID}}
	return testutil.StartProc(t, "attacker", cmd)
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

	swapped := 0
	for range 100 {
		d := spawn(t, daemonEnv(), "--socket", sock, "--ctl-socket", ctl, "--socket-mode", "0666")
		d.waitLog("one-socket started")
		assert.Equal(t, 0, d.stop(syscall.SIGTERM))
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
	t.Logf("%d sockets of 200 swapped for links; the victim kept its mode", swapped)
}
