// Package hosts tests One Socket end to end with the programs it is made
// to connect, as Debian 12 packages them: QEMU (qemu-system-x86_64, with
// its QMP monitor and vhost-user devices), qemu-storage-daemon, DPDK's
// dpdk-testpmd and QEMU's virtiofsd. Each test runs a real one-socket
// daemon and one-socketctl pair on each side of a key, and a guest, where
// one is needed, that boots Debian's cloud kernel under TCG with an
// initramfs made here from busybox-static.
//
// The package has only tests. A program that is not installed skips its
// tests, naming its Debian package; with ONE_SOCKET_REQUIRE_ALL=1 (as in
// CI) the skip is a failure. guest.sh fetches the guest's kernel into a
// cache outside the repository, and may be run ahead of the tests.
package hosts
