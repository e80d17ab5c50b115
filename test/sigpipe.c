//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigpipe.c - a host that ignores SIGPIPE and has no usable stderr goes
 * through every error path of the library and survives.
 *
 * Usage: sigpipe --broker=PATH --tmp=DIR --stderr=closed|broken|captured
 *                [--report-fd=N]
 *
 *   closed    close(2): descriptor 2 is free, and the library's own sockets
 *             may land on it
 *   broken    descriptor 2 is a pipe nobody reads: a write there raises
 *             SIGPIPE, which a Go runtime turns into death even when the
 *             host ignores it
 *   captured  descriptor 2 is a pipe this program reads at the end: the
 *             library must have written nothing to it
 *
 * Results go to stdout as TAP; the exit status says whether all passed.
 * A host killed by a signal is reported by the harness.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#include "testutil.h"

static const char *broker_path;
static const char *tmp_dir;

/* failed_with - check a failure: -1, errno @want (or @alt), a message. */
static void
failed_with(const char *what, int ret, int errnum, char *err, int want, int alt)
{
    tu_check(ret == -1 && (errnum == want || (alt && errnum == alt)) && err && err[0],
             "%s: -1 with errno %s (got %d, %s, \"%s\")", what, strerrorname_np(want), ret,
             strerrorname_np(errnum) ? strerrorname_np(errnum) : "0", err ? err : "");
    free(err);
    if (ret >= 0) {
        close(ret);
    }
}

#define FAILS(what, want, alt, ...)                                     \
    do {                                                                \
        char *err = NULL;                                               \
        int ret_;                                                       \
        errno = 0;                                                      \
        ret_ = (__VA_ARGS__);                                           \
        failed_with(what, ret_, errno, err, want, alt);                 \
    } while (0)

/* listener - a listening socket at a fresh path under tmp_dir. */
static int
listener(char *path, size_t cap, const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int l;

    snprintf(path, cap, "%s/%s", tmp_dir, name);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    unlink(path);
    l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *) &sa, sizeof sa) != 0 || listen(l, 4) != 0) {
        tu_check(false, "listen on %s: %s", path, strerror(errno));
        exit(1);
    }
    return l;
}

/* accepted_and_closed - connect to @path and have the far end close at once. */
static int
accepted_and_closed(int l, const char *path)
{
    int fd = sp_broker_connect(path, false, NULL);
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);

    tu_check(fd >= 0 && c >= 0, "connect to %s and accept", path);
    if (c >= 0) {
        close(c);
    }
    return fd;
}

struct peer {
    pthread_t th;
    int fd;
};

static void *
peer_main(void *arg)
{
    struct peer *p = arg;

    p->fd = sp_broker_get_pair(broker_path, "sigpipe-key", true, NULL);
    return NULL;
}

int
main(int argc, char **argv)
{
    struct tu_opts o = { .report_fd = -1 };
    const char *mode = NULL, *v;
    char path[256], *long_key;
    unsigned char msg[SP_BROKER_MESSAGE_SIZE];
    struct sp_broker_msg m;
    int i, fd, l, c, spy = -1, p[2];
    struct peer peer;

    for (i = 1; i < argc; i++) {
        if (tu_common_opt(&o, argv[i])) {
            continue;
        }
        if ((v = tu_opt_value(argv[i], "broker")) != NULL) {
            broker_path = v;
        } else if ((v = tu_opt_value(argv[i], "tmp")) != NULL) {
            tmp_dir = v;
        } else if ((v = tu_opt_value(argv[i], "stderr")) != NULL) {
            mode = v;
        } else {
            fprintf(stderr, "sigpipe: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker_path || !tmp_dir || !mode) {
        fprintf(stderr, "usage: sigpipe --broker=PATH --tmp=DIR --stderr=closed|broken|captured\n");
        return 2;
    }

    tu_fork(&o);
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "closed") == 0) {
        close(2);
    } else if (pipe2(p, O_CLOEXEC) == 0 && dup2(p[1], 2) == 2) {
        close(p[1]);
        if (strcmp(mode, "broken") == 0) {
            close(p[0]);
        } else {
            spy = p[0];
            fcntl(spy, F_SETFL, O_NONBLOCK);
        }
    } else {
        printf("Bail out! cannot set up stderr\n");
        return 1;
    }
    tu_diag("SIGPIPE ignored, stderr %s", mode);

    /* Connect failures. */
    snprintf(path, sizeof path, "%s/missing.sock", tmp_dir);
    FAILS("connect to a missing path", ENOENT, 0, sp_broker_connect(path, false, &err));
    FAILS("connect NULL", EINVAL, 0, sp_broker_connect(NULL, true, &err));
    snprintf(path, sizeof path, "%s/file", tmp_dir);
    fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    }
    FAILS("connect to a regular file", ECONNREFUSED, 0, sp_broker_connect(path, false, &err));
    snprintf(path, sizeof path, "%s/missing.sock", tmp_dir);
    FAILS("get_pair to a missing path", ENOENT, 0, sp_broker_get_pair(path, "k", true, &err));
    FAILS("get_pair_nondirectional to a missing path", ENOENT, 0,
          sp_broker_get_pair_nondirectional(path, "k", &err));

    /* Bad keys. */
    long_key = malloc(2000);
    memset(long_key, 'k', 1999);
    long_key[1999] = '\0';
    l = listener(path, sizeof path, "keys.sock");
    fd = sp_broker_connect(path, false, NULL);
    FAILS("send an empty key", EINVAL, 0, sp_broker_send_get_pair(fd, "", true, &err));
    FAILS("send a long key", EINVAL, 0, sp_broker_send_get_pair_nondirectional(fd, long_key, &err));
    FAILS("send a NULL key", EINVAL, 0, sp_broker_send_get_pair(fd, NULL, false, &err));
    FAILS("get_pair with a long key", EINVAL, 0, sp_broker_get_pair(broker_path, long_key, false, &err));
    close(fd);
    close(l);
    free(long_key);

    /* A broker that went away: EPIPE where a plain write would raise SIGPIPE. */
    l = listener(path, sizeof path, "gone.sock");
    fd = accepted_and_closed(l, path);
    FAILS("send to a broker that closed", EPIPE, ECONNRESET,
          sp_broker_send_get_pair(fd, "key", true, &err));
    FAILS("send again to a broker that closed", EPIPE, ECONNRESET,
          sp_broker_send_get_pair_nondirectional(fd, "key", &err));
    close(fd);

    /* End of file instead of an answer. */
    fd = accepted_and_closed(l, path);
    FAILS("receive end of file", ECONNRESET, 0, sp_broker_receive_set_pair(fd, &err));
    close(fd);

    /* Protocol errors. */
    fd = sp_broker_connect(path, false, NULL);
    c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = 2;
    m.size = 8;
    memcpy(msg, &m, sizeof msg);
    tu_check(c >= 0 && write(c, msg, sizeof msg) == (ssize_t) sizeof msg, "send a version 2 answer");
    FAILS("receive a version 2 answer", EPROTO, 0, sp_broker_receive_set_pair(fd, &err));
    close(c);
    close(fd);
    FAILS("validate a version 2 message", EPROTO, 0, sp_broker_message_validate(&m, NULL, 0, &err));
    FAILS("validate NULL", EINVAL, 0, sp_broker_message_validate(NULL, NULL, 0, &err));
    FAILS("receive on descriptor -1", EBADF, EINVAL, sp_broker_receive_set_pair(-1, &err));
    close(l);

    /* And the library still works. */
    if (pthread_create(&peer.th, NULL, peer_main, &peer) == 0) {
        char *err = NULL;

        fd = sp_broker_get_pair(broker_path, "sigpipe-key", false, &err);
        pthread_join(peer.th, NULL);
        tu_check(fd >= 0 && peer.fd >= 0 && tu_connected(fd, peer.fd),
                 "a pairing after all that (%s)", err ? err : "");
        free(err);
        if (fd >= 0) {
            close(fd);
        }
        if (peer.fd >= 0) {
            close(peer.fd);
        }
    }

    if (spy >= 0) {
        char buf[512];
        ssize_t n = read(spy, buf, sizeof buf - 1);

        tu_check(n < 0 && errno == EAGAIN, "nothing was written to stderr (%zd bytes: %.*s)", n,
                 n > 0 ? (int) n : 0, buf);
    }
    return tu_finish(&o);
}
