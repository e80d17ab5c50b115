// Package ctest tests libspbroker, the C library, from C: the conformance
// suite (conformance.c) and the host programs (threads.c, sigpipe.c,
// sigmask.c, forktrial.c, cxx/headers.cc) are compiled against every build
// of the library -- the Go c-archive, the runtime-free archive, the same
// with ASan and UBSan, and the meson installs found with pkg-config -- and
// run against real brokers, in this process's children and in children
// forked from them. The harness is in harness_test.go; `go test ./test/`
// runs it all. It needs cc, c++, ar, meson, ninja, pkg-config and valgrind.
//
// Each C file here begins with a "//go:build ignore" line: the go command
// refuses C files in the directory of a Go package that does not use cgo,
// and the harness, not cgo, compiles them.
package ctest
