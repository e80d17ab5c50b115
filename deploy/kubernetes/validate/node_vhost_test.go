package validate

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
)

// vhostFile is the manifest of the vhost-user-blk example.
const vhostFile = "vhost-user-blk.yaml"

// processesOf returns the pids of the processes in process group pgid
// whose command name (as /proc/PID/comm has it, at most 15 bytes) is comm.
func processesOf(t *testing.T, pgid int, comm string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// "PID (COMM) STATE PPID PGRP ...": COMM may hold blanks and
		// parentheses, so read after the last ")".
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		name := string(stat[bytes.IndexByte(stat, '(')+1 : i])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && name == comm {
			pids = append(pids, pid)
		}
	}
	return pids
}

// socketInodes returns the inodes of the sockets process pid has open, by
// descriptor.
func socketInodes(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	socks := map[int]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
			fd, _ := strconv.Atoi(e.Name())
			socks[fd] = strings.TrimSuffix(inode, "]")
		}
	}
	return socks
}

// unixPeer returns the inode of the socket connected to the Unix socket
// with the given inode, as ss reports it ("u_str ESTAB 0 0 ADDR INODE
// PEERADDR PEERINODE").
func unixPeer(t *testing.T, inode string) string {
	t.Helper()
	out, err := exec.Command("ss", "-x", "-a", "-n", "-H").Output()
	require.NoError(t, err)
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 8 && f[5] == inode {
			return f[7]
		}
	}
	return ""
}

// TestNodeVhostUserBlk plays the node for vhost-user-blk.yaml: the
// broker, then the storage pod, whose init container makes the disk and
// whose qemu-storage-daemon serves it, then the VM pod, whose guest boots
// from that disk through vhost-user-blk and prints the line the disk's
// boot sector holds. It checks that QEMU's descriptor 3 is connected to
// qemu-storage-daemon itself, so that nothing is left in the data path,
// and that both pods stop on SIGTERM. It needs Debian's QEMU
// (qemu-system-x86, qemu-system-common) and ss (iproute2).
func TestNodeVhostUserBlk(t *testing.T) {
	needNode(t)
	for tool, pkg := range map[string]string{"qemu-system-x86_64": "qemu-system-x86",
		"qemu-storage-daemon": "qemu-system-common", "ss": "iproute2", "truncate": "coreutils", "dd": "coreutils"} {
		if _, err := exec.LookPath(tool); err != nil {
			cannotCheck(t, tool+" is not installed (Debian: "+pkg+")")
		}
	}
	d, errs := checkFiles(t, readManifests(t))
	require.Empty(t, errs)
	var storage, vm *Client
	for _, cl := range d.Clients() {
		if cl.Pod.Owner.File != vhostFile {
			continue
		}
		switch {
		case cl.Mode.String() == "server" && storage == nil:
			storage = cl
		case cl.Mode.String() == "client" && vm == nil:
			vm = cl
		default:
			t.Fatalf("%s: a third pod; this test knows a storage pod and a VM pod", cl.Pod)
		}
	}
	require.NotNil(t, storage, "no storage pod in %s", vhostFile)
	require.NotNil(t, vm, "no VM pod in %s", vhostFile)

	n := newNode(t, d)
	daemon, daemonProc := n.startBroker()

	// The storage pod's init container makes the disk; what it must say
	// is in its environment.
	require.Len(t, storage.Pod.Spec.InitContainers, 1)
	env := map[string]string{}
	for _, e := range storage.Pod.Spec.InitContainers[0].Env {
		env[e.Name] = e.Value
	}
	require.NotEmpty(t, env["DISK"])
	require.NotEmpty(t, env["BOOT_MESSAGE"])
	storagePod, procs := n.startPod(storage.Pod)
	storageProc := procs[storage.Container.Name]
	disk := storagePod.container(storage.Container.Name).translate(env["DISK"])
	img, err := os.ReadFile(disk)
	require.NoError(t, err)
	assert.Len(t, img, 64<<20)
	assert.Equal(t, []byte{0x55, 0xaa}, img[510:512], "the boot signature")
	assert.Contains(t, string(img[:510]), env["BOOT_MESSAGE"]+"\r\n\x00")
	fi, err := os.Stat(disk)
	require.NoError(t, err)
	uid, gid, err := UIDGID(storage.Pod.Spec, &storage.Pod.Spec.InitContainers[0])
	require.NoError(t, err)
	assert.Equal(t, [2]uint32{uint32(uid), uint32(gid)}, [2]uint32{fi.Sys().(*syscall.Stat_t).Uid, fi.Sys().(*syscall.Stat_t).Gid})

	// The VM: SeaBIOS boots from the vhost-user-blk disk, whose boot
	// sector writes the line to the serial port, QEMU's standard output.
	_, procs = n.startPod(vm.Pod)
	vmProc := procs[vm.Container.Name]
	vmProc.WaitFor(t, "the guest's line on the serial console", func() bool {
		return strings.Contains(vmProc.Log.String(), env["BOOT_MESSAGE"]+"\r\n")
	})
	assert.False(t, storageProc.Exited(), "qemu-storage-daemon ended: %s", storageProc.Log.String())

	// Nothing in the data path: QEMU's descriptor 3 is connected to a
	// socket that qemu-storage-daemon holds.
	qemus := processesOf(t, vmProc.Cmd.Process.Pid, "qemu-system-x86")
	require.Len(t, qemus, 1, "the QEMU of the VM pod")
	qsds := processesOf(t, storageProc.Cmd.Process.Pid, "qemu-storage-da")
	require.Len(t, qsds, 1, "the qemu-storage-daemon of the storage pod")
	qemuSock := socketInodes(t, qemus[0])[3]
	require.NotEmpty(t, qemuSock, "QEMU's descriptor 3 is not a socket")
	peer := unixPeer(t, qemuSock)
	require.NotEmpty(t, peer, "the peer of QEMU's socket %s", qemuSock)
	var held bool
	for _, inode := range socketInodes(t, qsds[0]) {
		held = held || inode == peer
	}
	assert.True(t, held, "QEMU's descriptor 3 (socket %s) is connected to socket %s, which qemu-storage-daemon does not hold: something is in between", qemuSock, peer)

	st := daemon.status(d.Broker.CtlSocket)
	assert.EqualValues(t, 0, st["denied_total"])
	assert.GreaterOrEqual(t, st["paired_total"], float64(1))

	// The kubelet deletes the pods: one-socketctl passes SIGTERM on, and
	// QEMU and qemu-storage-daemon stop.
	for _, p := range []*testutil.Proc{vmProc, storageProc} {
		require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-p.Done():
		case <-time.After(time.Minute):
			t.Fatalf("%s did not stop on SIGTERM:\n%s", p.Name, p.Log.String())
		}
	}
	assert.Empty(t, processesOf(t, vmProc.Cmd.Process.Pid, "qemu-system-x86"), "QEMU outlived its pod")
	assert.Empty(t, processesOf(t, storageProc.Cmd.Process.Pid, "qemu-storage-da"), "qemu-storage-daemon outlived its pod")
	require.NoError(t, daemonProc.Cmd.Process.Signal(syscall.SIGTERM))
	<-daemonProc.Done()
	assert.NoError(t, daemonProc.Err, "the broker's exit: %s", daemonProc.Log.String())
}
