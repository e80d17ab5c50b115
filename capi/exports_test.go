package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// The exports of exports.go, called as shim.c calls them. A _test.go file
// cannot use cgo, so C.int and C.char are never named here: the helpers
// are generic, and their type parameters are inferred from the export
// passed in (I is C.int, P is C.char).

// cString returns a NUL-terminated copy of s in Go memory, as a *C.char.
func cString[P ~int8](s string) *P {
	b := make([]P, len(s)+1)
	for i := 0; i < len(s); i++ {
		b[i] = P(s[i])
	}
	return &b[0]
}

// cBytes returns s without a terminating NUL.
func cBytes[P ~int8](s string) *P {
	b := make([]P, len(s))
	for i := 0; i < len(s); i++ {
		b[i] = P(s[i])
	}
	return &b[0]
}

// goString reads the NUL-terminated message in b.
func goString[P ~int8](b []P) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			return string(s)
		}
		s = append(s, byte(c))
	}
	return string(s) + "(not terminated)"
}

// call is the outcome of one export call.
type call struct {
	ret   int
	errno unix.Errno
	msg   string
}

// out is the errnum and message buffer an export reports into; a capacity
// of 0 passes a NULL buffer.
type out[I ~int32, P ~int8] struct {
	errnum I
	buf    []P
}

func newOut[I ~int32, P ~int8](capacity int) *out[I, P] {
	o := &out[I, P]{errnum: -12345}
	if capacity > 0 {
		o.buf = make([]P, capacity)
		for i := range o.buf {
			o.buf[i] = 'z' // no NUL: the export must write one
		}
	}
	return o
}

func (o *out[I, P]) args() (*I, *P, I) {
	if o.buf == nil {
		return &o.errnum, nil, 0
	}
	return &o.errnum, &o.buf[0], I(len(o.buf))
}

// result is the outcome of a call that returned ret. A success must leave
// errnum and the buffer as they were; it is reported as call{ret: ret},
// or with msg "(touched)" if it did not.
func (o *out[I, P]) result(ret I) call {
	if ret >= 0 {
		c := call{ret: int(ret)}
		if o.errnum != -12345 || (o.buf != nil && o.buf[0] != 'z') {
			c.msg = "(touched)"
		}
		return c
	}
	c := call{ret: int(ret), errno: unix.Errno(o.errnum)}
	if o.buf != nil {
		c.msg = goString(o.buf)
	}
	return c
}

const msgCap = 512 // shim.c's SPBROKER_MSG_MAX

func validate[I ~int32, P ~int8](f func(unsafe.Pointer, I, unsafe.Pointer, I, *I, *P, I) I, msg []byte, nfds int, expected []uint32, nExpected, capacity int) call {
	o := newOut[I, P](capacity)
	var m, e unsafe.Pointer
	if msg != nil {
		m = unsafe.Pointer(&msg[0])
	}
	if expected != nil {
		e = unsafe.Pointer(unsafe.SliceData(expected))
	}
	errnum, buf, bufCap := o.args()
	return o.result(f(m, I(nfds), e, I(nExpected), errnum, buf, bufCap))
}

// carg is a const char * argument: a string, NULL, or bytes without a
// terminating NUL.
type carg struct {
	s            string
	null         bool
	unterminated bool
}

var cnull = carg{null: true}

func str(s string) carg          { return carg{s: s} }
func unterminated(s string) carg { return carg{s: s, unterminated: true} }

func cptr[P ~int8](a carg) *P {
	switch {
	case a.null:
		return nil
	case a.unterminated:
		return cBytes[P](a.s)
	}
	return cString[P](a.s)
}

func connect[I ~int32, P ~int8](f func(*P, bool, *I, *P, I) I, path carg, nonblock bool) call {
	o := newOut[I, P](msgCap)
	errnum, buf, bufCap := o.args()
	return o.result(f(cptr[P](path), nonblock, errnum, buf, bufCap))
}

func sendGetPair[I ~int32, P ~int8](f func(I, *P, I, *I, *P, I) I, fd int, key carg, mode int) call {
	o := newOut[I, P](msgCap)
	errnum, buf, bufCap := o.args()
	return o.result(f(I(fd), cptr[P](key), I(mode), errnum, buf, bufCap))
}

func receiveSetPair[I ~int32, P ~int8](f func(I, *I, *P, I) I, fd int) call {
	o := newOut[I, P](msgCap)
	errnum, buf, bufCap := o.args()
	return o.result(f(I(fd), errnum, buf, bufCap))
}

func getPairExport[I ~int32, P ~int8](f func(*P, *P, I, *I, *P, I) I, path, key carg, mode int) call {
	o := newOut[I, P](msgCap)
	errnum, buf, bufCap := o.args()
	return o.result(f(cptr[P](path), cptr[P](key), I(mode), errnum, buf, bufCap))
}

func failed(errno unix.Errno, msg string) call { return call{ret: -1, errno: errno, msg: msg} }

// cMsg lays out a struct sp_broker_msg (1304 bytes on x86-64) holding b.
func cMsg(b []byte) []byte {
	m := make([]byte, 1304)
	copy(m, b)
	return m
}

func setPairBytes() []byte {
	b := make([]byte, libspbroker.MessageSize)
	libspbroker.NewSetPair().Encode(b)
	return b
}

func TestValidateExportArguments(t *testing.T) {
	f := spbrokerGoValidate
	nullText := "spbroker: validate: invalid argument: NULL message or negative count"
	set := []uint32{uint32(libspbroker.RequestSetPair)}
	valid := cMsg(setPairBytes())

	assert.Equal(t, failed(unix.EINVAL, nullText), validate(f, nil, 0, nil, 0, msgCap), "NULL message")
	assert.Equal(t, failed(unix.EINVAL, nullText), validate(f, nil, 1, set, 1, msgCap), "NULL message with a list")
	assert.Equal(t, failed(unix.EINVAL, nullText), validate(f, valid, 1, set, -1, msgCap), "negative count")
	// The count is only looked at with a list.
	assert.Equal(t, call{}, validate(f, valid, 1, nil, -1, msgCap), "NULL list, negative count")
	assert.Equal(t, call{}, validate(f, valid, 1, set, 1, msgCap), "valid")
	// A non-NULL empty list accepts nothing.
	assert.Equal(t, failed(unix.EPROTO, "spbroker: unexpected request type: request SET_PAIR"),
		validate(f, valid, 1, set[:0:0], 0, msgCap), "empty list")
	assert.Equal(t, failed(unix.EPROTO, "spbroker: wrong number of descriptors: descriptors 18446744073709551615"),
		validate(f, valid, -1, nil, 0, msgCap), "n_fds -1")

	// The message buffer: NULL, too small for anything, cut short.
	assert.Equal(t, call{ret: -1, errno: unix.EINVAL}, validate(f, nil, 0, nil, 0, 0), "NULL buffer")
	assert.Equal(t, failed(unix.EINVAL, ""), validate(f, nil, 0, nil, 0, 1), "1-byte buffer")
	assert.Equal(t, failed(unix.EINVAL, "spbroker:"), validate(f, nil, 0, nil, 0, 10), "10-byte buffer")
}

func TestConnectExportArguments(t *testing.T) {
	f := spbrokerGoConnect
	for _, nonblock := range []bool{false, true} {
		assert.Equal(t, failed(unix.EINVAL, "spbroker: connect: invalid argument: NULL socket path"),
			connect(f, cnull, nonblock), "NULL path")
		missing := filepath.Join(t.TempDir(), "missing.sock")
		assert.Equal(t, failed(unix.ENOENT, "connect unix "+missing+": connect: no such file or directory"),
			connect(f, str(missing), nonblock), "no broker")
		long := strings.Repeat("p", 108)
		assert.Equal(t, failed(unix.EINVAL, "connect unix "+long+": connect: invalid argument"),
			connect(f, str(long), nonblock), "path too long")
	}
}

func TestSendGetPairExportArguments(t *testing.T) {
	f := spbrokerGoSendGetPair
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	for _, mode := range []int{0, 1, 2} {
		assert.Equal(t, failed(unix.EINVAL, "spbroker: invalid argument: NULL key"), sendGetPair(f, fds[0], cnull, mode), "NULL key")
		assert.Equal(t, failed(unix.EINVAL, "spbroker: key of 0 bytes: key must be 1 to 1024 bytes"),
			sendGetPair(f, fds[0], str(""), mode), "empty key")
		// An unterminated key is read one byte past the limit, no further.
		assert.Equal(t, failed(unix.EINVAL, "spbroker: key longer than 1024 bytes: key must be 1 to 1024 bytes"),
			sendGetPair(f, fds[0], unterminated(strings.Repeat("K", 1025)), mode), "unterminated key")
	}
	// The mode is checked as spbroker_c.c's spbroker_check_mode does.
	assert.Equal(t, failed(unix.EINVAL, "send unix: spbroker: Mode(3): invalid pairing mode"),
		sendGetPair(f, fds[0], str("k"), 3), "mode 3")
	assert.Equal(t, failed(unix.EBADF, "send unix: sendmsg: bad file descriptor"),
		sendGetPair(f, -1, str("k"), 1), "bad descriptor")
	// Nothing was sent by any of these.
	unix.SetNonblock(fds[1], true)
	_, err = unix.Read(fds[1], make([]byte, 10))
	assert.Equal(t, unix.EAGAIN, err, "a refused request reached the broker")

	assert.Equal(t, call{}, sendGetPair(f, fds[0], str("k"), 2), "valid")
}

func TestReceiveSetPairExportArguments(t *testing.T) {
	f := spbrokerGoReceiveSetPair
	assert.Equal(t, failed(unix.EBADF, "receive unix: fcntl: bad file descriptor"), receiveSetPair(f, -1), "bad descriptor")
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	assert.Equal(t, failed(unix.ENOTSOCK, "receive unix: recvmsg: socket operation on non-socket"), receiveSetPair(f, p[0]), "a pipe")
}

func TestGetPairExportArguments(t *testing.T) {
	f := spbrokerGoGetPair
	missing := filepath.Join(t.TempDir(), "missing.sock")
	path := str(missing)
	for _, mode := range []int{0, 1, 2} {
		nullPath := failed(unix.EINVAL, "spbroker: get pair: invalid argument: NULL socket path")
		assert.Equal(t, nullPath, getPairExport(f, cnull, str("k"), mode), "NULL path")
		assert.Equal(t, nullPath, getPairExport(f, cnull, cnull, mode), "NULL path and key: the path is named")
		// The key is checked before connecting: no ENOENT.
		assert.Equal(t, failed(unix.EINVAL, "spbroker: invalid argument: NULL key"), getPairExport(f, path, cnull, mode), "NULL key")
		assert.Equal(t, failed(unix.EINVAL, "spbroker: key of 0 bytes: key must be 1 to 1024 bytes"),
			getPairExport(f, path, str(""), mode), "empty key")
		assert.Equal(t, failed(unix.EINVAL, "spbroker: key longer than 1024 bytes: key must be 1 to 1024 bytes"),
			getPairExport(f, path, unterminated(strings.Repeat("K", 1025)), mode), "unterminated key")
		assert.Equal(t, failed(unix.ENOENT, "connect unix "+missing+": connect: no such file or directory"),
			getPairExport(f, path, str("k"), mode), "no broker")
	}
}

// recoverCall runs a function that panics under rec (recoverInto), as
// every export's deferred call does.
func recoverCall[I ~int32, P ~int8](rec func(*I, *I, *P, I), capacity int) call {
	o := newOut[I, P](capacity)
	ret := func() (ret I) {
		errnum, buf, bufCap := o.args()
		defer rec(&ret, errnum, buf, bufCap)
		panic("boom")
	}()
	return o.result(ret)
}

func TestRecoverInto(t *testing.T) {
	assert.Equal(t, failed(unix.EIO, "spbroker: internal error: boom"), recoverCall(recoverInto, msgCap))
	assert.Equal(t, call{ret: -1, errno: unix.EIO}, recoverCall(recoverInto, 0), "NULL buffer")
}

// TestValidateExportVectors runs the shared message vectors through the
// export: its errno and text must be what the vectors give C, which is
// what test/vectors.c gets from both archives.
func TestValidateExportVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "libspbroker", "testdata", "vectors", "messages.json"))
	require.NoError(t, err)
	var file struct {
		Messages []struct {
			Name     string
			Hex      string
			Length   int
			NFDs     int
			Expected []uint32
			C        *struct {
				OK      bool
				Errno   string
				Message string
			}
		}
	}
	require.NoError(t, json.Unmarshal(b, &file))
	errnos := map[string]unix.Errno{"EPROTO": unix.EPROTO, "EINVAL": unix.EINVAL}
	n := 0
	for _, v := range file.Messages {
		if v.C == nil {
			continue
		}
		raw, err := hex.DecodeString(v.Hex)
		require.NoError(t, err)
		want := call{}
		if !v.C.OK {
			want = failed(errnos[v.C.Errno], v.C.Message)
		}
		assert.Equal(t, want, validate(spbrokerGoValidate, cMsg(raw), v.NFDs, v.Expected, len(v.Expected), msgCap), v.Name)
		n++
	}
	require.Greater(t, n, 100)
}

// A nonblocking receive before the reply is EAGAIN through the export, and
// a reply that then arrives is taken whole.
func TestReceiveSetPairExportNonblocking(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	require.NoError(t, err)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	f := spbrokerGoReceiveSetPair
	assert.Equal(t, failed(unix.EAGAIN, "receive unix: recvmsg: resource temporarily unavailable"), receiveSetPair(f, fds[0]))
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(pair[0])
	require.NoError(t, unix.Sendmsg(fds[1], setPairBytes(), unix.UnixRights(pair[1]), nil, 0))
	unix.Close(pair[1])
	deadline := time.Now().Add(5 * time.Second)
	c := receiveSetPair(f, fds[0])
	for c.errno == unix.EAGAIN && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		c = receiveSetPair(f, fds[0])
	}
	require.GreaterOrEqual(t, c.ret, 0, "%+v", c)
	unix.Close(c.ret)
}
