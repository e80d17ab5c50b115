//go:build ignore

// othergo.go is another Go c-archive, for twohost.c: a host that links it
// together with libspbroker. The test builds it on its own with
// go build -buildmode=c-archive othergo.go. It exports one function.
package main

import "C"

//export othergo_add
func othergo_add(a, b C.int) C.int { return a + b }

func main() {}
