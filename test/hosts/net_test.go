package hosts

// vhost-user-net: DPDK's dpdk-testpmd with its vhost PMD is the back end,
// QEMU's virtio-net-pci the front end. Both sides need socket paths:
// DPDK's vhost library takes nothing else, and QEMU 7.2's vhost-user
// netdev refuses a chardev on an fd ("does not support FD passing").

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
)

// pings is how many echo requests the guest sends; testpmd's io
// forwarding sends every frame back where it came from.
const pings = 10

// pmdRuns numbers testpmd's runs, for their file prefixes.
var pmdRuns atomic.Int64

// testpmd returns dpdk-testpmd's command line with one vhost port, vdev
// (net_vhost0,iface=PATH,client=0|1), forwarding in io mode, and removes
// DPDK's runtime directory at the end of t.
func testpmd(t *testing.T, vdev string) []string {
	t.Helper()
	bin := testpmdProg.path(t)
	// A prefix of its own keeps runs apart; DPDK keeps its runtime
	// files in /var/run/dpdk/PREFIX for root, else under XDG_RUNTIME_DIR.
	prefix := fmt.Sprintf("one-socket-%d-%d", os.Getpid(), pmdRuns.Add(1))
	runtime := "/var/run"
	if os.Geteuid() != 0 {
		if runtime = os.Getenv("XDG_RUNTIME_DIR"); runtime == "" {
			runtime = "/tmp"
		}
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(runtime, "dpdk", prefix)) })
	return []string{bin,
		// One core to manage, one to forward (it spins at 100%).
		"-l", "0,1",
		// No hugepages here: the memory is the process's own, and the
		// mbuf pool must then be sized by hand.
		"--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", prefix,
		"--vdev", vdev,
		"--", "--total-num-mbufs=16384", "--forward-mode=io", "--auto-start",
		// Without -i testpmd would wait for a key; with a stats period
		// it runs until SIGTERM.
		"--stats-period", "2",
	}
}

// netRun is the guest's run that brings eth0 up, waits for its carrier,
// pings a peer that never answers and reports its counters.
func netRun(devices ...string) vm {
	return vm{job: "net", params: map[string]string{
		"ip": "10.0.0.1/24", "peer": "10.0.0.2", "count": fmt.Sprint(pings),
	}, devices: devices}
}

// vhostUserNet is QEMU's virtio-net device on a vhost-user socket at
// path. vectors=0: with MSI-X, QEMU 7.2 under TCG crashes as the device
// starts (msix_set_vector_notifiers).
func vhostUserNet(path string) []string {
	return []string{"-chardev", "socket,id=c0,path=" + path,
		"-netdev", "vhost-user,id=n0,chardev=c0",
		"-device", "virtio-net-pci,netdev=n0,vectors=0"}
}

var statsLine = regexp.MustCompile(`^stats tx=(\d+) rx=(\d+)$`)

// checkNet fails t unless the guest, run by front, saw its link up and
// got back at least as many frames as it pinged, and testpmd, run by
// back, took the device.
func checkNet(t *testing.T, front, back *testutil.Proc) {
	t.Helper()
	lines := said(t, front)
	require.Len(t, lines, 2, "the guest's report: %q", lines)
	require.Equal(t, "link operstate=up carrier=1", lines[0])
	m := statsLine.FindStringSubmatch(lines[1])
	require.NotNil(t, m, "the guest's counters: %q", lines[1])
	tx, _ := strconv.Atoi(m[1])
	rx, _ := strconv.Atoi(m[2])
	require.GreaterOrEqual(t, tx, pings, "frames the guest sent")
	require.GreaterOrEqual(t, rx, pings, "frames the guest received (testpmd's echoes)")
	for _, s := range []string{"virtio is now ready for processing", "Port 0: link state change event"} {
		require.True(t, strings.Contains(back.Log.String(), s), "testpmd never logged %q; its log:\n%s", s, back.Log.String())
	}
}

// runNet runs testpmd with vdev under back's pair options, and the guest
// with QEMU connecting to a socket the tool listens on, and checks the
// traffic. testpmd forwards until stopped.
func runNet(t *testing.T, dir, vdev string, backOpts []string) {
	t.Helper()
	g := needGuest(t, testpmdProg)
	b := startBroker(t)
	back := b.pair(t, "net", "server", backOpts, testpmd(t, vdev)...)
	qemuPath := filepath.Join(dir, "qemu.sock")
	front := b.pair(t, "net", "client", []string{"--listen", qemuPath}, g.argv(netRun(vhostUserNet(qemuPath)...))...)
	requireExit(t, front, 0)
	checkNet(t, front, back)
	stop(t, back, 0)
}

// TestVhostUserNetTestpmdListens: testpmd in vhost server mode
// (client=0) listens on a path the tool connects to (--connect).
func TestVhostUserNetTestpmdListens(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "pmd.sock")
	runNet(t, dir, "net_vhost0,iface="+path+",client=0", []string{"--connect", path})
}

// TestVhostUserNetTestpmdConnects: testpmd in vhost client mode
// (client=1) connects to a path the tool listens on (--listen); DPDK
// retries until it can.
func TestVhostUserNetTestpmdConnects(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "pmd.sock")
	runNet(t, dir, "net_vhost0,iface="+path+",client=1", []string{"--listen", path})
}
