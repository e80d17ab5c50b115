package main

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// oldRelease is the release whose state this daemon must take over.
const oldRelease = "v0.1.0"

var (
	oldOnce sync.Once
	oldBin  string
	oldErr  error
)

// oldDaemon returns the daemon of oldRelease, built once from its sources
// in testdata (written by test/release-source.sh from the tag), so that
// the test needs neither git nor a clone with tags.
func oldDaemon(t *testing.T) string {
	t.Helper()
	oldOnce.Do(func() {
		src := filepath.Join(filepath.Dir(daemonBin), oldRelease)
		if oldErr = unpack(filepath.Join("testdata", oldRelease+".tar.gz"), src); oldErr != nil {
			return
		}
		bin := filepath.Join(src, "one-socket")
		if oldErr = testutil.Build(bin, &testutil.BuildOptions{Dir: src, Version: oldRelease}, "./cmd/one-socket"); oldErr != nil {
			return
		}
		oldBin = bin
	})
	require.NoError(t, oldErr)
	return oldBin
}

// unpack extracts the regular files of the gzipped tar archive at path
// into dir.
func unpack(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(name, dir+string(filepath.Separator)) {
			return fmt.Errorf("%s: %q leaves the directory", path, h.Name)
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return err
		}
	}
}

// statusVersion is the version the control socket's status reports.
func statusVersion(t *testing.T, ctl string) any {
	t.Helper()
	st := controlRequest(t, ctl, `{"command":"status"}`)
	res, ok := st["result"].(map[string]any)
	require.True(t, ok, "%v", st)
	return res["version"]
}

// replaceBinary puts the binary at src in place of dst, as a package
// upgrade does: a new file renamed over the old one.
func replaceBinary(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	tmp := dst + ".new"
	require.NoError(t, os.WriteFile(tmp, data, 0o755))
	require.NoError(t, os.Rename(tmp, dst))
}

// TestUpgradeFromOldRelease runs the daemon of oldRelease, with waiting
// clients, one half-sent request, a control socket and a pid file,
// installs this daemon over its binary and upgrades with SIGUSR2: the new
// program must take over every client from the old one's description.
func TestUpgradeFromOldRelease(t *testing.T) {
	old := oldDaemon(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "one-socket")
	replaceBinary(t, old, bin)
	sock, ctl, pidPath := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket"), filepath.Join(dir, "one.pid")
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl, "--pidfile", pidPath)
	pid := d.pid()
	require.Equal(t, oldRelease, statusVersion(t, ctl))

	ws := startWaiters(t, sock, 5)
	halfKey := uniqueKey("half")
	wire := getPairWire(halfKey, spb.ModeServer)
	half, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer half.Close()
	_, err = half.Write(wire[:7])
	require.NoError(t, err)
	waitWaiting(t, ctl, 5)

	replaceBinary(t, daemonBin, bin)
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "msg=upgraded clients=6 ")
	assert.Equal(t, pid, d.pid(), "the same process")
	assert.Equal(t, testVersion, statusVersion(t, ctl))
	data, err := os.ReadFile(pidPath)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(pid), strings.TrimSpace(string(data)))

	pairWaiters(t, sock, ws)
	_, err = half.Write(wire[7:])
	require.NoError(t, err)
	f, err := getPair(t.Context(), sock, halfKey, spb.ModeClient)
	require.NoError(t, err)
	defer f.Close()
	g := receiveSetPair(t, half.(*net.UnixConn))
	defer g.Close()
	expectConnected(t, f, g)

	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
	requireGone(t, sock, ctl, pidPath)
}

// TestFDStoreRestartFromOldRelease stops oldRelease's daemon into the file
// descriptor store and starts this one: it must read the stored
// description and serve every client.
func TestFDStoreRestartFromOldRelease(t *testing.T) {
	old := oldDaemon(t)
	m := newManager(t, true)
	d1 := m.startBinary(old, "--fdstore")
	ws := startWaiters(t, m.BrokerPath, 8)
	waitWaiting(t, m.CtlPath, 8)
	require.Equal(t, 0, d1.stop(syscall.SIGTERM))
	assert.Equal(t, "8/0", storedClients(t, d1.stderr.String()))

	d2 := m.start("--fdstore")
	assert.Contains(t, d2.waitLog("clients taken back from the service manager"), "clients=8 stored=8 kept=0 hung_up=0 unknown=0")
	pairWaiters(t, m.BrokerPath, ws)
	require.Equal(t, 0, d2.stop(syscall.SIGTERM))
}

// TestDowngradeToOldRelease upgrades this daemon to oldRelease's binary:
// that binary cannot check its configuration, and reads only what it
// wrote itself, so the hand-over leaves out what it does not know.
func TestDowngradeToOldRelease(t *testing.T) {
	old := oldDaemon(t)
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	bin := copyDaemon(t, dir)
	d := spawnAt(t, bin, sock, "--ctl-socket", ctl)
	ws := startWaiters(t, sock, 3)
	waitWaiting(t, ctl, 3)
	replaceBinary(t, old, bin)
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	d.waitLogCount("upgraded", 1)
	assert.Contains(t, d.stderr.String(), "cannot check its configuration before the upgrade (it is older than this one)")
	assert.Equal(t, oldRelease, statusVersion(t, ctl))
	pairWaiters(t, sock, ws)
	assert.Equal(t, 0, d.stop(syscall.SIGTERM))
}
