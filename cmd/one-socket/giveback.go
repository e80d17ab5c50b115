package main

import (
	"os"
	"strconv"
)

// envMaxConns carries the connection limit of the program that upgraded
// to the new program, which passes it back with the clients if it gives
// them back: the previous program then serves with the limit it had, even
// if the descriptor limit now leaves no room for it (lowered with
// prlimit under the running daemon, say), rather than fail as the new
// program did and lose every client.
const envMaxConns = "ONE_SOCKET_FALLBACK_MAX_CONNS"

// maxConnsEnv returns envMaxConns set to n.
func maxConnsEnv(n int) string { return envMaxConns + "=" + strconv.Itoa(n) }

// takeMaxConns returns the limit $ONE_SOCKET_FALLBACK_MAX_CONNS holds, or
// 0 if it is unset or not a positive number; it unsets the variable.
func takeMaxConns() int {
	v := os.Getenv(envMaxConns)
	os.Unsetenv(envMaxConns)
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0
	}
	return n
}
