//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conformance.c - every function of helper.h through every documented
 * success and failure.
 *
 * Usage: conformance --broker=PATH --tmp=DIR [--abstract=@NAME]
 *                    [--fork=KIND --when=before|after] [--report-fd=N]
 *
 *   --broker    a running one-socket broker that no other program uses
 *   --abstract  the same kind of broker on an abstract socket, if any
 *   --tmp       an empty directory (absolute path) for the fake brokers
 *
 * Two kinds of peer: the real broker, for pairings end to end, and fake
 * brokers that this program runs itself in threads, with raw system calls,
 * to see exactly what the library sends and to feed it malformed replies.
 *
 * For every failure the checks are: -1, errno exactly as documented, and a
 * non-empty malloc'd message in *err (freed here, so valgrind and ASan see
 * a wrong allocation).  For every success: *err untouched.  Descriptors:
 * those the library returns are close-on-exec, those it drops on an error
 * are really closed (the write end of a pipe travels as the descriptor, and
 * the read end must then see end of file), and the program ends with the
 * descriptors it started with.
 *
 * Output is TAP: "ok N - ..." / "not ok N - ..."; exit status 0 only if
 * every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>
#include <socketpair-broker/proto.h>

#include "testutil.h"

/* The ABI of proto.h, as c-api.md fixes it. */
_Static_assert(sizeof(struct sp_broker_get_pair_request) == 1028,
               "sizeof(struct sp_broker_get_pair_request)");
_Static_assert(offsetof(struct sp_broker_msg, payload) == 12,
               "offsetof(struct sp_broker_msg, payload)");
_Static_assert(SP_BROKER_MESSAGE_SIZE == 1044, "SP_BROKER_MESSAGE_SIZE");
_Static_assert(sizeof(struct sp_broker_msg) == 1304, "sizeof(struct sp_broker_msg)");
_Static_assert(offsetof(struct sp_broker_msg, request) == 0, "request offset");
_Static_assert(offsetof(struct sp_broker_msg, flags) == 4, "flags offset");
_Static_assert(offsetof(struct sp_broker_msg, size) == 8, "size offset");
_Static_assert(offsetof(struct sp_broker_msg, payload.get_pair.mode) == 12, "mode offset");
_Static_assert(offsetof(struct sp_broker_msg, payload.get_pair.key_len) == 14, "key_len offset");
_Static_assert(offsetof(struct sp_broker_msg, payload.get_pair.key) == 16, "key offset");
_Static_assert(offsetof(struct sp_broker_msg, fds) == 1044, "fds offset");
_Static_assert(offsetof(struct sp_broker_msg, n_fds) == 1300, "n_fds offset");
_Static_assert(sizeof(((struct sp_broker_msg *) 0)->payload) == 1032, "payload union size");
_Static_assert(SP_BROKER_MAX_KEY_LENGTH == 1024, "SP_BROKER_MAX_KEY_LENGTH");
_Static_assert(SP_BROKER_PROTOCOL_MAX_FDS == 64, "SP_BROKER_PROTOCOL_MAX_FDS");
_Static_assert(SP_BROKER_PROTOCOL_VERSION == 1, "SP_BROKER_PROTOCOL_VERSION");
_Static_assert(SP_BROKER_PROTOCOL_VERSION_MASK == 0xf, "SP_BROKER_PROTOCOL_VERSION_MASK");
_Static_assert(SP_BROKER_NONE == 0 && SP_BROKER_GET_PAIR == 1 &&
               SP_BROKER_SET_PAIR == 2 && SP_BROKER_MAX == 3, "enum sp_broker_request");
_Static_assert(SP_BROKER_PAIR_MODE_NONE == 0 && SP_BROKER_PAIR_MODE_CLIENT == 1 &&
               SP_BROKER_PAIR_MODE_SERVER == 2 && SP_BROKER_PAIR_MODE_MAX == 3,
               "enum sp_broker_get_pair_mode");

#define WIRE SP_BROKER_MESSAGE_SIZE /* 1044 */
#define DOC_WIRE 1040               /* the protocol document's layout */
#define WAIT_MS 10000               /* how long a fake broker waits for us */

static const char *broker_path;
static const char *abstract_path;
static const char *tmp_dir;

/*
 * *err is preset to this before every call: a success must leave it as it
 * is, a failure must replace it.
 */
static char sentinel_byte;
#define SENTINEL (&sentinel_byte)

/* The outcome of one library call. */
struct res {
    int ret;
    int errnum;
    char *err;
};

/* CALL - run a library call with errno cleared and err preset; ERRP is its &err. */
#define CALL(r, ...)                                                    \
    do {                                                                \
        char *err_ = SENTINEL;                                          \
        errno = 0;                                                      \
        (r).ret = (__VA_ARGS__);                                        \
        (r).errnum = errno;                                             \
        (r).err = err_;                                                 \
    } while (0)
#define ERRP (&err_)

/* What a failure must look like. */
struct want {
    int errnum;              /* the documented errno */
    int alt;                 /* a second acceptable one, or 0 */
    const char *mention;     /* "a|b": the message names one of these, or NULL */
    const char *not_mention; /* "a|b": and none of these, or NULL */
    bool fd;                 /* the call returns a descriptor: close a wrong one */
};

static const char *
errname(int e)
{
    const char *n = strerrorname_np(e);

    return n ? n : "0";
}

/* mentions - whether @text contains one of the '|'-separated @words, ignoring case. */
static bool
mentions(const char *text, const char *words)
{
    char buf[256];
    char *save = NULL, *w;

    snprintf(buf, sizeof buf, "%s", words);
    for (w = strtok_r(buf, "|", &save); w; w = strtok_r(NULL, "|", &save)) {
        if (strcasestr(text, w)) {
            return true;
        }
    }
    return false;
}

/* fails - check that call @what failed as @w says; frees the message. */
static bool
fails(const char *what, struct res r, struct want w)
{
    bool ok = true;
    bool have_msg = r.err != SENTINEL && r.err != NULL;

    ok &= tu_check(r.ret == -1, "%s: returns -1 (got %d)", what, r.ret);
    if (r.ret >= 0 && w.fd) {
        close(r.ret);
    }
    ok &= tu_check(r.errnum == w.errnum || (w.alt && r.errnum == w.alt),
                   "%s: errno %s%s%s (got %s)", what, errname(w.errnum),
                   w.alt ? " or " : "", w.alt ? errname(w.alt) : "",
                   errname(r.errnum));
    ok &= tu_check(have_msg && r.err[0] != '\0', "%s: *err set to a message (\"%s\")",
                   what, have_msg ? r.err : r.err ? "(untouched)" : "(NULL)");
    if (have_msg && w.mention) {
        ok &= tu_check(mentions(r.err, w.mention), "%s: message names %s", what, w.mention);
    }
    if (have_msg && w.not_mention) {
        ok &= tu_check(!mentions(r.err, w.not_mention), "%s: message does not name %s",
                       what, w.not_mention);
    }
    if (have_msg) {
        free(r.err);
    }
    return ok;
}

/* succeeds - check that call @what succeeded and left *err alone. */
static bool
succeeds(const char *what, struct res r)
{
    bool ok = tu_check(r.ret >= 0, "%s: succeeds (got %d, errno %s, err \"%s\")", what,
                       r.ret, errname(r.errnum),
                       r.err != SENTINEL && r.err ? r.err : "");

    ok &= tu_check(r.err == SENTINEL, "%s: *err untouched", what);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Messages and keys                                                  */

/* set_pair - the wire bytes of a SET_PAIR (or a variation) in @buf. */
static void
set_pair(unsigned char *buf, uint32_t request, uint32_t flags, uint32_t size,
         uint64_t u64)
{
    struct sp_broker_msg m;

    memset(&m, 0, sizeof m);
    m.request = request;
    m.flags = flags;
    m.size = size;
    m.payload.u64 = u64;
    memcpy(buf, &m, WIRE);
}

/* make_key - a NUL-terminated key of @len bytes, none of them zero. */
static char *
make_key(size_t len, unsigned seed)
{
    char *k = malloc(len + 1);
    size_t i;

    if (!k) {
        abort();
    }
    for (i = 0; i < len; i++) {
        k[i] = (char) (1 + (i * 7 + seed) % 255);
    }
    k[len] = '\0';
    return k;
}

/* ------------------------------------------------------------------ */
/* Fake brokers                                                       */

enum fake_mode {
    FAKE_READ_ALL,     /* read everything until end of file; send nothing */
    FAKE_CLOSE,        /* close the connection at once */
    FAKE_REPLY,        /* send @reply (optionally after reading a GET_PAIR) */
};

struct fake {
    /* The script, set before fake_start(). */
    enum fake_mode mode;
    bool read_request;        /* FAKE_REPLY: read one GET_PAIR first */
    unsigned char reply[WIRE];
    size_t reply_len;
    size_t chunk;             /* send in pieces of this size (0: at once) */
    int fds[2];               /* descriptors to send (the fake closes them) */
    int nfds;
    size_t fd_at;             /* offset of the piece that carries them */
    bool close_after;         /* close after the reply, else wait for EOF */
    bool wait_go;             /* FAKE_READ_ALL: read only after fake_go() */

    /* Internal. */
    char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
    int lfd;
    pthread_t th;
    sem_t go;
    sem_t done;               /* the script ran and the fds are closed */

    /* What happened. */
    bool accepted;
    bool failed;              /* a system call of the fake itself failed */
    unsigned char got[4 * WIRE];
    size_t got_len;           /* bytes kept in got */
    size_t got_total;         /* bytes received in all */
    int got_fds;
};

static int fake_seq;

/* wait_in - wait up to @ms milliseconds for @fd to be readable. */
static bool
wait_in(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r;

    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    return r == 1;
}

/*
 * fake_recv - receive into the fake's record, waiting at most @ms.
 * Return: what recvmsg returned, or -1 after waiting in vain.
 */
static ssize_t
fake_recv(struct fake *f, int c, size_t max, int ms)
{
    unsigned char scratch[WIRE];
    union {
        char buf[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov;
    struct msghdr mh;
    struct cmsghdr *cm;
    ssize_t n;
    size_t room = sizeof f->got - f->got_len;

    if (room > max) {
        room = max;
    }
    iov.iov_base = room ? (void *) (f->got + f->got_len) : (void *) scratch;
    iov.iov_len = room ? room : sizeof scratch;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    if (!wait_in(c, ms)) {
        return -1;
    }
    do {
        n = recvmsg(c, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -1;
    }
    for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int k, nf = (int) ((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *fds = (int *) (void *) CMSG_DATA(cm);

            for (k = 0; k < nf; k++) {
                close(fds[k]);
            }
            f->got_fds += nf;
        }
    }
    if (room) {
        f->got_len += (size_t) n;
    }
    f->got_total += (size_t) n;
    return n;
}

/* fake_send - send bytes [off, off+len) of the reply, with the fds if asked. */
static bool
fake_send(struct fake *f, int c, size_t off, size_t len, bool with_fds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 2)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { .iov_base = f->reply + off, .iov_len = len };
    struct msghdr mh;
    ssize_t n;

    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (with_fds && f->nfds > 0) {
        struct cmsghdr *cm;

        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) f->nfds);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) f->nfds);
        memcpy(CMSG_DATA(cm), f->fds, sizeof(int) * (size_t) f->nfds);
    }
    do {
        n = sendmsg(c, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t) len;
}

static void
fake_close_fds(struct fake *f)
{
    int i;

    for (i = 0; i < f->nfds; i++) {
        if (f->fds[i] >= 0) {
            close(f->fds[i]);
            f->fds[i] = -1;
        }
    }
}

static void
pause_us(long us)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = us * 1000 };

    nanosleep(&ts, NULL);
}

static void *
fake_main(void *arg)
{
    struct fake *f = arg;
    int c = -1;

    if (!wait_in(f->lfd, WAIT_MS)) {
        f->failed = true;
        goto out;
    }
    c = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
        f->failed = true;
        goto out;
    }
    f->accepted = true;
    switch (f->mode) {
    case FAKE_CLOSE:
        close(c);
        c = -1;
        break;
    case FAKE_READ_ALL:
        if (f->wait_go) {
            sem_wait(&f->go);
        }
        while (fake_recv(f, c, SIZE_MAX, WAIT_MS) > 0) {
        }
        break;
    case FAKE_REPLY: {
        size_t off = 0, chunk = f->chunk ? f->chunk : f->reply_len, pieces = 0;

        if (f->read_request) {
            /* A request stops at 1044 bytes, or when no more come. */
            while (f->got_len < WIRE) {
                if (fake_recv(f, c, WIRE - f->got_len, f->got_len ? 1000 : WAIT_MS) <= 0) {
                    f->failed = true;
                    goto out;
                }
            }
        }
        while (off < f->reply_len) {
            size_t n = f->reply_len - off < chunk ? f->reply_len - off : chunk;
            bool with_fds = off <= f->fd_at && f->fd_at < off + n;

            if (!fake_send(f, c, off, n, with_fds)) {
                f->failed = true;
                break;
            }
            if (with_fds) {
                fake_close_fds(f);
            }
            off += n;
            /* Pieces must reach the reader as pieces: pause after the
             * first, and briefly now and then; the whole reply still
             * arrives well within the library's one-second limit. */
            if (f->chunk && off < f->reply_len && (pieces++ == 0 || pieces % 64 == 0)) {
                pause_us(pieces == 1 ? 20000 : 200);
            }
        }
        fake_close_fds(f);
        if (f->close_after) {
            close(c);
            c = -1;
            break;
        }
        sem_post(&f->done);
        /* Hold the connection until the client closes it. */
        while (fake_recv(f, c, SIZE_MAX, WAIT_MS) > 0) {
        }
        break;
    }
    }
out:
    fake_close_fds(f);
    if (c >= 0) {
        close(c);
    }
    if (f->mode != FAKE_REPLY || f->close_after || f->failed || !f->accepted) {
        sem_post(&f->done);
    }
    return NULL;
}

/* fake_start - listen on a fresh path and run @f's script in a thread. */
static bool
fake_start(struct fake *f)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    snprintf(f->path, sizeof f->path, "%s/fake-%d.sock", tmp_dir, ++fake_seq);
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    unlink(f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *) &sa, sizeof sa) != 0 ||
        listen(f->lfd, 4) != 0) {
        tu_check(false, "fake broker: listen on %s: %s", f->path, strerror(errno));
        if (f->lfd >= 0) {
            close(f->lfd);
        }
        return false;
    }
    sem_init(&f->go, 0, 0);
    sem_init(&f->done, 0, 0);
    if (pthread_create(&f->th, NULL, fake_main, f) != 0) {
        tu_check(false, "fake broker: pthread_create");
        close(f->lfd);
        return false;
    }
    return true;
}

/* fake_wait_done - wait until the fake has run its script (up to WAIT_MS). */
static bool
fake_wait_done(struct fake *f)
{
    struct timespec ts;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    do {
        r = sem_timedwait(&f->done, &ts);
    } while (r != 0 && errno == EINTR);
    return r == 0;
}

/* fake_join - wait for the fake to finish and release it. */
/* fake_go - let a fake that waits for it (wait_go) go on. */
static void
fake_go(struct fake *f)
{
    sem_post(&f->go);
}

static void
fake_join(struct fake *f, const char *what)
{
    if (f->wait_go) {
        sem_post(&f->go); /* in case the test did not get that far */
    }
    pthread_join(f->th, NULL);
    close(f->lfd);
    unlink(f->path);
    sem_destroy(&f->go);
    sem_destroy(&f->done);
    tu_check(!f->failed, "%s: the fake broker ran its script", what);
}

/* ------------------------------------------------------------------ */
/* Pipes whose write end travels as "the peer descriptor"             */

/* sees_eof - whether every write end of the pipe whose read end is @r is
 * closed: a read sees end of file within a second. */
static bool
sees_eof(int r)
{
    struct pollfd p = { .fd = r, .events = POLLIN };
    char c;

    if (poll(&p, 1, 1000) != 1) {
        return false;
    }
    return read(r, &c, 1) == 0;
}

/* is_write_end - whether @fd writes into the pipe whose read end is @r. */
static bool
is_write_end(int fd, int r)
{
    struct pollfd p = { .fd = r, .events = POLLIN };
    char c = 0;

    if (write(fd, "x", 1) != 1 || poll(&p, 1, 1000) != 1) {
        return false;
    }
    return read(r, &c, 1) == 1 && c == 'x';
}

/* ------------------------------------------------------------------ */
/* sp_broker_message_validate                                         */

static struct sp_broker_msg
get_pair_msg(uint16_t mode, uint16_t key_len)
{
    struct sp_broker_msg m;

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_GET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = sizeof(struct sp_broker_get_pair_request);
    m.payload.get_pair.mode = mode;
    m.payload.get_pair.key_len = key_len;
    memset(m.payload.get_pair.key, 'k', key_len <= 1024 ? key_len : 1024);
    m.n_fds = 0;
    return m;
}

static struct sp_broker_msg
set_pair_msg(void)
{
    struct sp_broker_msg m;

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = sizeof(uint64_t);
    m.payload.u64 = 0;
    m.fds[0] = 0;
    m.n_fds = 1;
    return m;
}

static void
valid(const char *what, const struct sp_broker_msg *m,
      const enum sp_broker_request *exp, int n_exp)
{
    struct res r;

    CALL(r, sp_broker_message_validate(m, exp, n_exp, ERRP));
    succeeds(what, r);
    tu_check(r.ret == 0, "%s: returns 0", what);
}

static void
invalid(const char *what, const struct sp_broker_msg *m,
        const enum sp_broker_request *exp, int n_exp, const char *mention,
        const char *not_mention)
{
    struct res r;

    CALL(r, sp_broker_message_validate(m, exp, n_exp, ERRP));
    fails(what, r, (struct want){ .errnum = EPROTO, .mention = mention,
                                  .not_mention = not_mention });
}

/* Words by which a message names each rule, in the protocol's order. */
#define W_VERSION "version"
#define W_FLAGS "flag"
#define W_REQUEST "request|type"
#define W_SIZE "size"
#define W_NFDS "descriptor|fd"
#define W_EXPECTED "expect"
#define W_MODE "mode"
#define W_KEY "key"

static void
test_validate(void)
{
    static const enum sp_broker_request only_set[] = { SP_BROKER_SET_PAIR };
    static const enum sp_broker_request only_get[] = { SP_BROKER_GET_PAIR };
    static const enum sp_broker_request set_get[] = { SP_BROKER_SET_PAIR, SP_BROKER_GET_PAIR };
    static const enum sp_broker_request none[1] = { SP_BROKER_NONE };
    struct sp_broker_msg m;
    struct res r;

    tu_diag("sp_broker_message_validate");

    /* Valid messages. */
    m = get_pair_msg(SP_BROKER_PAIR_MODE_CLIENT, 5);
    valid("validate GET_PAIR client", &m, NULL, 0);
    m = get_pair_msg(SP_BROKER_PAIR_MODE_SERVER, 1);
    valid("validate GET_PAIR server key_len 1", &m, NULL, 0);
    m = get_pair_msg(SP_BROKER_PAIR_MODE_NONE, 1024);
    valid("validate GET_PAIR none key_len 1024", &m, NULL, 0);
    m = get_pair_msg(SP_BROKER_PAIR_MODE_CLIENT, 5);
    valid("validate GET_PAIR expected {GET_PAIR}", &m, only_get, 1);
    valid("validate GET_PAIR expected {SET_PAIR, GET_PAIR}", &m, set_get, 2);
    valid("validate GET_PAIR expected NULL with a count", &m, NULL, 7);
    m = set_pair_msg();
    valid("validate SET_PAIR", &m, NULL, 0);
    valid("validate SET_PAIR expected {SET_PAIR}", &m, only_set, 1);

    /* NULL message. */
    CALL(r, sp_broker_message_validate(NULL, NULL, 0, ERRP));
    fails("validate NULL msg", r, (struct want){ .errnum = EINVAL });
    CALL(r, sp_broker_message_validate(NULL, only_get, 1, ERRP));
    fails("validate NULL msg with expected", r, (struct want){ .errnum = EINVAL });

    /* 1. Version nibble; also with every later rule broken too. */
    m = get_pair_msg(1, 5);
    m.flags = 0;
    invalid("validate version 0", &m, NULL, 0, W_VERSION, NULL);
    m.flags = 2;
    invalid("validate version 2", &m, NULL, 0, W_VERSION, NULL);
    m.flags = 0xf;
    invalid("validate version 15", &m, NULL, 0, W_VERSION, NULL);
    m = get_pair_msg(3, 0);
    m.flags = 0x10; /* version 0 and a reserved bit */
    m.request = 3;
    m.size = 0;
    m.n_fds = 5;
    invalid("validate version before flags, request, size, fds", &m, none, 1, W_VERSION,
            W_SIZE "|" W_MODE);

    /* 2. Reserved flag bits. */
    m = get_pair_msg(1, 5);
    m.flags = 0x11;
    invalid("validate flag bit 4", &m, NULL, 0, W_FLAGS, NULL);
    m.flags = 0x80000001u;
    invalid("validate flag bit 31", &m, NULL, 0, W_FLAGS, NULL);
    m = get_pair_msg(3, 0);
    m.flags = 0xf01;
    m.request = 0;
    m.size = 0;
    m.n_fds = 5;
    invalid("validate flags before request, size, fds", &m, none, 1, W_FLAGS,
            W_SIZE "|" W_MODE);

    /* 3. Request type: 0 (NONE), 3 (MAX) and the largest value. */
    m = get_pair_msg(1, 5);
    m.request = SP_BROKER_NONE;
    invalid("validate request NONE", &m, NULL, 0, W_REQUEST, NULL);
    m.request = SP_BROKER_MAX;
    invalid("validate request MAX", &m, NULL, 0, W_REQUEST, NULL);
    m.request = 0xffffffffu;
    invalid("validate request 0xffffffff", &m, NULL, 0, W_REQUEST, NULL);
    m.request = SP_BROKER_NONE;
    invalid("validate request NONE even when expected", &m, none, 1, W_REQUEST, NULL);
    m = get_pair_msg(3, 0);
    m.request = 3;
    m.size = 0;
    m.n_fds = 5;
    invalid("validate request before size, fds, mode", &m, NULL, 0, W_REQUEST,
            W_SIZE "|" W_MODE);

    /* 4. Payload size for the type. */
    m = get_pair_msg(1, 5);
    m.size = 8;
    invalid("validate GET_PAIR size 8", &m, NULL, 0, W_SIZE, NULL);
    m.size = 1032;
    invalid("validate GET_PAIR size 1032", &m, NULL, 0, W_SIZE, NULL);
    m.size = 0;
    invalid("validate GET_PAIR size 0", &m, NULL, 0, W_SIZE, NULL);
    m = set_pair_msg();
    m.size = 1028;
    invalid("validate SET_PAIR size 1028", &m, NULL, 0, W_SIZE, NULL);
    m.size = 0;
    invalid("validate SET_PAIR size 0", &m, NULL, 0, W_SIZE, NULL);
    m = get_pair_msg(3, 0);
    m.size = 7;
    m.n_fds = 2;
    invalid("validate size before fds, expected, mode, key", &m, only_set, 1, W_SIZE,
            "descriptor|" W_MODE);

    /* 5. Descriptor count (msg->n_fds). */
    m = get_pair_msg(1, 5);
    m.n_fds = 1;
    invalid("validate GET_PAIR with 1 fd", &m, NULL, 0, W_NFDS, NULL);
    m.n_fds = -1;
    invalid("validate GET_PAIR with n_fds -1", &m, NULL, 0, W_NFDS, NULL);
    m = set_pair_msg();
    m.n_fds = 0;
    invalid("validate SET_PAIR with 0 fds", &m, NULL, 0, W_NFDS, NULL);
    m.n_fds = 2;
    invalid("validate SET_PAIR with 2 fds", &m, NULL, 0, W_NFDS, NULL);
    m.n_fds = SP_BROKER_PROTOCOL_MAX_FDS;
    invalid("validate SET_PAIR with 64 fds", &m, NULL, 0, W_NFDS, NULL);
    m = get_pair_msg(3, 0);
    m.n_fds = 1;
    invalid("validate fds before expected, mode, key", &m, only_set, 1, W_NFDS,
            W_SIZE "|" W_MODE);

    /* 6. The type is one of those expected; an empty list accepts none. */
    m = get_pair_msg(1, 5);
    invalid("validate GET_PAIR when SET_PAIR expected", &m, only_set, 1, W_EXPECTED, NULL);
    invalid("validate GET_PAIR with an empty expected list", &m, only_get, 0, W_EXPECTED,
            NULL);
    invalid("validate GET_PAIR beyond n_expected", &m, set_get, 1, W_EXPECTED, NULL);
    m = set_pair_msg();
    invalid("validate SET_PAIR when GET_PAIR expected", &m, only_get, 1, W_EXPECTED, NULL);
    invalid("validate SET_PAIR with an empty expected list", &m, only_set, 0, W_EXPECTED,
            NULL);
    m = get_pair_msg(3, 0);
    invalid("validate expected before mode, key", &m, only_set, 1, W_EXPECTED,
            W_MODE "|" W_KEY);

    /* 7. GET_PAIR mode. */
    m = get_pair_msg(SP_BROKER_PAIR_MODE_MAX, 5);
    invalid("validate mode MAX", &m, NULL, 0, W_MODE, NULL);
    m = get_pair_msg(0xffff, 5);
    invalid("validate mode 0xffff", &m, NULL, 0, W_MODE, NULL);
    m = get_pair_msg(3, 0);
    invalid("validate mode before key_len", &m, only_get, 1, W_MODE, W_KEY);

    /* 8. GET_PAIR key length 1..1024. */
    m = get_pair_msg(1, 0);
    invalid("validate key_len 0", &m, NULL, 0, W_KEY, NULL);
    m = get_pair_msg(1, 1025);
    invalid("validate key_len 1025", &m, NULL, 0, W_KEY, NULL);
    m = get_pair_msg(1, 0xffff);
    invalid("validate key_len 0xffff", &m, only_get, 1, W_KEY, NULL);

    /* A NULL err is allowed: errno alone then. */
    m = get_pair_msg(1, 0);
    errno = 0;
    tu_check(sp_broker_message_validate(&m, NULL, 0, NULL) == -1 && errno == EPROTO,
             "validate invalid with NULL err: -1 and EPROTO (errno %s)", errname(errno));
    errno = 0;
    tu_check(sp_broker_message_validate(NULL, NULL, 0, NULL) == -1 && errno == EINVAL,
             "validate NULL msg with NULL err: -1 and EINVAL (errno %s)", errname(errno));
    m = get_pair_msg(1, 1);
    tu_check(sp_broker_message_validate(&m, NULL, 0, NULL) == 0,
             "validate valid with NULL err: 0");
}

/* ------------------------------------------------------------------ */
/* sp_broker_connect                                                  */

/* connect_ok - connect to @path, check the descriptor and return it. */
static int
connect_ok(const char *what, const char *path, bool nonblock)
{
    struct res r;

    CALL(r, sp_broker_connect(path, nonblock, ERRP));
    if (!succeeds(what, r)) {
        return -1;
    }
    tu_check(tu_cloexec(r.ret), "%s: close-on-exec", what);
    tu_check(tu_nonblocking(r.ret) == nonblock, "%s: O_NONBLOCK %s", what,
             nonblock ? "set" : "clear");
    return r.ret;
}

static void
connect_fails(const char *what, const char *path, int want)
{
    struct res r;

    CALL(r, sp_broker_connect(path, false, ERRP));
    fails(what, r, (struct want){ .errnum = want, .fd = true });
    CALL(r, sp_broker_connect(path, true, ERRP));
    fails(what, r, (struct want){ .errnum = want, .fd = true });
}

static void
test_connect(void)
{
    char path[512], long_path[256];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd, s;
    size_t n;

    tu_diag("sp_broker_connect");

    fd = connect_ok("connect blocking", broker_path, false);
    if (fd >= 0) {
        struct sockaddr_un peer;
        socklen_t len = sizeof peer;

        tu_check(getpeername(fd, (struct sockaddr *) &peer, &len) == 0 &&
                     strcmp(peer.sun_path, broker_path) == 0,
                 "connect blocking: connected to the broker's path");
        close(fd);
    }
    fd = connect_ok("connect nonblocking", broker_path, true);
    if (fd >= 0) {
        close(fd);
    }
    if (abstract_path) {
        fd = connect_ok("connect abstract blocking", abstract_path, false);
        if (fd >= 0) {
            close(fd);
        }
        fd = connect_ok("connect abstract nonblocking", abstract_path, true);
        if (fd >= 0) {
            close(fd);
        }
    }

    snprintf(path, sizeof path, "%s/missing.sock", tmp_dir);
    connect_fails("connect to a missing path", path, ENOENT);

    snprintf(path, sizeof path, "%s/regular-file", tmp_dir);
    fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    tu_check(fd >= 0, "create a regular file");
    if (fd >= 0) {
        close(fd);
    }
    connect_fails("connect to a regular file", path, ECONNREFUSED);
    unlink(path);

    /* A socket file whose socket is gone. */
    snprintf(path, sizeof path, "%s/dead.sock", tmp_dir);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tu_check(s >= 0 && bind(s, (struct sockaddr *) &sa, sizeof sa) == 0,
             "bind a socket file");
    if (s >= 0) {
        close(s);
    }
    connect_fails("connect to a socket nobody listens on", path, ECONNREFUSED);
    unlink(path);

    snprintf(path, sizeof path, "@spbroker-conformance-nobody-%d", (int) getpid());
    connect_fails("connect to an abstract name nobody listens on", path, ECONNREFUSED);

    connect_fails("connect NULL path", NULL, EINVAL);

    /* A listener whose queue of new connections is full. */
    snprintf(path, sizeof path, "%s/full.sock", tmp_dir);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (tu_check(s >= 0 && bind(s, (struct sockaddr *) &sa, sizeof sa) == 0 && listen(s, 0) == 0,
                 "listen with a backlog of 0")) {
        int queued[8], nq = 0, i;
        struct res r;

        /* Fill the queue; the kernel takes one or two before it is full. */
        for (r.ret = 0; nq < 8 && r.ret >= 0; nq++) {
            r.ret = queued[nq] = sp_broker_connect(path, true, NULL);
        }
        tu_check(r.ret < 0 && errno == EAGAIN,
                 "nonblocking connects to a full queue end with EAGAIN (after %d, errno %s)",
                 nq - 1, errname(errno));
        CALL(r, sp_broker_connect(path, true, ERRP));
        fails("connect nonblocking to a full queue", r,
              (struct want){ .errnum = EAGAIN, .fd = true });
        for (i = 0; i < nq; i++) {
            if (queued[i] >= 0) {
                close(queued[i]);
            }
        }
    }
    if (s >= 0) {
        close(s);
    }
    unlink(path);

    /* sun_path holds 107 bytes and a NUL: 107 is a path, 200 cannot be. */
    n = (size_t) snprintf(long_path, sizeof long_path, "%s/", tmp_dir);
    memset(long_path + n, 'p', 107 - n);
    long_path[107] = '\0';
    connect_fails("connect to a missing 107-byte path", long_path, ENOENT);
    memset(long_path, 'p', 200);
    long_path[0] = '/';
    long_path[200] = '\0';
    connect_fails("connect to a 200-byte path", long_path, EINVAL);

    errno = 0;
    snprintf(path, sizeof path, "%s/missing.sock", tmp_dir);
    tu_check(sp_broker_connect(path, false, NULL) == -1 && errno == ENOENT,
             "connect with NULL err: -1 and ENOENT (errno %s)", errname(errno));
}

/* ------------------------------------------------------------------ */
/* sp_broker_send_get_pair and _nondirectional                         */

/* send_key - send a GET_PAIR for @key on @fd in @mode (0 none, 1 client, 2 server). */
static struct res
send_key(int fd, const char *key, int mode)
{
    struct res r;

    if (mode == SP_BROKER_PAIR_MODE_NONE) {
        CALL(r, sp_broker_send_get_pair_nondirectional(fd, key, ERRP));
    } else {
        CALL(r, sp_broker_send_get_pair(fd, key, mode == SP_BROKER_PAIR_MODE_SERVER, ERRP));
    }
    return r;
}

static const char *
mode_name(int mode)
{
    return mode == 0 ? "none" : mode == 1 ? "client" : "server";
}

/* check_wire - the fake received exactly one GET_PAIR for @key in @mode. */
static void
check_wire(const char *what, const struct fake *f, const char *key, int mode)
{
    struct sp_broker_msg m;
    size_t klen = strlen(key), i;
    bool zeros = true;

    tu_check(f->got_total == WIRE, "%s: the broker got %zu bytes (want 1044)", what,
             f->got_total);
    tu_check(f->got_fds == 0, "%s: with no descriptor (got %d)", what, f->got_fds);
    if (f->got_len < WIRE) {
        return;
    }
    memset(&m, 0, sizeof m);
    memcpy(&m, f->got, WIRE);
    tu_check(m.request == SP_BROKER_GET_PAIR && m.flags == SP_BROKER_PROTOCOL_VERSION &&
                 m.size == 1028,
             "%s: header GET_PAIR, version 1, size 1028 (got %u, 0x%x, %u)", what,
             m.request, m.flags, m.size);
    tu_check(m.payload.get_pair.mode == mode, "%s: mode %s (got %u)", what,
             mode_name(mode), m.payload.get_pair.mode);
    tu_check(m.payload.get_pair.key_len == klen &&
                 memcmp(m.payload.get_pair.key, key, klen) == 0,
             "%s: key_len %zu and the key's bytes", what, klen);
    for (i = 16 + klen; i < WIRE; i++) {
        zeros &= f->got[i] == 0;
    }
    tu_check(zeros, "%s: zeros after the key, padding included", what);
    m.n_fds = f->got_fds;
    tu_check(sp_broker_message_validate(&m, NULL, 0, NULL) == 0,
             "%s: the library's own validate accepts it", what);
}

/* send_to_fake - send @key in @mode to a fake that records everything. */
static void
send_to_fake(const char *what, const char *key, int mode, bool nonblock,
             const struct want *w)
{
    struct fake f = { .mode = FAKE_READ_ALL };
    struct res r;
    int fd;

    if (!fake_start(&f)) {
        return;
    }
    fd = sp_broker_connect(f.path, nonblock, NULL);
    tu_check(fd >= 0, "%s: connect to the fake broker", what);
    if (fd >= 0) {
        r = send_key(fd, key, mode);
        close(fd);
        if (w) {
            fails(what, r, *w);
        } else {
            succeeds(what, r);
            tu_check(r.ret == 0, "%s: returns 0", what);
        }
    }
    fake_join(&f, what);
    if (w) {
        tu_check(f.got_total == 0 && f.got_fds == 0,
                 "%s: nothing was sent (the broker got %zu bytes)", what, f.got_total);
    } else {
        check_wire(what, &f, key, mode);
    }
}

static void
test_send(void)
{
    struct want einval = { .errnum = EINVAL, .mention = "key" };
    struct want einval_null = { .errnum = EINVAL };
    char *k1 = make_key(1, 0), *k1024 = make_key(1024, 3), *k1025 = make_key(1025, 5);
    char what[128];
    int mode, fd, p[2];
    struct res r;

    tu_diag("sp_broker_send_get_pair, sp_broker_send_get_pair_nondirectional");

    for (mode = 0; mode < 3; mode++) {
        snprintf(what, sizeof what, "send %s, 1-byte key", mode_name(mode));
        send_to_fake(what, k1, mode, false, NULL);
        snprintf(what, sizeof what, "send %s, 1024-byte key, nonblocking", mode_name(mode));
        send_to_fake(what, k1024, mode, true, NULL);
        snprintf(what, sizeof what, "send %s, 1025-byte key", mode_name(mode));
        send_to_fake(what, k1025, mode, false, &einval);
        snprintf(what, sizeof what, "send %s, empty key", mode_name(mode));
        send_to_fake(what, "", mode, true, &einval);
        snprintf(what, sizeof what, "send %s, NULL key", mode_name(mode));
        send_to_fake(what, NULL, mode, false, &einval_null);
    }

    /* The broker went away before the request. */
    {
        struct fake f = { .mode = FAKE_CLOSE };

        if (fake_start(&f)) {
            fd = sp_broker_connect(f.path, false, NULL);
            tu_check(fd >= 0, "send after the broker closed: connect");
            tu_check(fake_wait_done(&f), "send after the broker closed: it closed");
            if (fd >= 0) {
                r = send_key(fd, k1, SP_BROKER_PAIR_MODE_SERVER);
                fails("send after the broker closed", r,
                      (struct want){ .errnum = EPIPE, .alt = ECONNRESET });
                r = send_key(fd, k1, SP_BROKER_PAIR_MODE_NONE);
                fails("send nondirectional after the broker closed", r,
                      (struct want){ .errnum = EPIPE, .alt = ECONNRESET });
                close(fd);
            }
            fake_join(&f, "send after the broker closed");
        }
    }

    /* A nonblocking socket with a full send buffer: EAGAIN, nothing sent. */
    {
        struct fake f = { .mode = FAKE_READ_ALL, .wait_go = true };
        size_t filled = 0;
        int small = 4096;

        if (fake_start(&f)) {
            fd = sp_broker_connect(f.path, true, NULL);
            tu_check(fd >= 0, "send with a full buffer: connect");
            if (fd >= 0) {
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
                while (send(fd, "f", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 && filled < 100000) {
                    filled++;
                }
                tu_check(errno == EAGAIN, "send with a full buffer: filled with %zu bytes", filled);
                r = send_key(fd, k1, SP_BROKER_PAIR_MODE_SERVER);
                fails("send with a full buffer", r, (struct want){ .errnum = EAGAIN });
                r = send_key(fd, k1, SP_BROKER_PAIR_MODE_NONE);
                fails("send nondirectional with a full buffer", r,
                      (struct want){ .errnum = EAGAIN });
                fake_go(&f);
                close(fd);
            }
            fake_join(&f, "send with a full buffer");
            tu_check(f.got_total == filled, "send with a full buffer: nothing sent (%zu bytes, "
                     "%zu of them filler)", f.got_total, filled);
        }
    }

    /* Descriptors that cannot carry a request. */
    r = send_key(-1, k1, SP_BROKER_PAIR_MODE_CLIENT);
    fails("send on descriptor -1", r, (struct want){ .errnum = EBADF });
    r = send_key(-1, k1, SP_BROKER_PAIR_MODE_NONE);
    fails("send nondirectional on descriptor -1", r, (struct want){ .errnum = EBADF });
    if (pipe2(p, O_CLOEXEC) == 0) {
        r = send_key(p[1], k1, SP_BROKER_PAIR_MODE_SERVER);
        fails("send on a pipe", r, (struct want){ .errnum = ENOTSOCK });
        close(p[0]);
        close(p[1]);
    }

    /* NULL err. */
    errno = 0;
    tu_check(sp_broker_send_get_pair(-1, "", true, NULL) == -1 && errno == EINVAL,
             "send empty key with NULL err: -1 and EINVAL (errno %s)", errname(errno));
    errno = 0;
    tu_check(sp_broker_send_get_pair_nondirectional(-1, k1025, NULL) == -1 &&
                 errno == EINVAL,
             "send nondirectional long key with NULL err: -1 and EINVAL (errno %s)",
             errname(errno));

    free(k1);
    free(k1024);
    free(k1025);
}

/* ------------------------------------------------------------------ */
/* Pairings through the real broker                                   */

/* pair_steps - pair @key through the broker with connect/send/receive. */
static void
pair_steps(const char *what, const char *path, const char *key, bool nondirectional)
{
    int a, b, pa = -1, pb = -1;
    struct pollfd p;
    struct res r;
    char w[160];

    snprintf(w, sizeof w, "%s: connect", what);
    a = connect_ok(w, path, false);
    b = connect_ok(w, path, true);
    if (a < 0 || b < 0) {
        goto out;
    }
    snprintf(w, sizeof w, "%s: first send", what);
    r = send_key(a, key, nondirectional ? SP_BROKER_PAIR_MODE_NONE : SP_BROKER_PAIR_MODE_SERVER);
    succeeds(w, r);
    snprintf(w, sizeof w, "%s: second send (nonblocking)", what);
    r = send_key(b, key, nondirectional ? SP_BROKER_PAIR_MODE_NONE : SP_BROKER_PAIR_MODE_CLIENT);
    succeeds(w, r);

    snprintf(w, sizeof w, "%s: blocking receive", what);
    CALL(r, sp_broker_receive_set_pair(a, ERRP));
    if (succeeds(w, r)) {
        pa = r.ret;
    }
    p = (struct pollfd){ .fd = b, .events = POLLIN };
    tu_check(poll(&p, 1, WAIT_MS) == 1, "%s: the nonblocking socket becomes readable", what);
    snprintf(w, sizeof w, "%s: nonblocking receive", what);
    CALL(r, sp_broker_receive_set_pair(b, ERRP));
    if (succeeds(w, r)) {
        pb = r.ret;
    }
    if (pa >= 0 && pb >= 0) {
        tu_check(tu_connected(pa, pb), "%s: the two descriptors are connected both ways", what);
        tu_check(tu_cloexec(pa) && tu_cloexec(pb), "%s: both are close-on-exec", what);
    }
    tu_check(a < 0 || fcntl(a, F_GETFD) >= 0, "%s: receive left the broker fd open", what);
out:
    if (pa >= 0) {
        close(pa);
    }
    if (pb >= 0) {
        close(pb);
    }
    if (a >= 0) {
        close(a);
    }
    if (b >= 0) {
        close(b);
    }
}

/* test_eagain - a nonblocking receive before the answer changes nothing. */
static void
test_eagain(void)
{
    const char *key = "eagain-key";
    int a, pa = -1, pb = -1, before, after;
    struct pollfd p;
    struct res r;

    tu_diag("nonblocking receive before the answer");
    a = connect_ok("eagain: connect", broker_path, true);
    if (a < 0) {
        return;
    }
    r = send_key(a, key, SP_BROKER_PAIR_MODE_SERVER);
    succeeds("eagain: send", r);

    before = tu_fd_count();
    CALL(r, sp_broker_receive_set_pair(a, ERRP));
    fails("receive before the answer", r,
          (struct want){ .errnum = EAGAIN, .alt = EWOULDBLOCK, .fd = true });
    CALL(r, sp_broker_receive_set_pair(a, ERRP));
    fails("receive before the answer, again", r,
          (struct want){ .errnum = EAGAIN, .alt = EWOULDBLOCK, .fd = true });
    errno = 0;
    tu_check(sp_broker_receive_set_pair(a, NULL) == -1 && errno == EAGAIN,
             "receive before the answer with NULL err: -1 and EAGAIN (errno %s)",
             errname(errno));
    after = tu_fd_count();
    tu_check(before == after, "receive before the answer: no descriptor made (%d, then %d)",
             before, after);
    tu_check(fcntl(a, F_GETFD) >= 0 && tu_nonblocking(a),
             "receive before the answer: broker fd still open and nonblocking");

    /* The peer arrives; the same descriptor now delivers the pair. */
    CALL(r, sp_broker_get_pair(broker_path, key, false, ERRP));
    if (succeeds("eagain: the peer's get_pair", r)) {
        pb = r.ret;
    }
    p = (struct pollfd){ .fd = a, .events = POLLIN };
    tu_check(poll(&p, 1, WAIT_MS) == 1, "eagain: broker fd becomes readable");
    CALL(r, sp_broker_receive_set_pair(a, ERRP));
    if (succeeds("receive after the answer", r)) {
        pa = r.ret;
    }
    if (pa >= 0 && pb >= 0) {
        tu_check(tu_connected(pa, pb), "receive after the answer: connected to the peer");
    }
    if (pa >= 0) {
        close(pa);
    }
    if (pb >= 0) {
        close(pb);
    }
    close(a);
}

/* A get_pair in a thread, for the other side of a pairing. */
struct gp_thread {
    pthread_t th;
    const char *path;
    const char *key;
    int mode;
    struct res r;
};

static void *
gp_main(void *arg)
{
    struct gp_thread *g = arg;

    if (g->mode == SP_BROKER_PAIR_MODE_NONE) {
        CALL(g->r, sp_broker_get_pair_nondirectional(g->path, g->key, ERRP));
    } else {
        CALL(g->r, sp_broker_get_pair(g->path, g->key, g->mode == SP_BROKER_PAIR_MODE_SERVER,
                                      ERRP));
    }
    return NULL;
}

/* pair_get_pair - pair @key with get_pair in two threads. */
static void
pair_get_pair(const char *what, const char *path, const char *key, bool nondirectional)
{
    struct gp_thread g = { .path = path, .key = key,
                           .mode = nondirectional ? SP_BROKER_PAIR_MODE_NONE
                                                  : SP_BROKER_PAIR_MODE_SERVER };
    struct res r;
    char w[160];

    if (pthread_create(&g.th, NULL, gp_main, &g) != 0) {
        tu_check(false, "%s: pthread_create", what);
        return;
    }
    if (nondirectional) {
        CALL(r, sp_broker_get_pair_nondirectional(path, key, ERRP));
    } else {
        CALL(r, sp_broker_get_pair(path, key, false, ERRP));
    }
    pthread_join(g.th, NULL);
    snprintf(w, sizeof w, "%s (%s)", what, nondirectional ? "none" : "client");
    succeeds(w, r);
    snprintf(w, sizeof w, "%s (%s)", what, nondirectional ? "none" : "server");
    succeeds(w, g.r);
    if (r.ret >= 0 && g.r.ret >= 0) {
        tu_check(tu_connected(r.ret, g.r.ret), "%s: connected both ways", what);
        tu_check(tu_cloexec(r.ret) && tu_cloexec(g.r.ret), "%s: close-on-exec", what);
    }
    if (r.ret >= 0) {
        close(r.ret);
    }
    if (g.r.ret >= 0) {
        close(g.r.ret);
    }
}

static void
test_pairing(void)
{
    char *k1024 = make_key(1024, 11);
    char key[64];

    tu_diag("pairings through the broker");
    pair_steps("pair 1-byte key", broker_path, "1", false);
    pair_steps("pair 1024-byte key", broker_path, k1024, false);
    pair_steps("pair nondirectional 1-byte key", broker_path, "1", true);
    k1024[0] = 'n';
    pair_steps("pair nondirectional 1024-byte key", broker_path, k1024, true);
    pair_get_pair("get_pair", broker_path, "get-pair-key", false);
    pair_get_pair("get_pair_nondirectional", broker_path, "get-pair-key", true);
    k1024[0] = 'g';
    pair_get_pair("get_pair 1024-byte key", broker_path, k1024, false);
    if (abstract_path) {
        snprintf(key, sizeof key, "abstract-%d", (int) getpid());
        pair_steps("pair through the abstract broker", abstract_path, key, false);
        pair_get_pair("get_pair through the abstract broker", abstract_path, key, false);
    }
    test_eagain();
    free(k1024);
}

/* ------------------------------------------------------------------ */
/* sp_broker_receive_set_pair against fake brokers                     */

struct rx {
    const char *what;
    unsigned char msg[WIRE];
    size_t len;            /* bytes of msg to send */
    int nfds;              /* pipes whose write ends travel with the message */
    size_t chunk;          /* piece size, 0 for one send */
    size_t fd_at;          /* offset of the piece carrying the fds */
    bool nonblock;         /* receive on a nonblocking socket (after poll) */
    bool close_after;      /* the fake closes right after sending */
    bool null_err;         /* call with err == NULL */
    int want;              /* 0: success; else the errno */
    const char *mention;
};

static void
rx_run(struct rx *c)
{
    struct fake f = { .mode = FAKE_REPLY, .close_after = c->close_after,
                      .chunk = c->chunk, .fd_at = c->fd_at, .nfds = c->nfds,
                      .reply_len = c->len };
    int pipes[2][2] = { { -1, -1 }, { -1, -1 } };
    int before = tu_fd_count(), fd = -1, i;
    struct res r;

    memcpy(f.reply, c->msg, sizeof f.reply);
    for (i = 0; i < c->nfds; i++) {
        if (pipe2(pipes[i], O_CLOEXEC | O_NONBLOCK) != 0) {
            tu_check(false, "%s: pipe2", c->what);
            return;
        }
        f.fds[i] = pipes[i][1]; /* the fake sends and closes it */
    }
    if (!fake_start(&f)) {
        return;
    }
    fd = sp_broker_connect(f.path, c->nonblock, NULL);
    tu_check(fd >= 0, "%s: connect to the fake broker", c->what);
    if (fd >= 0) {
        if (c->nonblock) {
            struct pollfd p = { .fd = fd, .events = POLLIN };

            tu_check(poll(&p, 1, WAIT_MS) == 1, "%s: readable", c->what);
        }
        if (c->null_err) {
            errno = 0;
            r.ret = sp_broker_receive_set_pair(fd, NULL);
            r.errnum = errno;
            r.err = NULL;
        } else {
            CALL(r, sp_broker_receive_set_pair(fd, ERRP));
        }
        if (c->want == 0) {
            if (succeeds(c->what, r)) {
                tu_check(tu_cloexec(r.ret), "%s: close-on-exec", c->what);
                tu_check(c->nfds == 1 && is_write_end(r.ret, pipes[0][0]),
                         "%s: returns the descriptor that was sent", c->what);
                close(r.ret);
            }
        } else if (c->null_err) {
            tu_check(r.ret == -1 && r.errnum == c->want,
                     "%s: -1 and %s with NULL err (got %d, %s)", c->what, errname(c->want),
                     r.ret, errname(r.errnum));
            if (r.ret >= 0) {
                close(r.ret);
            }
        } else {
            fails(c->what, r, (struct want){ .errnum = c->want, .mention = c->mention,
                                             .fd = true });
        }
        /* The fake has sent and closed its copies: every descriptor the
         * library took must be closed by now, the socket still open. */
        tu_check(fake_wait_done(&f), "%s: the fake broker sent its reply", c->what);
        for (i = 0; i < c->nfds; i++) {
            tu_check(sees_eof(pipes[i][0]), "%s: descriptor %d closed by the library",
                     c->what, i + 1);
        }
        tu_check(fcntl(fd, F_GETFD) >= 0, "%s: the broker fd is still open", c->what);
        close(fd);
    }
    fake_join(&f, c->what);
    for (i = 0; i < c->nfds; i++) {
        close(pipes[i][0]);
    }
    tu_check(tu_fd_count() == before, "%s: no descriptor leaked (%d before, %d after)",
             c->what, before, tu_fd_count());
}

static void
test_receive(void)
{
    struct rx c;
    int p[2];
    struct res r;

#define RX(...)                                                         \
    do {                                                                \
        memset(&c, 0, sizeof c);                                        \
        set_pair(c.msg, SP_BROKER_SET_PAIR, 1, 8, 0);                   \
        c.len = WIRE;                                                   \
        c.nfds = 1;                                                     \
        __VA_ARGS__;                                                    \
        rx_run(&c);                                                     \
    } while (0)

    tu_diag("sp_broker_receive_set_pair");

    /* Well-formed, however the bytes arrive. */
    RX(c.what = "receive SET_PAIR, 1044 bytes");
    RX(c.what = "receive SET_PAIR, 1044 bytes, then end of file", c.close_after = true);
    RX(c.what = "receive SET_PAIR, nonblocking", c.nonblock = true);
    RX(c.what = "receive SET_PAIR as 1040 bytes", c.len = DOC_WIRE);
    RX(c.what = "receive SET_PAIR as 1040 bytes, then end of file", c.len = DOC_WIRE,
       c.close_after = true);
    RX(c.what = "receive SET_PAIR in 1-byte pieces", c.chunk = 1);
    RX(c.what = "receive SET_PAIR in 1-byte pieces, nonblocking", c.chunk = 1,
       c.nonblock = true);
    RX(c.what = "receive SET_PAIR in 1-byte pieces, fd with byte 500", c.chunk = 1,
       c.fd_at = 500);
    RX(c.what = "receive SET_PAIR as 1040 bytes in 1-byte pieces", c.chunk = 1,
       c.len = DOC_WIRE);
    RX(c.what = "receive SET_PAIR in 3 pieces, fd with the last", c.chunk = 400,
       c.fd_at = 800);

    /* Malformed: EPROTO, and every descriptor that came is closed. */
    RX(c.what = "receive version 2", set_pair(c.msg, 2, 2, 8, 0), c.want = EPROTO);
    RX(c.what = "receive version 0", set_pair(c.msg, 2, 0, 8, 0), c.want = EPROTO);
    RX(c.what = "receive reserved flags", set_pair(c.msg, 2, 0x101, 8, 0), c.want = EPROTO);
    RX(c.what = "receive request GET_PAIR", set_pair(c.msg, 1, 1, 1028, 0), c.want = EPROTO);
    RX(c.what = "receive request GET_PAIR without fd", set_pair(c.msg, 1, 1, 1028, 0),
       c.nfds = 0, c.want = EPROTO);
    RX(c.what = "receive request NONE", set_pair(c.msg, 0, 1, 8, 0), c.want = EPROTO);
    RX(c.what = "receive request MAX", set_pair(c.msg, 3, 1, 8, 0), c.want = EPROTO);
    RX(c.what = "receive size 1028", set_pair(c.msg, 2, 1, 1028, 0), c.want = EPROTO);
    RX(c.what = "receive size 0", set_pair(c.msg, 2, 1, 0, 0), c.want = EPROTO);
    RX(c.what = "receive u64 payload 1", set_pair(c.msg, 2, 1, 8, 1), c.want = EPROTO);
    RX(c.what = "receive u64 payload high bit", set_pair(c.msg, 2, 1, 8, 1ull << 63),
       c.want = EPROTO);
    RX(c.what = "receive 0 descriptors", c.nfds = 0, c.want = EPROTO);
    RX(c.what = "receive 2 descriptors", c.nfds = 2, c.want = EPROTO);
    RX(c.what = "receive 2 descriptors in pieces", c.nfds = 2, c.chunk = 1, c.want = EPROTO);
    RX(c.what = "receive version 2, NULL err", set_pair(c.msg, 2, 2, 8, 0), c.null_err = true,
       c.want = EPROTO);

    /* The broker closes the connection: before anything, mid-message. */
    RX(c.what = "receive end of file before anything", c.len = 0, c.nfds = 0,
       c.close_after = true, c.want = ECONNRESET);
    RX(c.what = "receive end of file after 100 bytes", c.len = 100, c.close_after = true,
       c.want = ECONNRESET);
    RX(c.what = "receive end of file after 1039 bytes", c.len = 1039, c.chunk = 1,
       c.close_after = true, c.want = ECONNRESET);
    RX(c.what = "receive end of file after 12 bytes, nonblocking", c.len = 12, c.nfds = 0,
       c.nonblock = true, c.close_after = true, c.want = ECONNRESET);
    RX(c.what = "receive end of file, NULL err", c.len = 0, c.nfds = 0, c.close_after = true,
       c.null_err = true, c.want = ECONNRESET);

    /* An answer that begins and stops: ETIMEDOUT, after about a second. */
    RX(c.what = "receive a stalled answer", c.len = 100, c.want = ETIMEDOUT);

#undef RX

    /* Descriptors that cannot carry an answer. */
    CALL(r, sp_broker_receive_set_pair(-1, ERRP));
    fails("receive on descriptor -1", r, (struct want){ .errnum = EBADF, .fd = true });
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
        CALL(r, sp_broker_receive_set_pair(p[0], ERRP));
        fails("receive on a pipe", r, (struct want){ .errnum = ENOTSOCK, .fd = true });
        close(p[0]);
        close(p[1]);
    }
}

/* ------------------------------------------------------------------ */
/* sp_broker_get_pair failures                                        */

static void
get_pair_fails(const char *what, const char *path, const char *key, struct want w)
{
    struct res r;
    char buf[160];

    w.fd = true;
    snprintf(buf, sizeof buf, "get_pair %s", what);
    CALL(r, sp_broker_get_pair(path, key, true, ERRP));
    fails(buf, r, w);
    snprintf(buf, sizeof buf, "get_pair_nondirectional %s", what);
    CALL(r, sp_broker_get_pair_nondirectional(path, key, ERRP));
    fails(buf, r, w);
}

/* get_pair_fake - get_pair against a fake that reads the request, then replies @msg. */
static void
get_pair_fake(const char *what, int mode, const unsigned char *msg, size_t len, int nfds,
              int want)
{
    struct fake f = { .mode = FAKE_REPLY, .read_request = true, .close_after = true,
                      .reply_len = len, .nfds = nfds };
    int pipes[1][2] = { { -1, -1 } };
    int before = tu_fd_count();
    struct res r;

    memcpy(f.reply, msg, WIRE);
    if (nfds) {
        if (pipe2(pipes[0], O_CLOEXEC | O_NONBLOCK) != 0) {
            tu_check(false, "%s: pipe2", what);
            return;
        }
        f.fds[0] = pipes[0][1];
    }
    if (!fake_start(&f)) {
        return;
    }
    if (mode == SP_BROKER_PAIR_MODE_NONE) {
        CALL(r, sp_broker_get_pair_nondirectional(f.path, "fake-key", ERRP));
    } else {
        CALL(r, sp_broker_get_pair(f.path, "fake-key", mode == SP_BROKER_PAIR_MODE_SERVER,
                                   ERRP));
    }
    if (want == 0) {
        if (succeeds(what, r)) {
            tu_check(tu_cloexec(r.ret), "%s: close-on-exec", what);
            tu_check(is_write_end(r.ret, pipes[0][0]), "%s: returns the descriptor sent",
                     what);
            close(r.ret);
        }
    } else {
        fails(what, r, (struct want){ .errnum = want, .fd = true });
    }
    fake_join(&f, what);
    check_wire(what, &f, "fake-key", mode);
    if (nfds) {
        tu_check(sees_eof(pipes[0][0]), "%s: the descriptor was closed", what);
        close(pipes[0][0]);
    }
    tu_check(tu_fd_count() == before, "%s: no descriptor leaked (%d before, %d after)", what,
             before, tu_fd_count());
}

static void
test_get_pair(void)
{
    char path[256];
    char *k1025 = make_key(1025, 1);
    unsigned char msg[WIRE];

    tu_diag("sp_broker_get_pair, sp_broker_get_pair_nondirectional");
    snprintf(path, sizeof path, "%s/missing.sock", tmp_dir);
    get_pair_fails("to a missing path", path, "key", (struct want){ .errnum = ENOENT });
    get_pair_fails("with a NULL path", NULL, "key", (struct want){ .errnum = EINVAL });
    get_pair_fails("with a NULL key", broker_path, NULL, (struct want){ .errnum = EINVAL });
    get_pair_fails("with an empty key", broker_path, "",
                   (struct want){ .errnum = EINVAL, .mention = "key" });
    get_pair_fails("with a 1025-byte key", broker_path, k1025,
                   (struct want){ .errnum = EINVAL, .mention = "key" });
    errno = 0;
    tu_check(sp_broker_get_pair(path, "key", false, NULL) == -1 && errno == ENOENT,
             "get_pair with NULL err: -1 and ENOENT (errno %s)", errname(errno));

    set_pair(msg, SP_BROKER_SET_PAIR, 1, 8, 0);
    get_pair_fake("get_pair from a fake broker", SP_BROKER_PAIR_MODE_SERVER, msg, WIRE, 1, 0);
    get_pair_fake("get_pair client from a fake broker, 1040 bytes", SP_BROKER_PAIR_MODE_CLIENT,
                  msg, DOC_WIRE, 1, 0);
    get_pair_fake("get_pair_nondirectional from a fake broker", SP_BROKER_PAIR_MODE_NONE, msg,
                  WIRE, 1, 0);
    get_pair_fake("get_pair, broker hangs up", SP_BROKER_PAIR_MODE_SERVER, msg, 0, 0,
                  ECONNRESET);
    get_pair_fake("get_pair_nondirectional, broker hangs up", SP_BROKER_PAIR_MODE_NONE, msg, 0,
                  0, ECONNRESET);
    set_pair(msg, SP_BROKER_SET_PAIR, 2, 8, 0);
    get_pair_fake("get_pair, version 2 reply", SP_BROKER_PAIR_MODE_CLIENT, msg, WIRE, 1,
                  EPROTO);
    get_pair_fake("get_pair_nondirectional, version 2 reply", SP_BROKER_PAIR_MODE_NONE, msg,
                  WIRE, 1, EPROTO);
    free(k1025);
}

/* ------------------------------------------------------------------ */

/* warm_up - a successful pairing, for --when=after. */
static bool
warm_up(void)
{
    int before = tu_failures();

    pair_get_pair("warm-up pairing before fork", broker_path, "warm-up", false);
    return tu_failures() == before;
}

int
main(int argc, char **argv)
{
    struct tu_opts o = { .report_fd = -1 };
    int i, fds_start, fds_end;
    const char *v;

    for (i = 1; i < argc; i++) {
        if (tu_common_opt(&o, argv[i])) {
            continue;
        }
        if ((v = tu_opt_value(argv[i], "broker")) != NULL) {
            broker_path = v;
        } else if ((v = tu_opt_value(argv[i], "abstract")) != NULL) {
            abstract_path = v;
        } else if ((v = tu_opt_value(argv[i], "tmp")) != NULL) {
            tmp_dir = v;
        } else {
            fprintf(stderr, "conformance: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker_path || !tmp_dir || tmp_dir[0] != '/') {
        fprintf(stderr, "usage: conformance --broker=PATH --tmp=/DIR [--abstract=@NAME] "
                        "[--fork=fork|daemon|sysfork --when=before|after] [--report-fd=N]\n");
        return 2;
    }

    if (o.fork_kind && tu_after(&o) && !warm_up()) {
        tu_diag("the warm-up before fork failed; running the suite anyway");
    }
    tu_fork(&o);
    if (o.fork_kind) {
        tu_diag("running in a child made by %s, %s the first library call", o.fork_kind,
                tu_after(&o) ? "after" : "before");
    }

    fds_start = tu_fd_count();
    test_validate();
    test_connect();
    test_send();
    test_pairing();
    test_receive();
    test_get_pair();
    fds_end = tu_fd_count();
    tu_check(fds_start == fds_end, "descriptors at the end as at the start (%d, then %d)",
             fds_start, fds_end);
    return tu_finish(&o);
}
