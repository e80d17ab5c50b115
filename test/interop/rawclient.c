/*
 * rawclient: a SocketPair Broker client written against the wire format
 * alone, with plain system calls and no library of this project. It proves
 * that the daemon speaks the protocol as the original C clients do.
 *
 * Usage: rawclient SOCKET KEY MODE LINE
 *   SOCKET  broker socket path; a leading '@' names an abstract socket
 *   KEY     pairing key (1..1024 bytes)
 *   MODE    none, client or server
 *   LINE    text sent to the peer over the received descriptor
 *
 * It sends a hand-built 1044-byte GET_PAIR, receives SET_PAIR with one
 * descriptor, writes LINE and a newline to the peer, reads the peer's line
 * and prints "got: <line>" on stdout. Exit status 0 on success, 1 on any
 * failure (with the reason on stderr).
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, MSG_CMSG_CLOEXEC */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define REQUEST_GET_PAIR 1
#define REQUEST_SET_PAIR 2
#define PROTOCOL_VERSION 1
#define GET_PAIR_SIZE    1028
#define SET_PAIR_SIZE    8
#define MAX_KEY          1024
/* The original puts 1044 bytes on the wire: a 12-byte header and a payload
 * union padded from 1028 to 1032 bytes. The protocol document says 1040. */
#define WIRE_SIZE        1044
#define DOC_SIZE         1040

static int fail(const char *what)
{
	fprintf(stderr, "rawclient: %s: %s\n", what, strerror(errno));
	return 1;
}

static int failx(const char *what)
{
	fprintf(stderr, "rawclient: %s\n", what);
	return 1;
}

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static uint32_t get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* broker_connect returns a socket connected to the broker, or -1. */
static int broker_connect(const char *path)
{
	struct sockaddr_un sa;
	size_t n = strlen(path);
	socklen_t len;
	int s;

	if (n >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, n);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	if (path[0] == '@') {
		/* Abstract: a leading NUL, and the length counts the name only. */
		sa.sun_path[0] = '\0';
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	}
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&sa, len) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* get_pair sends GET_PAIR on s and returns the descriptor from SET_PAIR,
 * or -1 with the reason printed. */
static int get_pair(int s, const char *key, uint16_t mode)
{
	unsigned char msg[WIRE_SIZE];
	size_t klen = strlen(key);
	size_t got = 0;
	int fd = -1;
	ssize_t n;

	if (klen < 1 || klen > MAX_KEY) {
		failx("key must be 1 to 1024 bytes");
		return -1;
	}
	memset(msg, 0, sizeof(msg));
	put32(msg + 0, REQUEST_GET_PAIR);
	put32(msg + 4, PROTOCOL_VERSION);
	put32(msg + 8, GET_PAIR_SIZE);
	put16(msg + 12, mode);
	put16(msg + 14, (uint16_t)klen);
	memcpy(msg + 16, key, klen);

	while (got < sizeof(msg)) {
		n = send(s, msg + got, sizeof(msg) - got, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail("send GET_PAIR");
			return -1;
		}
		got += (size_t)n;
	}

	/* Receive until a whole message is in: the descriptor comes with the
	 * first byte, the rest may arrive in later reads. */
	got = 0;
	while (got < DOC_SIZE) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int) * 4)];
		} ctl;
		struct iovec iov = { msg + got, sizeof(msg) - got };
		struct msghdr mh;
		struct cmsghdr *c;

		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail("recvmsg SET_PAIR");
			goto bad;
		}
		if (n == 0) {
			failx("broker closed the connection before SET_PAIR");
			goto bad;
		}
		if (mh.msg_flags & MSG_CTRUNC) {
			failx("descriptors truncated");
			goto bad;
		}
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			size_t i, k;
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (i = 0; i < k; i++) {
				int r;
				memcpy(&r, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (fd < 0) {
					fd = r;
				} else {
					close(r);
					failx("more than one descriptor in SET_PAIR");
					goto bad;
				}
			}
		}
		got += (size_t)n;
	}
	if (get32(msg + 0) != REQUEST_SET_PAIR || get32(msg + 4) != PROTOCOL_VERSION ||
	    get32(msg + 8) != SET_PAIR_SIZE) {
		failx("reply is not a version 1 SET_PAIR");
		goto bad;
	}
	if (fd < 0) {
		failx("SET_PAIR carried no descriptor");
		return -1;
	}
	return fd;
bad:
	if (fd >= 0)
		close(fd);
	return -1;
}

int main(int argc, char **argv)
{
	char line[4096];
	size_t len = 0;
	uint16_t mode;
	int s, fd;

	if (argc != 5)
		return failx("usage: rawclient SOCKET KEY none|client|server LINE");
	if (strcmp(argv[3], "none") == 0)
		mode = 0;
	else if (strcmp(argv[3], "client") == 0)
		mode = 1;
	else if (strcmp(argv[3], "server") == 0)
		mode = 2;
	else
		return failx("mode must be none, client or server");

	s = broker_connect(argv[1]);
	if (s < 0)
		return fail("connect");
	fd = get_pair(s, argv[2], mode);
	/* The broker has done its part either way. */
	close(s);
	if (fd < 0)
		return 1;

	len = strlen(argv[4]);
	if (len + 1 > sizeof(line))
		return failx("line too long");
	memcpy(line, argv[4], len);
	line[len++] = '\n';
	if (write(fd, line, len) != (ssize_t)len)
		return fail("write to peer");

	/* Read the peer's line up to its newline. */
	len = 0;
	for (;;) {
		ssize_t n = read(fd, line + len, sizeof(line) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail("read from peer");
		if (n == 0)
			return failx("peer closed before sending a line");
		len += (size_t)n;
		if (memchr(line, '\n', len) || len == sizeof(line) - 1)
			break;
	}
	line[len] = '\0';
	line[strcspn(line, "\n")] = '\0';
	printf("got: %s\n", line);
	close(fd);
	return 0;
}
