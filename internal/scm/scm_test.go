package scm

import (
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestOOBSize(t *testing.T) {
	assert.Equal(t, unix.CmsgSpace(MaxFD*4), OOBSize)
}

// Descriptors sent with a message come back out of its control data; more
// than MaxFD cannot be sent at all.
func TestRights(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer CloseAll(fds[:])
	var sent []int
	for i := 0; i <= MaxFD; i++ {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		sent = append(sent, fd)
	}
	defer CloseAll(sent)
	_, err = unix.SendmsgN(fds[0], []byte("x"), unix.UnixRights(sent...), nil, 0)
	assert.ErrorIs(t, err, unix.EINVAL)
	_, err = unix.SendmsgN(fds[0], []byte("x"), unix.UnixRights(sent[:MaxFD]...), nil, 0)
	require.NoError(t, err)

	oob := make([]byte, OOBSize)
	_, oobn, flags, _, err := unix.Recvmsg(fds[1], make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	require.NoError(t, err)
	assert.Zero(t, flags&unix.MSG_CTRUNC, "OOBSize holds MaxFD descriptors")
	got, err := Rights(oob[:oobn])
	require.NoError(t, err)
	assert.Len(t, got, MaxFD)
	CloseAll(got)

	none, err := Rights(nil)
	assert.NoError(t, err)
	assert.Empty(t, none)
	// A header that claims more than there is.
	bogus := make([]byte, unix.SizeofCmsghdr)
	(*unix.Cmsghdr)(unsafe.Pointer(&bogus[0])).SetLen(1000)
	_, err = Rights(bogus)
	assert.Error(t, err)
}

// Credentials are not rights: reported, and the rights beside them kept.
func TestRightsBesideOtherData(t *testing.T) {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	oob := append(unix.UnixCredentials(&unix.Ucred{Pid: 1}), unix.UnixRights(fd)...)
	got, err := Rights(oob)
	assert.ErrorIs(t, err, ErrNotRights)
	assert.Equal(t, []int{fd}, got)
	unix.Close(fd)
}

func TestDup(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[1])
	f := os.NewFile(uintptr(fds[0]), "a")
	defer f.Close()
	d, err := Dup(f)
	require.NoError(t, err)
	defer unix.Close(d)
	assert.NotEqual(t, fds[0], d)
	flags, err := unix.FcntlInt(uintptr(d), unix.F_GETFD, 0)
	require.NoError(t, err)
	assert.NotZero(t, flags&unix.FD_CLOEXEC)
	_, err = unix.Write(d, []byte("x"))
	require.NoError(t, err)
	buf := make([]byte, 1)
	_, err = unix.Read(fds[1], buf)
	require.NoError(t, err)
}

func TestUnixConn(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[1])
	c, err := UnixConn(os.NewFile(uintptr(fds[0]), "a"))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)

	p := make([]int, 2)
	require.NoError(t, unix.Pipe2(p, unix.O_CLOEXEC))
	defer unix.Close(p[1])
	_, err = UnixConn(os.NewFile(uintptr(p[0]), "pipe"))
	assert.Error(t, err)
}
