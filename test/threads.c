//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * threads.c - a host with 16 threads calling sp_broker_get_pair() at once:
 * 8 keys, a SERVER and a CLIENT thread for each.  Every thread must get a
 * descriptor connected to the other thread of its key, and to no other.
 *
 * Usage: threads --broker=PATH [--fork=KIND --when=before|after] [--report-fd=N]
 *
 * The broker must serve no other program (the keys are short and fixed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#include "testutil.h"

#define N_THREADS 16
#define ROUNDS 8

static const char *broker_path;
static pthread_barrier_t start;

struct worker {
    pthread_t th;
    int index;      /* 0..15: key index/2, SERVER when even */
    int fd;
    int errnum;
    char *err;
    char peer;      /* the index byte the peer sent */
    bool exchanged;
};

static char err_sentinel;

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    char key[32];

    snprintf(key, sizeof key, "threads-key-%d", w->index / 2);
    w->err = &err_sentinel;
    pthread_barrier_wait(&start);
    errno = 0;
    w->fd = sp_broker_get_pair(broker_path, key, w->index % 2 == 0, &w->err);
    w->errnum = errno;
    if (w->fd >= 0) {
        char me = (char) ('A' + w->index);

        /* Both sides write first, then read: a socket buffers one byte. */
        w->exchanged = write(w->fd, &me, 1) == 1 && read(w->fd, &w->peer, 1) == 1;
    }
    return NULL;
}

/* round_of_16 - run the 16 threads once and check what each got. */
static void
round_of_16(const char *label)
{
    struct worker w[N_THREADS];
    int i;

    memset(w, 0, sizeof w);
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (i = 0; i < N_THREADS; i++) {
        w[i].index = i;
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0) {
            tu_check(false, "%s: pthread_create", label);
            exit(tu_finish(&(struct tu_opts){ .report_fd = -1 }));
        }
    }
    for (i = 0; i < N_THREADS; i++) {
        pthread_join(w[i].th, NULL);
    }
    pthread_barrier_destroy(&start);
    for (i = 0; i < N_THREADS; i++) {
        char want = (char) ('A' + (i ^ 1));

        if (!tu_check(w[i].fd >= 0, "%s: thread %d (%s) gets a pair (errno %d, %s)", label, i,
                      i % 2 ? "client" : "server", w[i].errnum,
                      w[i].err != &err_sentinel && w[i].err ? w[i].err : "")) {
            if (w[i].err != &err_sentinel) {
                free(w[i].err);
            }
            continue;
        }
        tu_check(w[i].err == &err_sentinel, "%s: thread %d: *err untouched", label, i);
        tu_check(tu_cloexec(w[i].fd), "%s: thread %d: close-on-exec", label, i);
        tu_check(w[i].exchanged && w[i].peer == want,
                 "%s: thread %d is connected to thread %d (heard '%c', want '%c')", label, i,
                 i ^ 1, w[i].exchanged ? w[i].peer : '?', want);
    }
    for (i = 0; i < N_THREADS; i++) {
        if (w[i].fd >= 0) {
            close(w[i].fd);
        }
    }
}

int
main(int argc, char **argv)
{
    struct tu_opts o = { .report_fd = -1 };
    const char *v;
    int i, fds;

    for (i = 1; i < argc; i++) {
        if (tu_common_opt(&o, argv[i])) {
            continue;
        }
        if ((v = tu_opt_value(argv[i], "broker")) != NULL) {
            broker_path = v;
        } else {
            fprintf(stderr, "threads: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker_path) {
        fprintf(stderr, "usage: threads --broker=PATH [--fork=KIND --when=WHEN] [--report-fd=N]\n");
        return 2;
    }
    if (tu_after(&o)) {
        round_of_16("before fork");
    }
    tu_fork(&o);
    fds = tu_fd_count();
    for (i = 1; i <= ROUNDS; i++) {
        char label[64];

        snprintf(label, sizeof label, "%sround %d", o.fork_kind ? "in the child, " : "", i);
        round_of_16(label);
    }
    tu_check(tu_fd_count() == fds, "no descriptor leaked (%d, then %d)", fds, tu_fd_count());
    return tu_finish(&o);
}
