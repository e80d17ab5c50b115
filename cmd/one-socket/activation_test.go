package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIntegrationActivation runs the daemon under systemd-socket-activate
// with each way of passing sockets that it accepts, pairs through the
// passed broker socket, stops it, and checks that it left the socket
// files, which belong to the service manager, in place.
func TestIntegrationActivation(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fdnames []string // one per socket; the second socket is the control socket
	}{
		{"single unnamed socket", []string{""}},
		{"single socket named broker", []string{"broker"}},
		// What a socket unit without FileDescriptorName= passes.
		{"single socket with the unit's name", []string{"one-socket.socket"}},
		{"broker and control", []string{"broker", "control"}},
		// Started by a connection to the control socket, as well.
		{"control first", []string{"control", "broker"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			brokerPath := filepath.Join(dir, "broker.socket")
			ctlPath := filepath.Join(dir, "control.socket")
			var socks []activation
			for _, name := range tt.fdnames {
				p := brokerPath
				if name == "control" {
					p = ctlPath
				}
				socks = append(socks, activation{p, name})
			}
			d := socketActivate(t, socks, nil)
			d.path = brokerPath
			start := d.waitLog("one-socket started")
			assert.Contains(t, start, "socket="+brokerPath)
			assert.Contains(t, start, "activated=true")
			assert.NotContains(t, start, "mode=", "the daemon applies no mode to a socket it did not create")

			pairOnce(t, brokerPath)
			if len(socks) == 2 {
				assert.Contains(t, start, "ctl_socket="+ctlPath)
				reply := controlRequest(t, ctlPath, `{"command":"status"}`)
				assert.Equal(t, true, reply["ok"], "%v", reply)
			} else {
				assert.NotContains(t, start, "ctl_socket=")
				ents, err := os.ReadDir(dir)
				require.NoError(t, err)
				assert.Len(t, ents, 1, "an activated daemon creates no default control socket: %v", ents)
			}

			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			requireSocket(t, brokerPath)
			if len(socks) == 2 {
				requireSocket(t, ctlPath)
			}
			assert.EqualValues(t, 1, logCounter(t, d.stderr.String(), "paired"))
		})
	}
}

// TestIntegrationActivationStartsOnConnect checks that the client whose
// connection started the daemon is served: it pairs.
func TestIntegrationActivationStartsOnConnect(t *testing.T) {
	path := sockPath(t)
	d := socketActivate(t, []activation{{path, "broker"}}, nil)
	d.waitLog("one-socket started")
	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGINT))
	requireSocket(t, path)
}

// TestIntegrationActivationExplicitControl checks that a control socket
// named with --ctl-socket is created by an activated daemon, and removed
// at exit, while the activated broker socket stays.
func TestIntegrationActivationExplicitControl(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "one.socket")
	ctl := filepath.Join(dir, "my.ctl")
	d := socketActivate(t, []activation{{path, ""}}, nil, "--ctl-socket", ctl)
	d.waitLog("one-socket started")
	requireSocket(t, ctl)
	fi, err := os.Lstat(ctl)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireSocket(t, path)
	requireGone(t, ctl)
}

// TestIntegrationActivationRefused covers sockets the daemon cannot tell
// apart or does not know: it must exit 1 saying why.
func TestIntegrationActivationRefused(t *testing.T) {
	for _, tt := range []struct {
		name  string
		socks func(dir string) []activation
		want  string
	}{
		{"two unnamed", func(dir string) []activation {
			return []activation{{filepath.Join(dir, "a"), ""}, {filepath.Join(dir, "b"), ""}}
		}, "2 sockets passed and socket 0 has no name"},
		{"unknown name", func(dir string) []activation {
			return []activation{{filepath.Join(dir, "a"), "broker"}, {filepath.Join(dir, "b"), "vhost"}}
		}, `socket 1 is named \"vhost\"`},
		{"two brokers", func(dir string) []activation {
			return []activation{{filepath.Join(dir, "a"), "broker"}, {filepath.Join(dir, "b"), "broker"}}
		}, `more than one descriptor named \"broker\"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := socketActivate(t, tt.socks(t.TempDir()), nil)
			assert.Equal(t, 1, d.wait())
			assert.Contains(t, d.stderr.String(), "socket activation: "+tt.want)
		})
	}
}

// TestIntegrationActivationNotForUs checks that LISTEN_* variables meant
// for another process (LISTEN_PID differs) are ignored: the daemon binds
// its own socket.
func TestIntegrationActivationNotForUs(t *testing.T) {
	path := sockPath(t)
	d := spawn(t, daemonEnv("LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=broker"), "--socket", path)
	d.path = path
	d.waitAccepting()
	assert.NotContains(t, d.waitLog("one-socket started"), "activated=")
	pairOnce(t, path)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, path)
}

// TestDetachRefusesActivation checks that --detach is refused under socket
// activation, where the service manager does the daemonizing.
func TestDetachRefusesActivation(t *testing.T) {
	d := socketActivate(t, []activation{{sockPath(t), "broker"}}, nil, "--detach")
	assert.Equal(t, 1, d.wait())
	assert.Contains(t, d.stderr.String(), "--detach cannot be used with socket activation")
}
