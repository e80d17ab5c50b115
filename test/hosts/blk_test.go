package hosts

// vhost-user-blk: qemu-storage-daemon exports a raw image, a guest reads
// it through QEMU's vhost-user-blk-pci, and the test compares the bytes.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
)

// The disk's known bytes: a random chunk at each offset, so that the guest
// can only have read them from this disk.
var diskOffsets = []int64{0, 1 << 20}

const diskChunk = 16

// disk is a raw image and the bytes it holds at diskOffsets.
type disk struct {
	path string
	want []string // what the guest should report, in order
}

func newDisk(t *testing.T) *disk {
	t.Helper()
	img := qemuImg.path(t)
	d := &disk{path: filepath.Join(t.TempDir(), "disk.raw")}
	out, err := exec.Command(img, "create", "-q", "-f", "raw", d.path, "4M").CombinedOutput()
	require.NoError(t, err, "qemu-img create: %s", out)
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	for _, off := range diskOffsets {
		chunk := make([]byte, diskChunk)
		rand.Read(chunk)
		_, err := f.WriteAt(chunk, off)
		require.NoError(t, err)
		d.want = append(d.want, fmt.Sprintf("blk %d %s", off, hex.EncodeToString(chunk)))
	}
	require.NoError(t, f.Close())
	return d
}

// run is the guest's run that reads the disk, given as QEMU's devices.
func (d *disk) run(devices ...string) vm {
	var offs []string
	for _, off := range diskOffsets {
		offs = append(offs, fmt.Sprint(off))
	}
	return vm{job: "blk", params: map[string]string{"off": strings.Join(offs, ","), "len": fmt.Sprint(diskChunk)}, devices: devices}
}

// check fails t unless the guest, run by p, read the disk's bytes.
func (d *disk) check(t *testing.T, p *testutil.Proc) {
	t.Helper()
	require.Equal(t, d.want, said(t, p), "what the guest read from the disk")
}

// storageDaemon returns qemu-storage-daemon's command line exporting the
// disk as vhost-user-blk on addr (its addr.* options).
func (d *disk) storageDaemon(t *testing.T, addr string) []string {
	t.Helper()
	return []string{storageDaemon.path(t),
		"--blockdev", "driver=file,node-name=f,filename=" + d.path,
		"--blockdev", "driver=raw,node-name=d,file=f",
		"--export", "type=vhost-user-blk,id=e,node-name=d," + addr,
	}
}

// vhostUserBlk is QEMU's device for a vhost-user-blk back end on chardev
// (its socket options).
func vhostUserBlk(chardev string) []string {
	return []string{"-chardev", "socket,id=c0," + chardev, "-device", "vhost-user-blk-pci,chardev=c0"}
}

// TestGuestVirtioBlk reads the disk through plain virtio-blk, without the
// broker: the harness's check that the guest reads what the test wrote.
func TestGuestVirtioBlk(t *testing.T) {
	g := needGuest(t, qemuImg)
	d := newDisk(t)
	p := start(t, g.argv(d.run(
		"-drive", "file="+d.path+",format=raw,if=none,id=d0,readonly=on",
		"-device", "virtio-blk-pci,drive=d0"))...)
	requireExit(t, p, 0)
	d.check(t, p)
}

// TestVhostUserBlkListeningFD: qemu-storage-daemon listens on the fd 3
// that --listening-fd gives it (it calls listen() on the fd, so a
// connected socket would not do), the tool relays between its connection
// and the brokered socket, and QEMU uses the other end as fd 3.
func TestVhostUserBlkListeningFD(t *testing.T) {
	g := needGuest(t, qemuImg, storageDaemon)
	d := newDisk(t)
	b := startBroker(t)
	back := b.pair(t, "blk", "server", []string{"--listening-fd"}, d.storageDaemon(t, "addr.type=fd,addr.str=3")...)
	front := b.pair(t, "blk", "client", nil, g.argv(d.run(vhostUserBlk("fd=3")...))...)
	requireExit(t, front, 0)
	d.check(t, front)
	// qemu-storage-daemon serves on after its client has gone.
	stop(t, back, 0)
}

// TestVhostUserBlkPaths: both programs on socket paths, as most
// deployments configure them: qemu-storage-daemon listens on a path the
// tool connects to (--connect), QEMU connects to a path the tool listens
// on (--listen).
func TestVhostUserBlkPaths(t *testing.T) {
	g := needGuest(t, qemuImg, storageDaemon)
	d := newDisk(t)
	b := startBroker(t)
	dir := shortTempDir(t)
	backPath, frontPath := filepath.Join(dir, "qsd.sock"), filepath.Join(dir, "qemu.sock")
	back := b.pair(t, "blk", "server", []string{"--connect", backPath},
		d.storageDaemon(t, "addr.type=unix,addr.path="+backPath)...)
	front := b.pair(t, "blk", "client", []string{"--listen", frontPath},
		g.argv(d.run(vhostUserBlk("path="+frontPath)...))...)
	requireExit(t, front, 0)
	d.check(t, front)
	_, err := os.Lstat(frontPath)
	require.ErrorIs(t, err, os.ErrNotExist, "--listen's socket file outlived the tool")
	stop(t, back, 0)
}

// TestVhostUserBlkHandoff: with --handoff on both ends the tools pass
// qemu-storage-daemon's connection across to QEMU, and nothing stays in
// the data path, whether the daemon listens on the fd 3 it is given or
// on a path. QEMU starts paused (-S) with a QMP socket: by then its
// vhost-user-blk device has connected, and the test checks that QEMU's
// fd 3 leads straight to qemu-storage-daemon before letting the guest run.
func TestVhostUserBlkHandoff(t *testing.T) {
	g := needGuest(t, qemuImg, storageDaemon)
	for _, back := range []struct {
		name string
		opts func(path string) []string // the serving tool's options
		addr func(path string) string   // qemu-storage-daemon's addr.*
	}{
		{"listening-fd",
			func(string) []string { return []string{"--listening-fd"} },
			func(string) string { return "addr.type=fd,addr.str=3" }},
		{"connect",
			func(path string) []string { return []string{"--connect", path} },
			func(path string) string { return "addr.type=unix,addr.path=" + path }},
	} {
		t.Run(back.name, func(t *testing.T) {
			d := newDisk(t)
			b := startBroker(t)
			dir := shortTempDir(t)
			qmp, path := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "qsd.sock")
			backP := b.pair(t, "blk", "server", append([]string{"--handoff"}, back.opts(path)...),
				d.storageDaemon(t, back.addr(path))...)
			front := b.pair(t, "blk", "client", []string{"--handoff"}, g.argv(d.run(append(vhostUserBlk("fd=3"),
				"-S", "-qmp", "unix:"+qmp+",server=on,wait=off")...))...)
			front.WaitFor(t, "QEMU's QMP socket", func() bool { _, err := os.Stat(qmp); return err == nil })
			q := dialQMP(t, qmp)

			qemu, qsd := childOf(t, front.Cmd.Process.Pid), childOf(t, backP.Cmd.Process.Pid)
			if fd := peerHolder(t, qemu, 3, qsd); fd < 0 {
				t.Fatalf("QEMU's descriptor 3 is not connected to qemu-storage-daemon (pid %d)", qsd)
			}
			q.do("cont")
			requireExit(t, front, 0)
			d.check(t, front)
			stop(t, backP, 0)
		})
	}
}
