/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spbroker_c.c - libspbroker in plain C: the wire format, connect, send and
 * receive, with the same behaviour as the Go implementation.
 *
 * This file is the whole library in the runtime-free build, and the library
 * of every child forked from a host that links the Go archive (daemonized
 * Open vSwitch and QEMU spend their lives here).  It therefore mirrors
 * libspbroker/proto.go, rawfd_linux.go and client.go function by function:
 * the same checks in the same order, the same errno for each failure
 * (capi/errno.go) and the same message text, so that a host cannot tell
 * which implementation served it.
 *
 * Rules it keeps: no global mutable state and no static buffers (thread-
 * and fork-safe; nothing is held across calls), no output on stdout or
 * stderr, every descriptor it creates is close-on-exec, descriptors passed
 * in are never closed, sends use MSG_NOSIGNAL, and errno is set last, after
 * everything that could clobber it.
 */
#define _GNU_SOURCE /* vasprintf, SOCK_CLOEXEC, MSG_CMSG_CLOEXEC */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <socketpair-broker/proto.h>

#include "spbroker_c.h"

/* Payload sizes, per request type, as the size field states them. */
#define SPBROKER_GET_PAIR_SIZE 1028u
#define SPBROKER_SET_PAIR_SIZE 8u

/*
 * A message is complete at the protocol document's 1040 bytes; the
 * original implementation puts 4 more bytes of padding on the wire, 1044 in
 * all.  The wire size is fixed here rather than taken from
 * SP_BROKER_MESSAGE_SIZE: that is 1044 only where the payload union is
 * 8-byte aligned (it is 1040 on i386), and the Go path sends 1044 bytes on
 * every ABI.  The first 1040 bytes are laid out alike on every ABI (the
 * structures are packed), so they are copied to and from struct
 * sp_broker_msg.
 */
#define SPBROKER_DOC_SIZE 1040u
#define SPBROKER_WIRE_SIZE 1044u

/*
 * How long to wait for the rest of a message once it has started: the
 * broker writes a message with one sendmsg, so a peer that stops half-way
 * is broken, and an event-loop host must not hang on it.  The text is how
 * Go prints the same duration (restTimeout).
 */
#define SPBROKER_REST_TIMEOUT_NS INT64_C(1000000000)
#define SPBROKER_STALLED_MSG "spbroker: message incomplete after 1s"

/*
 * The kernel's limit on descriptors in one message (SCM_MAX_FD): the
 * control buffer holds that many, so whatever a broker sends is received,
 * counted and closed instead of being dropped by truncation.
 */
#define SPBROKER_SCM_MAX_FD 253

_Static_assert(offsetof(struct sp_broker_msg, payload) == 12, "header size");
_Static_assert(offsetof(struct sp_broker_msg, payload.get_pair.key) == 16,
               "GET_PAIR key offset");
_Static_assert(SP_BROKER_MESSAGE_SIZE >= SPBROKER_DOC_SIZE,
               "the structure holds the documented layout");

static const char *spbroker_strerror(int errnum, char *buf, size_t cap);

/**
 * spbroker_fail() - report a failure
 * @err:    where to store the message, or NULL
 * @errnum: errno value for the caller
 * @fmt:    printf format of the message
 *
 * The message is formatted first and errno set last, so that nothing
 * vasprintf() or malloc() do can leave a different errno behind.  An
 * @errnum that is not positive would leave errno meaningless, so it becomes
 * EIO, as the Go side's fallback does.
 *
 * Return: -1, so that callers can write 'return spbroker_fail(...)'.
 */
int
spbroker_fail(char **err, int errnum, const char *fmt, ...)
{
    if (err) {
        char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL; /* its contents are undefined on failure */
        va_end(ap);
        *err = msg;
    }
    errno = errnum > 0 ? errnum : EIO;
    return -1;
}

/**
 * spbroker_fail_sys() - report a failed system call as Go's net.OpError does
 * @err:    where to store the message, or NULL
 * @errnum: errno the call failed with
 * @op:     the library operation: "connect", "send" or "receive"
 * @addr:   the broker's address, or NULL when unknown (a caller's descriptor)
 * @call:   the system call that failed
 *
 * Produces "OP unix[ ADDR]: CALL: TEXT", the text of an *os.SyscallError
 * inside a *net.OpError, which is what the Go path reports.
 *
 * Return: -1.
 */
static int
spbroker_fail_sys(char **err, int errnum, const char *op, const char *addr,
                  const char *call)
{
    char ebuf[32];

    return spbroker_fail(err, errnum, "%s unix%s%s: %s: %s", op,
                         addr ? " " : "", addr ? addr : "", call,
                         spbroker_strerror(errnum, ebuf, sizeof ebuf));
}

/**
 * spbroker_close() - close a descriptor of ours without disturbing errno
 * @fd: descriptor to close, or a negative value for none
 *
 * Used on failure paths, where errno already describes the real problem.
 * close() is not retried on EINTR: on Linux the descriptor is gone anyway.
 */
static void
spbroker_close(int fd)
{
    int saved = errno;

    if (fd >= 0)
        close(fd);
    errno = saved;
}

/* Nanoseconds on CLOCK_MONOTONIC, for deadlines no clock change can move. */
static int64_t
spbroker_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * INT64_C(1000000000) + (int64_t) ts.tv_nsec;
}

/**
 * spbroker_wait() - wait for the rest of a started message
 * @fd:       the broker connection
 * @events:   POLLIN or POLLOUT
 * @deadline: CLOCK_MONOTONIC deadline in nanoseconds; 0 means not set yet,
 *            and the first call sets it to now + 1 s, so all waits for one
 *            message share one second, as in Go's waitFD()
 *
 * Readiness includes an error or hang-up condition: the next recvmsg or
 * sendmsg reports it.
 *
 * Return: 0 when @fd is ready, -1 when the deadline passed, or a positive
 * errno when poll() failed.
 */
static int
spbroker_wait(int fd, short events, int64_t *deadline)
{
    struct pollfd pfd = { .fd = fd, .events = events };

    if (*deadline == 0)
        *deadline = spbroker_now_ns() + SPBROKER_REST_TIMEOUT_NS;

    for (;;) {
        int64_t left = *deadline - spbroker_now_ns();
        int r;

        if (left <= 0)
            return -1;
        /* Round up, so that a wake-up never comes before the deadline. */
        r = poll(&pfd, 1, (int) ((left + 999999) / 1000000));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return errno;
    }
}

/**
 * spbroker_check_key() - check a caller's key before anything is sent
 * @key: NUL-terminated key
 * @len: where to store its length
 * @err: where to store a message on failure, or NULL
 *
 * Reads at most one byte past the longest valid key, so an unterminated
 * buffer cannot run the check off its end.  The texts are those of Go's
 * goKey() and CheckKey().
 *
 * Return: 0, or -1 with errno EINVAL.
 */
static int
spbroker_check_key(const char *key, size_t *len, char **err)
{
    size_t n;

    if (!key)
        return spbroker_fail(err, EINVAL,
                             "spbroker: invalid argument: NULL key");
    n = strnlen(key, SP_BROKER_MAX_KEY_LENGTH + 1);
    if (n > SP_BROKER_MAX_KEY_LENGTH)
        return spbroker_fail(err, EINVAL,
                             "spbroker: key longer than %d bytes: "
                             "key must be 1 to 1024 bytes",
                             SP_BROKER_MAX_KEY_LENGTH);
    if (n == 0)
        return spbroker_fail(err, EINVAL,
                             "spbroker: key of 0 bytes: "
                             "key must be 1 to 1024 bytes");
    *len = n;
    return 0;
}

/**
 * spbroker_check_mode() - check a pairing mode before anything is sent
 * @mode: the mode
 * @err:  where to store a message on failure, or NULL
 *
 * The public functions only pass valid modes; this guards the internal API.
 *
 * Return: 0, or -1 with errno EINVAL.
 */
static int
spbroker_check_mode(enum sp_broker_get_pair_mode mode, char **err)
{
    if ((unsigned int) mode >= SP_BROKER_PAIR_MODE_MAX)
        return spbroker_fail(err, EINVAL,
                             "send unix: spbroker: Mode(%u): "
                             "invalid pairing mode", (unsigned int) mode);
    return 0;
}

/* The rules of the protocol, in the order it checks them (proto.go). */
enum spbroker_violation {
    SPBROKER_VALID,
    SPBROKER_BAD_VERSION,
    SPBROKER_BAD_FLAGS,
    SPBROKER_BAD_REQUEST,
    SPBROKER_BAD_SIZE,
    SPBROKER_BAD_FD_COUNT,
    SPBROKER_UNEXPECTED,
    SPBROKER_BAD_MODE,
    SPBROKER_BAD_KEY_LEN,
};

/**
 * spbroker_check() - apply the protocol's validation rules to a message
 * @msg:        the message
 * @nfds:       how many descriptors came with it
 * @expected:   acceptable request types, or NULL for any
 * @n_expected: number of entries in @expected (not negative)
 * @why:        buffer for the text of a violation
 * @cap:        size of @why
 *
 * The texts are those of Go's ProtocolError: kind, field and value.  The
 * descriptor count is printed as Go's uint64(nfds) prints it, so that even
 * a negative n_fds from a caller reads the same on both paths.
 *
 * Return: SPBROKER_VALID, or the first rule @msg breaks, described in @why.
 */
static enum spbroker_violation
spbroker_check(const struct sp_broker_msg *msg, int64_t nfds,
               const enum sp_broker_request *expected, int n_expected,
               char *why, size_t cap)
{
    uint32_t request = msg->request;
    uint32_t flags = msg->flags;
    uint32_t size = msg->size;
    uint32_t want_size;
    int64_t want_fds;

    if ((flags & SP_BROKER_PROTOCOL_VERSION_MASK) !=
        SP_BROKER_PROTOCOL_VERSION) {
        snprintf(why, cap,
                 "spbroker: unsupported protocol version: version %" PRIu32,
                 flags & (uint32_t) SP_BROKER_PROTOCOL_VERSION_MASK);
        return SPBROKER_BAD_VERSION;
    }
    if (flags & ~(uint32_t) SP_BROKER_PROTOCOL_VERSION_MASK) {
        snprintf(why, cap,
                 "spbroker: reserved flag bits set: flags 0x%" PRIx32, flags);
        return SPBROKER_BAD_FLAGS;
    }
    if (request != SP_BROKER_GET_PAIR && request != SP_BROKER_SET_PAIR) {
        snprintf(why, cap,
                 "spbroker: invalid request type: request 0x%" PRIx32,
                 request);
        return SPBROKER_BAD_REQUEST;
    }

    want_size = request == SP_BROKER_GET_PAIR ? SPBROKER_GET_PAIR_SIZE
                                              : SPBROKER_SET_PAIR_SIZE;
    if (size != want_size) {
        snprintf(why, cap, "spbroker: wrong payload size: size %" PRIu32,
                 size);
        return SPBROKER_BAD_SIZE;
    }

    want_fds = request == SP_BROKER_SET_PAIR ? 1 : 0;
    if (nfds != want_fds) {
        snprintf(why, cap,
                 "spbroker: wrong number of descriptors: descriptors %" PRIu64,
                 (uint64_t) nfds);
        return SPBROKER_BAD_FD_COUNT;
    }

    if (expected) {
        bool found = false;

        for (int i = 0; i < n_expected && !found; i++)
            found = (uint32_t) expected[i] == request;
        if (!found) {
            snprintf(why, cap,
                     "spbroker: unexpected request type: request %s",
                     request == SP_BROKER_GET_PAIR ? "GET_PAIR" : "SET_PAIR");
            return SPBROKER_UNEXPECTED;
        }
    }

    if (request == SP_BROKER_GET_PAIR) {
        uint16_t mode = msg->payload.get_pair.mode;
        uint16_t key_len = msg->payload.get_pair.key_len;

        if (mode >= SP_BROKER_PAIR_MODE_MAX) {
            snprintf(why, cap, "spbroker: invalid pairing mode: mode %u",
                     (unsigned int) mode);
            return SPBROKER_BAD_MODE;
        }
        if (key_len < 1 || key_len > SP_BROKER_MAX_KEY_LENGTH) {
            snprintf(why, cap,
                     "spbroker: key length out of range 1..1024: "
                     "key_len %u", (unsigned int) key_len);
            return SPBROKER_BAD_KEY_LEN;
        }
    }
    return SPBROKER_VALID;
}

/**
 * spbroker_c_message_validate() - check a message against the protocol
 * @msg:        the message; msg->n_fds is the number of descriptors it carried
 * @expected:   if not NULL, the request types acceptable here
 * @n_expected: number of entries in @expected; an empty list accepts nothing
 * @err:        where to store a message on failure, or NULL
 *
 * Return: 0 if valid; -1 with errno EPROTO if invalid, or EINVAL if @msg is
 * NULL or @expected is given with a negative @n_expected.
 */
int
spbroker_c_message_validate(const struct sp_broker_msg *msg,
                            const enum sp_broker_request *expected,
                            int n_expected, char **err)
{
    char why[160];

    if (!msg || (expected && n_expected < 0))
        return spbroker_fail(err, EINVAL,
                             "spbroker: validate: invalid argument: "
                             "NULL message or negative count");
    if (spbroker_check(msg, msg->n_fds, expected, n_expected, why,
                       sizeof why) != SPBROKER_VALID)
        return spbroker_fail(err, EPROTO, "%s", why);
    return 0;
}

/**
 * spbroker_c_connect() - connect to the broker socket
 * @sock_path: filesystem path, or "@name" for Linux's abstract namespace
 * @nonblock:  make the socket O_NONBLOCK and do not wait for the connection
 * @err:       where to store a message on failure, or NULL
 *
 * Follows Go's Connect(): the socket is created first, then the address is
 * checked, with the limits of x/sys/unix (a name must be shorter than
 * sun_path, abstract names too).  A Unix socket connects at once or not at
 * all, so EINPROGRESS means connected, but EAGAIN (the broker's backlog is
 * full) is a failure: that socket would never complete its connection.
 * EINTR did not connect and is retried.
 *
 * Return: the connected socket, close-on-exec and owned by the caller, or
 * -1 with errno: EINVAL (NULL or too long a path), or the errno of socket(2)
 * or connect(2).
 */
int
spbroker_c_connect(const char *sock_path, bool nonblock, char **err)
{
    struct sockaddr_un sa;
    socklen_t salen;
    size_t n;
    int fd, r, e;

    if (!sock_path)
        return spbroker_fail(err, EINVAL,
                             "spbroker: connect: invalid argument: "
                             "NULL socket path");

    fd = socket(AF_UNIX,
                SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0),
                0);
    if (fd < 0)
        return spbroker_fail_sys(err, errno, "connect", sock_path, "socket");

    n = strlen(sock_path);
    if (n >= sizeof sa.sun_path) {
        close(fd);
        return spbroker_fail_sys(err, EINVAL, "connect", sock_path,
                                 "connect");
    }

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sock_path, n);
    /* The family, the name and its NUL; an empty name is left to connect(2)
     * to refuse, as Go does. */
    salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) +
                         (n > 0 ? n + 1 : 0));
    if (sa.sun_path[0] == '@') {
        /* Abstract: a leading NUL, and no trailing NUL in the length. */
        sa.sun_path[0] = '\0';
        salen--;
    }

    do {
        r = connect(fd, (const struct sockaddr *) &sa, salen);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && !(nonblock && errno == EINPROGRESS)) {
        e = errno;
        close(fd);
        return spbroker_fail_sys(err, e, "connect", sock_path, "connect");
    }
    return fd;
}

/**
 * spbroker_c_send_get_pair() - send one GET_PAIR
 * @broker_fd: a connected broker socket; not closed
 * @key:       NUL-terminated key of 1 to 1024 bytes
 * @mode:      pairing mode
 * @err:       where to store a message on failure, or NULL
 *
 * Sends 1044 bytes: the header, mode, key length and
 * key, with zeros after the key and in the 4 padding bytes, as the original
 * does.  The key and mode are checked before anything is sent.  On a
 * nonblocking socket with no room, nothing is sent and the call fails with
 * EAGAIN; a message it has started it finishes, polling up to a second,
 * because the broker cannot use half a request (if that fails, the caller
 * must close @broker_fd).
 *
 * Return: 0, or -1 with errno EINVAL (bad key or mode; nothing sent),
 * EAGAIN (no room; nothing sent), ETIMEDOUT (the rest could not be sent in
 * time), or the errno of sendmsg(2) or poll(2).
 */
int
spbroker_c_send_get_pair(int broker_fd, const char *key,
                         enum sp_broker_get_pair_mode mode, char **err)
{
    unsigned char wire[SPBROKER_WIRE_SIZE];
    struct sp_broker_msg msg;
    int64_t deadline = 0;
    size_t key_len = 0, sent = 0;

    if (spbroker_check_key(key, &key_len, err) < 0 ||
        spbroker_check_mode(mode, err) < 0)
        return -1;

    memset(&msg, 0, sizeof msg);
    msg.request = SP_BROKER_GET_PAIR;
    msg.flags = SP_BROKER_PROTOCOL_VERSION;
    msg.size = SPBROKER_GET_PAIR_SIZE;
    msg.payload.get_pair.mode = (uint16_t) mode;
    msg.payload.get_pair.key_len = (uint16_t) key_len;
    memcpy(msg.payload.get_pair.key, key, key_len);
    memset(wire, 0, sizeof wire);
    memcpy(wire, &msg, SPBROKER_DOC_SIZE);

    while (sent < sizeof wire) {
        struct iovec iov = {
            .iov_base = wire + sent,
            .iov_len = sizeof wire - sent,
        };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t r;
        int e, w;

        r = sendmsg(broker_fd, &mh, MSG_NOSIGNAL);
        if (r >= 0) {
            sent += (size_t) r; /* even a blocking socket may send short */
            continue;
        }
        e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN || sent == 0)
            return spbroker_fail_sys(err, e, "send", NULL, "sendmsg");

        w = spbroker_wait(broker_fd, POLLOUT, &deadline);
        if (w < 0)
            return spbroker_fail(err, ETIMEDOUT, "send unix: %s",
                                 SPBROKER_STALLED_MSG);
        if (w > 0)
            return spbroker_fail_sys(err, w, "send", NULL, "poll");
    }
    return 0;
}

/*
 * Room for the largest SCM_RIGHTS message, aligned for struct cmsghdr.  The
 * size is computed as Go's oobSize is, so that even the count reported for
 * truncated control data is the same on both paths (on i386 it is 4 bytes
 * more than CMSG_SPACE() asks for).
 */
#define SPBROKER_CONTROL_SIZE                                             \
    (sizeof(struct cmsghdr) +                                             \
     ((SPBROKER_SCM_MAX_FD * sizeof(int) + 7) & ~(size_t) 7))

_Static_assert(SPBROKER_CONTROL_SIZE >=
                   CMSG_SPACE(SPBROKER_SCM_MAX_FD * sizeof(int)),
               "control buffer holds SCM_MAX_FD descriptors");

union spbroker_control {
    struct cmsghdr align;
    unsigned char buf[SPBROKER_CONTROL_SIZE];
};

/*
 * The descriptors a message brought, over all the reads that made it up.
 * Only the first is kept: a valid SET_PAIR has exactly one, so any other is
 * closed at once, and no count of them can make memory grow.
 */
struct spbroker_received {
    int fd;         /* the first descriptor, or -1 */
    uint64_t n_fds; /* how many arrived in all */
    bool truncated; /* MSG_CTRUNC: some were dropped on the way */
};

/**
 * spbroker_take_fds() - take the descriptors out of one recvmsg's control data
 * @rx: what the message brought so far
 * @mh: the msghdr recvmsg() filled in
 *
 * Parses every SCM_RIGHTS message, and stops at a header that does not fit
 * the data received (the kernel truncates when the buffer is too small).
 */
static void
spbroker_take_fds(struct spbroker_received *rx, struct msghdr *mh)
{
    const unsigned char *end;
    struct cmsghdr *c;

    if (mh->msg_flags & MSG_CTRUNC)
        rx->truncated = true;
    if (!mh->msg_control)
        return;

    end = (const unsigned char *) mh->msg_control + mh->msg_controllen;
    for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        const unsigned char *data = CMSG_DATA(c);
        size_t n;

        if (c->cmsg_len < CMSG_LEN(0) ||
            c->cmsg_len > (size_t) (end - (const unsigned char *) c))
            break;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;

        n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;

            memcpy(&fd, data + i * sizeof(int), sizeof fd);
            if (rx->fd < 0)
                rx->fd = fd;
            else
                close(fd);
            rx->n_fds++;
        }
    }
}

/**
 * spbroker_recv() - one recvmsg(2) into @p, collecting descriptors
 * @fd:    the broker connection
 * @p:     where the bytes go
 * @len:   at most this many (never more than the message has left)
 * @ctl:   control buffer, or NULL for none (a peek installs no descriptors)
 * @flags: recvmsg flags
 * @rx:    where descriptors are collected, or NULL with @ctl NULL
 *
 * Retries EINTR.  Unlike Go's unix.Recvmsg it asks for no sender address,
 * which a stream socket does not have.
 *
 * Return: bytes received (0 at end of file), or -1 with errno.
 */
static ssize_t
spbroker_recv(int fd, void *p, size_t len, union spbroker_control *ctl,
              int flags, struct spbroker_received *rx)
{
    for (;;) {
        struct iovec iov = { .iov_base = p, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t r;

        if (ctl) {
            mh.msg_control = ctl->buf;
            mh.msg_controllen = sizeof ctl->buf;
        }
        r = recvmsg(fd, &mh, flags);
        if (r >= 0) {
            if (rx)
                spbroker_take_fds(rx, &mh);
            return r;
        }
        if (errno != EINTR)
            return -1;
    }
}

/**
 * spbroker_c_receive_set_pair() - take the broker's answer to a GET_PAIR
 * @broker_fd: the socket the GET_PAIR was sent on; not closed
 * @err:       where to store a message on failure, or NULL
 *
 * Mirrors Go's ReceiveSetPair() and readSetPair().  On a nonblocking socket
 * it first peeks, without a control buffer, so that a call made before the
 * answer has arrived fails with EAGAIN and no side effect at all.  Then it
 * reads the message whole however its bytes arrive: complete at 1040
 * bytes, plus up to 4 padding bytes if they are already there, and never a
 * byte past those 1044.  Once a message has started, the rest
 * gets one second in all, on blocking sockets too.  Every descriptor that
 * arrives is collected; on failure all are closed.
 *
 * Return: the descriptor the SET_PAIR carried, close-on-exec and owned by
 * the caller, or -1 with errno EAGAIN (nonblocking, nothing yet), EPROTO
 * (an invalid message), ECONNRESET (the broker closed the connection before
 * a whole message), ETIMEDOUT (a message began but did not complete), or the
 * errno of fcntl(2), recvmsg(2) or poll(2).
 */
int
spbroker_c_receive_set_pair(int broker_fd, char **err)
{
    static const enum sp_broker_request set_pair = SP_BROKER_SET_PAIR;
    struct spbroker_received rx = { .fd = -1 };
    union spbroker_control ctl;
    unsigned char wire[SPBROKER_WIRE_SIZE];
    struct sp_broker_msg msg;
    enum spbroker_violation v;
    int64_t deadline = 0, nfds;
    size_t n = 0;
    bool nonblock;
    char why[160];
    ssize_t r;
    int fl, e;

    fl = fcntl(broker_fd, F_GETFL);
    if (fl < 0)
        return spbroker_fail_sys(err, errno, "receive", NULL, "fcntl");
    nonblock = (fl & O_NONBLOCK) != 0;

    if (nonblock) {
        unsigned char b;

        r = spbroker_recv(broker_fd, &b, 1, NULL, MSG_PEEK | MSG_DONTWAIT,
                          NULL);
        if (r < 0)
            return spbroker_fail_sys(err, errno, "receive", NULL, "recvmsg");
        if (r == 0)
            return spbroker_fail(err, ECONNRESET,
                                 "receive unix: spbroker: broker closed the "
                                 "connection without a reply");
    }

    while (n < SPBROKER_DOC_SIZE) {
        /* Only the first read may block, and only on a blocking socket. */
        int flags = MSG_CMSG_CLOEXEC | (nonblock || n > 0 ? MSG_DONTWAIT : 0);
        int w;

        r = spbroker_recv(broker_fd, wire + n, sizeof wire - n, &ctl, flags,
                          &rx);
        if (r > 0) {
            n += (size_t) r;
            continue;
        }
        if (r == 0) {
            spbroker_close(rx.fd);
            if (n == 0)
                return spbroker_fail(err, ECONNRESET,
                                     "receive unix: spbroker: broker closed "
                                     "the connection without a reply");
            return spbroker_fail(err, ECONNRESET,
                                 "receive unix: spbroker: broker closed the "
                                 "connection after %zu of %u bytes",
                                 n, SPBROKER_DOC_SIZE);
        }
        e = errno;
        if (e != EAGAIN || n == 0) {
            spbroker_close(rx.fd);
            return spbroker_fail_sys(err, e, "receive", NULL, "recvmsg");
        }
        w = spbroker_wait(broker_fd, POLLIN, &deadline);
        if (w != 0) {
            spbroker_close(rx.fd);
            if (w < 0)
                return spbroker_fail(err, ETIMEDOUT, "receive unix: %s",
                                     SPBROKER_STALLED_MSG);
            return spbroker_fail_sys(err, w, "receive", NULL, "poll");
        }
    }

    /*
     * The padding belongs to this message if it is there already; failing
     * to read it (EAGAIN, end of file, a reset) does not spoil the message,
     * and its bytes are not looked at.  Descriptors that came with it count.
     */
    if (n < sizeof wire)
        (void) spbroker_recv(broker_fd, wire + n, sizeof wire - n, &ctl,
                             MSG_CMSG_CLOEXEC | MSG_DONTWAIT, &rx);
    memset(&msg, 0, sizeof msg);
    memcpy(&msg, wire, SPBROKER_DOC_SIZE);

    /*
     * Truncated control data means descriptors were dropped (no room, or
     * refused by a security module): the true count is unknown, but it is
     * not the one received, so it cannot be the valid 1.
     */
    nfds = (int64_t) rx.n_fds;
    if (rx.truncated)
        nfds = nfds + 1 > 2 ? nfds + 1 : 2;

    v = spbroker_check(&msg, nfds, &set_pair, 1, why, sizeof why);
    if (v != SPBROKER_VALID) {
        spbroker_close(rx.fd);
        if (rx.truncated && v == SPBROKER_BAD_FD_COUNT)
            return spbroker_fail(err, EPROTO,
                                 "receive unix: spbroker: wrong number of "
                                 "descriptors: descriptors %" PRIu64
                                 " (control data truncated)", rx.n_fds);
        return spbroker_fail(err, EPROTO, "receive unix: %s", why);
    }
    if (msg.payload.u64 != 0) {
        uint64_t u64 = msg.payload.u64;

        spbroker_close(rx.fd);
        return spbroker_fail(err, EPROTO,
                             "receive unix: spbroker: non-zero SET_PAIR "
                             "payload: u64 %" PRIu64, u64);
    }
    return rx.fd;
}

/**
 * spbroker_c_get_pair() - connect, ask for a pair, wait for it, disconnect
 * @sock_path: broker socket, as for spbroker_c_connect()
 * @key:       NUL-terminated key of 1 to 1024 bytes
 * @mode:      pairing mode
 * @err:       where to store a message on failure, or NULL
 *
 * The arguments are checked before connecting (the path first, as Go's
 * export does), so a bad one costs nothing.  The broker connection is
 * always closed, keeping the errno of what failed.
 *
 * Return: the peer socket, close-on-exec and owned by the caller, or -1
 * with the errno of whichever step failed.
 */
int
spbroker_c_get_pair(const char *sock_path, const char *key,
                    enum sp_broker_get_pair_mode mode, char **err)
{
    size_t key_len = 0;
    int fd, peer;

    if (!sock_path)
        return spbroker_fail(err, EINVAL,
                             "spbroker: get pair: invalid argument: "
                             "NULL socket path");
    if (spbroker_check_key(key, &key_len, err) < 0 ||
        spbroker_check_mode(mode, err) < 0)
        return -1;

    fd = spbroker_c_connect(sock_path, false, err);
    if (fd < 0)
        return -1;
    if (spbroker_c_send_get_pair(fd, key, mode, err) < 0) {
        spbroker_close(fd);
        return -1;
    }
    peer = spbroker_c_receive_set_pair(fd, err);
    spbroker_close(fd);
    return peer;
}

/*
 * Texts for the errno values a broker connection can meet, worded as the Go
 * path prints them, so that both paths read alike.  strerror() is not used:
 * the host's locale translates it.  A rarer value prints as "errno N";
 * the errno itself is what callers act on.
 */
static const struct {
    int num;
    const char *text;
} spbroker_errno_texts[] = {
    { EPERM,        "operation not permitted" },
    { ENOENT,       "no such file or directory" },
    { EINTR,        "interrupted system call" },
    { EIO,          "input/output error" },
    { EBADF,        "bad file descriptor" },
    { EAGAIN,       "resource temporarily unavailable" },
    { ENOMEM,       "cannot allocate memory" },
    { EACCES,       "permission denied" },
    { EFAULT,       "bad address" },
    { ENOTDIR,      "not a directory" },
    { EINVAL,       "invalid argument" },
    { ENFILE,       "too many open files in system" },
    { EMFILE,       "too many open files" },
    { EPIPE,        "broken pipe" },
    { ENAMETOOLONG, "file name too long" },
    { ELOOP,        "too many levels of symbolic links" },
    { EPROTO,       "protocol error" },
    { ENOTSOCK,     "socket operation on non-socket" },
    { EPROTOTYPE,   "protocol wrong type for socket" },
    { EAFNOSUPPORT, "address family not supported by protocol" },
    { ENOBUFS,      "no buffer space available" },
    { EISCONN,      "transport endpoint is already connected" },
    { ENOTCONN,     "transport endpoint is not connected" },
    { ECONNRESET,   "connection reset by peer" },
    { ETIMEDOUT,    "connection timed out" },
    { ECONNREFUSED, "connection refused" },
    { EINPROGRESS,  "operation now in progress" },
};

/**
 * spbroker_strerror() - the text Go prints for an errno
 * @errnum: the errno
 * @buf:    room for the text of an errno Go has no text for
 * @cap:    size of @buf
 *
 * Return: a constant string, or @buf holding "errno N".
 */
static const char *
spbroker_strerror(int errnum, char *buf, size_t cap)
{
    for (size_t i = 0;
         i < sizeof spbroker_errno_texts / sizeof spbroker_errno_texts[0];
         i++) {
        if (spbroker_errno_texts[i].num == errnum)
            return spbroker_errno_texts[i].text;
    }
    snprintf(buf, cap, "errno %d", errnum);
    return buf;
}
