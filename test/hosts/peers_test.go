package hosts

// Who is connected to whom: the kernel's sock_diag interface names the
// peer of each Unix socket, and /proc names the sockets each process
// holds. The handoff test uses it to see that QEMU's socket leads to
// qemu-storage-daemon itself, not to a one-socketctl relaying between.

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// From linux/unix_diag.h, which x/sys/unix does not carry.
const (
	udiagShowPeer = 0x4
	unixDiagPeer  = 2
)

// unixPeers returns the inode of the peer of every connected Unix
// socket in this network namespace, by the inode of the socket.
func unixPeers() (map[uint32]uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// nlmsghdr, then unix_diag_req: family, protocol, pad, states,
	// ino, show, cookie[2].
	req := make([]byte, 16+24)
	le := binary.LittleEndian // netlink is host order, and this is amd64
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	le.PutUint32(req[20:], ^uint32(0)) // every state
	le.PutUint32(req[28:], udiagShowPeer)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	peers := map[uint32]uint32{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, err
		}
		for b := buf[:n]; len(b) >= 16; {
			size, typ := le.Uint32(b), le.Uint16(b[4:])
			if size < 16 || int(size) > len(b) {
				return nil, fmt.Errorf("sock_diag: a message of %d bytes in %d", size, len(b))
			}
			switch typ {
			case unix.NLMSG_DONE:
				return peers, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: %v", unix.Errno(-int32(le.Uint32(b[16:]))))
			}
			// unix_diag_msg: family, type, state, pad, ino, cookie[2];
			// then attributes.
			msg := b[16:size]
			ino := le.Uint32(msg[4:])
			for a := msg[16:]; len(a) >= 4; {
				alen, atyp := int(le.Uint16(a)), le.Uint16(a[2:])
				if alen < 4 || alen > len(a) {
					break
				}
				if atyp == unixDiagPeer && alen >= 8 {
					peers[ino] = le.Uint32(a[4:])
				}
				a = a[min((alen+3)&^3, len(a)):]
			}
			b = b[min((int(size)+3)&^3, len(b)):]
		}
	}
}

// socketsOf returns the inodes of the sockets process pid holds, by
// descriptor.
func socketsOf(pid int) (map[int]uint32, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]uint32{}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 32)
			fd, ferr := strconv.Atoi(e.Name())
			if err == nil && ferr == nil {
				out[fd] = uint32(ino)
			}
		}
	}
	return out, nil
}

// childOf returns the pid of the one child of process pid: the command
// that one-socketctl pair runs (its shim execs the command in place).
// Each thread lists the children it forked, and a Go program forks from
// any of its threads.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			kids = append(kids, strings.Fields(string(b))...)
		}
	}
	if len(kids) != 1 {
		t.Fatalf("process %d has children %q, want one", pid, kids)
	}
	child, err := strconv.Atoi(kids[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// peerHolder returns the descriptor under which process other holds the
// peer of process pid's descriptor fd, or -1 if it does not hold it.
func peerHolder(t *testing.T, pid, fd, other int) int {
	t.Helper()
	mine, err := socketsOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	ino, ok := mine[fd]
	if !ok {
		t.Fatalf("descriptor %d of process %d is not a socket", fd, pid)
	}
	peers, err := unixPeers()
	if err != nil {
		t.Fatalf("asking sock_diag: %v", err)
	}
	peer, ok := peers[ino]
	if !ok {
		t.Fatalf("descriptor %d of process %d (socket %d) has no peer", fd, pid, ino)
	}
	theirs, err := socketsOf(other)
	if err != nil {
		t.Fatal(err)
	}
	for ofd, oino := range theirs {
		if oino == peer {
			return ofd
		}
	}
	return -1
}

// TestUnixPeers checks the harness's view of connections on a socketpair
// of its own.
func TestUnixPeers(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if got := peerHolder(t, os.Getpid(), fds[0], os.Getpid()); got != fds[1] {
		t.Fatalf("the peer of descriptor %d is held as %d, want %d", fds[0], got, fds[1])
	}
}
