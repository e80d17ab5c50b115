package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/handover"
	"github.com/one-socket/one-socket/internal/paths"
)

// unitDir holds the systemd units that meson installs.
const unitDir = "../../systemd"

// TestSystemdUnits checks the shipped units with systemd-analyze verify
// (any complaint fails), the service made as meson makes it, pointing at
// the daemon under test; and that they match what the daemon expects:
// the sockets' names and paths, and a service that waits for READY=1.
func TestSystemdUnits(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	in, err := os.ReadFile(filepath.Join(unitDir, "one-socket.service.in"))
	require.NoError(t, err)
	service := strings.ReplaceAll(string(in), "@bindir@", filepath.Dir(daemonBin))
	require.NotRegexp(t, `@\w+@`, service, "a placeholder this test does not fill")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "one-socket.service"), []byte(service), 0o644))
	units := map[string]string{"one-socket.service": service}
	for _, name := range []string{"one-socket.socket", "one-socket-control.socket"} {
		b, err := os.ReadFile(filepath.Join(unitDir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
		units[name] = string(b)
	}

	cmd := exec.Command(analyze, "verify", "--man=no",
		"./one-socket.socket", "./one-socket-control.socket", "./one-socket.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Empty(t, string(out), "systemd-analyze verify complains")

	settings := func(unit string) map[string][]string {
		m := map[string][]string{}
		for line := range strings.SplitSeq(units[unit], "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				m[k] = append(m[k], v)
			}
		}
		return m
	}
	sock := settings("one-socket.socket")
	assert.Equal(t, []string{paths.RootBrokerSocket}, sock["ListenStream"])
	assert.Equal(t, []string{handover.FDNameBroker}, sock["FileDescriptorName"])
	ctl := settings("one-socket-control.socket")
	assert.Equal(t, []string{filepath.Join(filepath.Dir(paths.RootBrokerSocket), paths.ControlSocketName)}, ctl["ListenStream"])
	assert.Equal(t, []string{handover.FDNameControl}, ctl["FileDescriptorName"])
	assert.Equal(t, []string{"0600"}, ctl["SocketMode"])
	assert.Equal(t, []string{"one-socket.service"}, ctl["Service"])
	svc := settings("one-socket.service")
	assert.Equal(t, []string{"notify"}, svc["Type"])
	assert.Equal(t, []string{"one-socket.socket one-socket-control.socket"}, svc["Sockets"])
	assert.Equal(t, []string{daemonBin + " --fdstore"}, svc["ExecStart"])
	require.Len(t, svc["FileDescriptorStoreMax"], 1)
	assert.NotEqual(t, "0", svc["FileDescriptorStoreMax"][0], "--fdstore needs a store")
}

// TestSystemdSecurity holds the service's sandbox to the exposure level
// in test/systemd/security.sh, which runs systemd-analyze security on the
// unit as meson makes it. Without systemd-analyze it fails, as the test
// above does: the script's 77 is no excuse either.
func TestSystemdSecurity(t *testing.T) {
	requireTool(t, "systemd-analyze", "systemd")
	out, err := exec.Command(filepath.Join("..", "..", "test", "systemd", "security.sh")).CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// TestManPage checks that one-socket(8) formats without a single groff
// warning.
func TestManPage(t *testing.T) {
	groff := requireTool(t, "groff", "groff-base")
	// Every manual the project installs, rendered as man(1) would, with
	// every warning turned on: any output is a defect.
	for _, page := range []string{"one-socket.8", "one-socketctl.8", "libspbroker.3"} {
		t.Run(page, func(t *testing.T) {
			out, err := exec.Command(groff, "-man", "-ww", "-z", filepath.Join("..", "..", "doc", page)).CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Empty(t, string(out))
		})
	}
}
