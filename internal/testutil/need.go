package testutil

import (
	"os"
	"testing"
)

// Need skips t for why unless ok; under ONE_SOCKET_REQUIRE_ALL=1 (CI),
// where every test must run, it fails it instead.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("ONE_SOCKET_REQUIRE_ALL") == "1" {
		t.Fatalf("cannot run: %s; ONE_SOCKET_REQUIRE_ALL=1 forbids skipping", why)
	}
	t.Skip(why)
}

// NeedRoot is Need for a test that must run as root, to act as other
// users.
func NeedRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "the test acts as other users, which needs root")
}
