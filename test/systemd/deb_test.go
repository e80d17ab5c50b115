package systemdtest

// The Debian package, in a container without any other installation of
// One Socket (nspawn.sh's "deb" layer): the .deb that the build made and
// the same repacked with a higher version, beside the test binary.

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// debVersion is the version of the package in the .deb at path.
func debVersion(t *testing.T, path string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "dpkg-deb", "--field", path, "Version"))
}

// installedVersion is the version of one-socket that dpkg has installed,
// or "" if it has none.
func installedVersion() string {
	out, err := runErr("dpkg-query", "--show", "--showformat=${db:Status-Abbrev} ${Version}", "one-socket")
	if err != nil || !strings.HasPrefix(out, "ii ") {
		return ""
	}
	return strings.TrimSpace(strings.TrimPrefix(out, "ii "))
}

// TestDebian: installing the package enables and starts the sockets, and
// a client pairs through them; an upgrade restarts the daemon and loses
// none of the thousand clients waiting through it; a purge leaves nothing
// behind.
func TestDebian(t *testing.T) {
	inside(t)
	dir := filepath.Join(filepath.Dir(os.Args[0]), "debs")
	deb, newer := filepath.Join(dir, "one-socket.deb"), filepath.Join(dir, "one-socket-newer.deb")
	version, newVersion := debVersion(t, deb), debVersion(t, newer)
	require.NotEqual(t, version, newVersion)
	require.Empty(t, installedVersion(), "one-socket is installed before the test")
	require.NoFileExists(t, "/usr/bin/one-socket")

	// Install.
	run(t, "dpkg", "--install", deb)
	require.Equal(t, version, installedVersion())
	for _, u := range []string{brokerUnit, controlUnit} {
		require.Equal(t, "enabled", answer("is-enabled", u), "%s after the install", u)
		require.Equal(t, "active", prop(t, u, "ActiveState"), "%s after the install", u)
	}
	wants, _ := filepath.Glob("/etc/systemd/system/*.wants/" + service)
	require.Empty(t, wants, "the install enabled the service itself; only its sockets should be")
	pairOnce(t, "deb-install")
	waitRunning(t, "the service, started by the first client", "")

	// Upgrade, with clients waiting.
	ws := park(t, "upgrade", crowd)
	waitWaiting(t, crowd)
	serviceRun := prop(t, service, "InvocationID")
	socketRuns := []string{prop(t, brokerUnit, "InvocationID"), prop(t, controlUnit, "InvocationID")}
	run(t, "dpkg", "--install", newer)
	require.Equal(t, newVersion, installedVersion())
	waitRunning(t, "the service after the upgrade", "")
	require.NotEqual(t, serviceRun, prop(t, service, "InvocationID"),
		"the upgrade should restart the running daemon, so that the new binary serves")
	require.Equal(t, socketRuns, []string{prop(t, brokerUnit, "InvocationID"), prop(t, controlUnit, "InvocationID")},
		"the upgrade must not restart the socket units")
	requireAllPaired(t, ws, "the upgrade from "+version+" to "+newVersion)

	// Purge.
	run(t, "dpkg", "--purge", "one-socket")
	require.Empty(t, installedVersion())
	out, err := runErr("dpkg-query", "--status", "one-socket")
	require.Error(t, err, "dpkg still knows the package after the purge:\n%s", out)
	// Both exit 1 when they list nothing.
	out, _ = runErr("systemctl", "list-unit-files", "--no-legend", "one-socket*")
	require.NotContains(t, out, "one-socket", "systemctl list-unit-files after the purge")
	out, _ = runErr("systemctl", "list-units", "--all", "--no-legend", "one-socket*")
	require.NotContains(t, out, "one-socket", "systemd still has a unit of the package loaded")
	for _, p := range []string{
		"/usr/bin/one-socket", "/usr/bin/one-socketctl",
		"/lib/systemd/system/" + service, "/lib/systemd/system/" + brokerUnit, "/lib/systemd/system/" + controlUnit,
		brokerSocket, controlSocket,
		"/usr/share/doc/one-socket", "/usr/share/man/man8/one-socket.8.gz",
	} {
		_, err := os.Lstat(p)
		require.ErrorIs(t, err, fs.ErrNotExist, "%s after the purge", p)
	}
	require.Empty(t, leftovers(t), "files of the package after the purge")
	_, err = runErr("getent", "passwd", "one-socket")
	require.Error(t, err, "the service's dynamic user is still there after the purge")
}

// leftovers lists every file in the container whose name says it
// belongs to One Socket, but for the tests' own.
func leftovers(t *testing.T) []string {
	t.Helper()
	own := filepath.Dir(os.Args[0])
	var found []string
	err := filepath.WalkDir("/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile, or unreadable: not for this test to judge
		}
		if d.IsDir() && (p == own || p == "/proc" || p == "/sys" || p == "/dev") {
			return filepath.SkipDir
		}
		name := d.Name()
		if strings.Contains(name, "one-socket") || strings.Contains(name, "one.socket") ||
			strings.Contains(name, "spbroker") {
			found = append(found, p)
		}
		return nil
	})
	require.NoError(t, err)
	return found
}
