//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fdleak.c leaves a socket and a file open at exit on purpose. The valgrind
 * test runs it first, under the same options as the conformance suite, to
 * show that this valgrind's --track-fds report names descriptors a program
 * created; valgrind releases differ in what they print when none are left.
 */
#include <fcntl.h>
#include <sys/socket.h>

int main(void)
{
	if (socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) < 0)
		return 2;
	if (open("/dev/null", O_RDONLY | O_CLOEXEC) < 0)
		return 2;
	return 0;
}
