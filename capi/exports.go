package main

// #include <stdlib.h>
// #include <string.h>
import "C"

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

// The exports below are called only by shim.c, which implements helper.h.
// Each one reports failure as -1, with the errno in *errnum and a message
// copied into the caller's buffer msg of msgCap bytes: C owns all memory
// involved, so no allocation crosses the boundary. No export prints, and no
// panic escapes one.

// spbrokerGoValidate checks the struct sp_broker_msg at msg, whose n_fds the
// shim passes separately: the field's offset depends on the ABI's alignment
// of uint64_t, and C knows it where Go would have to guess.
//
//export spbrokerGoValidate
func spbrokerGoValidate(msg unsafe.Pointer, nfds C.int, expected unsafe.Pointer, nExpected C.int, errnum *C.int, buf *C.char, bufCap C.int) (ret C.int) {
	defer recoverInto(&ret, errnum, buf, bufCap)
	if msg == nil || (expected != nil && nExpected < 0) {
		return fail(errnum, buf, bufCap, fmt.Errorf("spbroker: validate: %w: NULL message or negative count", errInvalidArgument))
	}
	// The wire bytes: 1044 on x86-64; where the union is only 4-aligned
	// they are 1040 and the 4 bytes read past them (fds[0]) are ignored
	// as padding.
	var m libspbroker.Message
	m.Decode(unsafe.Slice((*byte)(msg), libspbroker.MessageSize))
	var want []libspbroker.Request
	if expected != nil {
		// A non-nil list, even an empty one, must contain the request.
		want = make([]libspbroker.Request, 0, nExpected)
		for _, r := range unsafe.Slice((*uint32)(expected), int(nExpected)) {
			want = append(want, libspbroker.Request(r))
		}
	}
	if err := libspbroker.Validate(&m, int(nfds), want...); err != nil {
		return fail(errnum, buf, bufCap, err)
	}
	return 0
}

//export spbrokerGoConnect
func spbrokerGoConnect(path *C.char, nonblock bool, errnum *C.int, buf *C.char, bufCap C.int) (ret C.int) {
	defer recoverInto(&ret, errnum, buf, bufCap)
	if path == nil {
		return fail(errnum, buf, bufCap, fmt.Errorf("spbroker: connect: %w: NULL socket path", errInvalidArgument))
	}
	fd, err := libspbroker.Connect(C.GoString(path), nonblock)
	if err != nil {
		return fail(errnum, buf, bufCap, err)
	}
	return C.int(fd)
}

//export spbrokerGoSendGetPair
func spbrokerGoSendGetPair(fd C.int, key *C.char, mode C.int, errnum *C.int, buf *C.char, bufCap C.int) (ret C.int) {
	defer recoverInto(&ret, errnum, buf, bufCap)
	k, err := goKey(key)
	if err == nil {
		err = libspbroker.SendGetPair(int(fd), k, libspbroker.Mode(mode))
	}
	if err != nil {
		return fail(errnum, buf, bufCap, err)
	}
	return 0
}

//export spbrokerGoReceiveSetPair
func spbrokerGoReceiveSetPair(fd C.int, errnum *C.int, buf *C.char, bufCap C.int) (ret C.int) {
	defer recoverInto(&ret, errnum, buf, bufCap)
	peer, err := libspbroker.ReceiveSetPair(int(fd))
	if err != nil {
		return fail(errnum, buf, bufCap, err)
	}
	return C.int(peer)
}

//export spbrokerGoGetPair
func spbrokerGoGetPair(path, key *C.char, mode C.int, errnum *C.int, buf *C.char, bufCap C.int) (ret C.int) {
	defer recoverInto(&ret, errnum, buf, bufCap)
	if path == nil {
		return fail(errnum, buf, bufCap, fmt.Errorf("spbroker: get pair: %w: NULL socket path", errInvalidArgument))
	}
	// The key is checked before connecting, so a bad one costs nothing.
	k, err := goKey(key)
	if err != nil {
		return fail(errnum, buf, bufCap, err)
	}
	peer, err := getPair(C.GoString(path), k, libspbroker.Mode(mode))
	if err != nil {
		return fail(errnum, buf, bufCap, err)
	}
	return C.int(peer)
}

// getPair connects, asks for a pair and waits for it, blocking in plain
// system calls on a descriptor the runtime's poller never sees.
func getPair(path string, key []byte, mode libspbroker.Mode) (int, error) {
	fd, err := libspbroker.Connect(path, false)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	if err := libspbroker.SendGetPair(fd, key, mode); err != nil {
		return -1, err
	}
	return libspbroker.ReceiveSetPair(fd)
}

// goKey copies a C key of at most MaxKeyLength bytes. It reads at most one
// byte past the limit, so an unterminated key cannot run it off the end.
func goKey(key *C.char) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("spbroker: %w: NULL key", errInvalidArgument)
	}
	n := C.strnlen(key, libspbroker.MaxKeyLength+1)
	if n > libspbroker.MaxKeyLength {
		return nil, fmt.Errorf("spbroker: key longer than %d bytes: %w", libspbroker.MaxKeyLength, libspbroker.ErrInvalidKey)
	}
	k := C.GoBytes(unsafe.Pointer(key), C.int(n))
	return k, libspbroker.CheckKey(k)
}

// fail reports err to C and returns -1.
func fail(errnum *C.int, buf *C.char, bufCap C.int, err error) C.int {
	*errnum = C.int(errnoOf(err))
	putMessage(buf, bufCap, err.Error())
	return -1
}

// putMessage copies s, cut to fit and NUL-terminated, into buf.
func putMessage(buf *C.char, bufCap C.int, s string) {
	if buf == nil || bufCap <= 0 {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(bufCap))
	n := copy(b[:len(b)-1], s)
	b[n] = 0
}

// recoverInto turns a panic into an EIO failure: unwinding into C would
// crash the host.
func recoverInto(ret *C.int, errnum *C.int, buf *C.char, bufCap C.int) {
	if r := recover(); r != nil {
		*ret = fail(errnum, buf, bufCap, fmt.Errorf("spbroker: internal error: %v", r))
		*errnum = C.int(unix.EIO)
	}
}
