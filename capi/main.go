// Command capi is libspbroker.a, the C library, built with
//
//	go build -buildmode=c-archive -o libspbroker.a ./capi
//
// The public functions of include/socketpair-broker/helper.h are C functions
// in shim.c. In the process that loaded the library they call the Go
// exports of exports.go, which are thin translations to package
// libspbroker; in a forked child they call the pure C implementation in
// spbroker_c.c instead. errno.go is the one place where Go errors become
// errno values.
package main

// #cgo CFLAGS: -I${SRCDIR}/../include -std=gnu11 -O2 -Wall -Wextra -fvisibility=hidden
import "C"

// main is required by -buildmode=c-archive and never runs.
func main() {}
