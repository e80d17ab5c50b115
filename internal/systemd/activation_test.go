package systemd

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// envChild makes the test binary the activated process: it calls ListenFDs
// and prints what it found as JSON.
const envChild = "SYSTEMD_TEST_CHILD"

// childReport is what the activated test process saw.
type childReport struct {
	Names   []string
	FDs     []int
	CloExec []bool
	Open    []bool // descriptors 3 and 4, after ListenFDs returned
	Err     string
	Env     []string // the LISTEN_ variables still set afterwards
}

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

func child() int {
	var r childReport
	// Passed descriptors must not be mistaken for the runtime's own, so
	// look at them before anything else opens one.
	if os.Getenv("LISTEN_PID") == "self" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	ds, err := ListenFDs(os.Getpid())
	if err != nil {
		r.Err = err.Error()
	}
	for _, d := range ds {
		r.Names = append(r.Names, d.Name)
		r.FDs = append(r.FDs, d.FD)
		flags, _ := unix.FcntlInt(uintptr(d.FD), unix.F_GETFD, 0)
		r.CloExec = append(r.CloExec, flags&unix.FD_CLOEXEC != 0)
	}
	for fd := ListenFDsStart; fd < ListenFDsStart+2; fd++ {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		r.Open = append(r.Open, err == nil)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			r.Env = append(r.Env, k+"="+v)
		}
	}
	json.NewEncoder(os.Stdout).Encode(&r)
	return 0
}

// activate runs the test binary as an activated process with two
// listening sockets as descriptors 3 and 4 and the LISTEN_ variables in
// env ("self" as LISTEN_PID stands for the child's own pid).
func activate(t *testing.T, env ...string) childReport {
	t.Helper()
	dir := t.TempDir()
	var files []*os.File
	for _, name := range []string{"a", "b"} {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unix"})
		require.NoError(t, err)
		f, err := ln.File()
		require.NoError(t, err)
		ln.Close()
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), envChild+"=1")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.Output()
	require.NoError(t, err)
	var r childReport
	require.NoError(t, json.Unmarshal(out, &r), "%s", out)
	return r
}

// TestListenFDs runs ListenFDs in a real activated process: what it
// returns, what it closes, and that it always unsets the variables.
func TestListenFDs(t *testing.T) {
	t.Run("named", func(t *testing.T) {
		r := activate(t, "LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=broker:control")
		assert.Empty(t, r.Err)
		assert.Equal(t, []string{"broker", "control"}, r.Names)
		assert.Equal(t, []int{3, 4}, r.FDs)
		assert.Equal(t, []bool{true, true}, r.CloExec, "passed descriptors become close-on-exec")
		assert.Empty(t, r.Env)
	})
	t.Run("unnamed", func(t *testing.T) {
		r := activate(t, "LISTEN_PID=self", "LISTEN_FDS=1")
		assert.Empty(t, r.Err)
		assert.Equal(t, []string{""}, r.Names)
		assert.Equal(t, []bool{true, true}, r.Open, "the descriptor after LISTEN_FDS is not touched")
	})
	t.Run("for another process", func(t *testing.T) {
		r := activate(t, "LISTEN_PID=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=broker:control")
		assert.Empty(t, r.Err)
		assert.Empty(t, r.FDs)
		assert.Equal(t, []bool{true, true}, r.Open, "another process's descriptors are left alone")
		assert.Empty(t, r.Env, "the variables are unset even when they were not for us")
	})
	t.Run("names do not match the count", func(t *testing.T) {
		r := activate(t, "LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=broker")
		assert.Contains(t, r.Err, "LISTEN_FDNAMES names 1 descriptors but LISTEN_FDS is 2")
		assert.Equal(t, []bool{false, false}, r.Open, "on error the passed descriptors are closed")
		assert.Empty(t, r.Env)
	})
	for _, n := range []string{"x", "-1", "16777217"} {
		t.Run("LISTEN_FDS="+n, func(t *testing.T) {
			r := activate(t, "LISTEN_PID=self", "LISTEN_FDS="+n)
			assert.Contains(t, r.Err, "is not a descriptor count")
			assert.Empty(t, r.Env)
		})
	}
	t.Run("zero", func(t *testing.T) {
		r := activate(t, "LISTEN_PID=self", "LISTEN_FDS=0", "LISTEN_FDNAMES=")
		assert.Empty(t, r.Err)
		assert.Empty(t, r.FDs)
	})
}

// TestUnixListener checks every kind of socket a unit file could pass by
// mistake, and that the descriptor given is closed in every case.
func TestUnixListener(t *testing.T) {
	dir := t.TempDir()
	fdOf := func(t *testing.T, typ int, listen bool, bind unix.Sockaddr) int {
		domain := unix.AF_UNIX
		if _, ok := bind.(*unix.SockaddrInet4); ok {
			domain = unix.AF_INET
		}
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		if bind != nil {
			require.NoError(t, unix.Bind(fd, bind))
		}
		if listen {
			require.NoError(t, unix.Listen(fd, 1))
		}
		return fd
	}
	path := func(name string) *unix.SockaddrUnix { return &unix.SockaddrUnix{Name: filepath.Join(dir, name)} }
	for _, tt := range []struct {
		name string
		fd   func(t *testing.T) int
		err  string // "" for a listener
	}{
		{"listening stream", func(t *testing.T) int { return fdOf(t, unix.SOCK_STREAM, true, path("ok")) }, ""},
		{"not listening", func(t *testing.T) int { return fdOf(t, unix.SOCK_STREAM, false, path("idle")) }, "is not listening"},
		{"datagram", func(t *testing.T) int { return fdOf(t, unix.SOCK_DGRAM, false, path("dgram")) }, "is not a stream socket"},
		{"TCP", func(t *testing.T) int {
			return fdOf(t, unix.SOCK_STREAM, true, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		}, "is not a Unix socket"},
		{"not a socket", func(t *testing.T) int {
			fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			return fd
		}, "getsockname"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fd := tt.fd(t)
			ln, err := UnixListener(Descriptor{FD: fd, Name: "broker"})
			_, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			assert.ErrorIs(t, ferr, unix.EBADF, "the descriptor given is closed")
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				assert.ErrorContains(t, err, "broker socket (descriptor")
				return
			}
			require.NoError(t, err)
			a := ln.Addr().(*net.UnixAddr).Name
			require.NoError(t, ln.Close())
			_, err = os.Lstat(a)
			assert.NoError(t, err, "closing the listener leaves the manager's file")
		})
	}
}

// TestListenEnv checks the variables that pass descriptors to a child.
func TestListenEnv(t *testing.T) {
	env := ListenEnv([]string{"A=1", "LISTEN_FDS=9", "LISTEN_PID=2", "LISTEN_FDNAMES=x", "B=2"}, "spbroker")
	assert.Equal(t, []string{"A=1", "B=2", "LISTEN_FDS=1", "LISTEN_FDNAMES=spbroker"}, env)
	env = WithListenPID(append(env, "LISTEN_PID=1"), 42)
	assert.Equal(t, []string{"A=1", "B=2", "LISTEN_FDS=1", "LISTEN_FDNAMES=spbroker", "LISTEN_PID=42"}, env)
	assert.Equal(t, []string{"A=1"}, ListenEnv([]string{"A=1", "LISTEN_FDS=1"}), "no names: only removed")
	assert.Equal(t, "LISTEN_FDS=2", ListenEnv(nil, "broker", "control")[0])
	assert.Equal(t, "LISTEN_FDNAMES=broker:control", ListenEnv(nil, "broker", "control")[1])
}

func TestValidFDName(t *testing.T) {
	for s, ok := range map[string]bool{
		"broker": true, "vhost-user/blk0": true, "~ !": true,
		"": false, "a:b": false, "tab\there": false, "é": false,
		string(make([]byte, 256)): false,
	} {
		assert.Equal(t, ok, ValidFDName(s), "%q", s)
	}
	long := make([]byte, 255)
	for i := range long {
		long[i] = 'k'
	}
	assert.True(t, ValidFDName(string(long)))
}
