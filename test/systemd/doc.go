// Package systemdtest tests the daemon under a real systemd (Debian 12's
// systemd 252): the units as meson installs them, and the Debian
// package's maintainer scripts. The tests run inside a container that
// test/systemd/nspawn.sh boots with systemd-nspawn, a fresh one for each
// test; a oneshot unit runs this package's test binary there and ends
// the container with its exit status. Outside such a container every test
// skips, so `go test ./...` passes over them. doc/testing.md says how to
// run them and what they need.
package systemdtest
