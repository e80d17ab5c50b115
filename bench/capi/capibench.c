/* SPDX-License-Identifier: Apache-2.0 */
/*
 * capibench - what libspbroker costs a C host: threads, time per call and
 * time per pairing.  Link it against either build of libspbroker.a; with
 * the Go archive, "--child" repeats the measurements in a forked child,
 * where every call takes the pure C path.
 *
 *   capibench SOCKET [--child] [-n CALLS] [-p PAIRS]
 *
 * Prints one line of key=value pairs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#include "../../test/proc_threads.h"

static int threads_at_start;

/* The thread count as early as a constructor can take it.  Whether the Go
 * runtime's constructor ran first depends on link order, so main() counts
 * again. */
__attribute__((constructor)) static void
early(void)
{
    threads_at_start = proc_threads();
}

static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

struct pair_arg {
    const char *path;
    long pairs;
    int failed;
};

static void
make_key(char *buf, size_t len, long seq)
{
    snprintf(buf, len, "capibench-%d-%ld", (int) getpid(), seq);
}

/* The server side of every pairing, on one long-lived thread, as a host's
 * own threads would call the library. */
static void *
server_side(void *p)
{
    struct pair_arg *a = p;
    char key[64];
    long i;

    for (i = 0; i < a->pairs; i++) {
        int fd;

        make_key(key, sizeof key, i);
        fd = sp_broker_get_pair(a->path, key, true, NULL);
        if (fd < 0) {
            a->failed++;
            continue;
        }
        close(fd);
    }
    return NULL;
}

/* Runs @pairs pairings between a server thread and this thread; returns
 * the mean time per pairing in microseconds, or -1. */
static double
pairings(const char *path, long pairs)
{
    struct pair_arg a = { .path = path, .pairs = pairs };
    pthread_t t;
    char key[64];
    double t0 = now_us();
    long i;
    int failed = 0;

    if (pthread_create(&t, NULL, server_side, &a) != 0) {
        return -1;
    }
    for (i = 0; i < pairs; i++) {
        int fd;

        make_key(key, sizeof key, i);
        fd = sp_broker_get_pair(path, key, false, NULL);
        if (fd < 0) {
            failed++;
            continue;
        }
        close(fd);
    }
    pthread_join(t, NULL);
    if (failed || a.failed) {
        return -1;
    }
    return (now_us() - t0) / (double) pairs;
}

static int
measure(const char *path, long calls, long pairs, const char *label)
{
    struct sp_broker_msg msg;
    enum sp_broker_request want = SP_BROKER_SET_PAIR;
    int before = proc_threads(), after;
    double t0, first_us, call_ns, pair_us;
    long i;

    memset(&msg, 0, sizeof msg);
    msg.request = SP_BROKER_SET_PAIR;
    msg.flags = SP_BROKER_PROTOCOL_VERSION;
    msg.size = 8;
    msg.n_fds = 1;

    t0 = now_us();
    if (sp_broker_message_validate(&msg, &want, 1, NULL) != 0) {
        fprintf(stderr, "validate failed: %s\n", strerror(errno));
        return 1;
    }
    first_us = now_us() - t0;
    after = proc_threads();

    t0 = now_us();
    for (i = 0; i < calls; i++) {
        if (sp_broker_message_validate(&msg, &want, 1, NULL) != 0) {
            return 1;
        }
    }
    call_ns = (now_us() - t0) * 1e3 / (double) calls;

    pair_us = pairings(path, pairs);
    if (pair_us < 0) {
        fprintf(stderr, "a pairing failed\n");
        return 1;
    }

    printf("path=%s threads_before_first_call=%d threads_after_first_call=%d "
           "first_call_us=%.1f validate_ns_per_call=%.1f "
           "pairing_us=%.1f\n",
           label, before, after, first_us, call_ns, pair_us);
    fflush(stdout);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *path;
    long calls = 1000000, pairs = 2000;
    bool child = false;
    int opt;

    while ((opt = getopt(argc, argv, "n:p:c")) != -1) {
        switch (opt) {
        case 'n': calls = atol(optarg); break;
        case 'p': pairs = atol(optarg); break;
        case 'c': child = true; break;
        default:
            fprintf(stderr, "usage: %s [-c] [-n CALLS] [-p PAIRS] SOCKET\n", argv[0]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: %s [-c] [-n CALLS] [-p PAIRS] SOCKET\n", argv[0]);
        return 2;
    }
    path = argv[optind];
    printf("threads_at_constructor=%d threads_at_main=%d\n",
           threads_at_start, proc_threads());
    if (!child) {
        return measure(path, calls, pairs, "default");
    }

    /* In a forked child every call takes the pure C path. */
    fflush(stdout);
    pid_t pid = fork();
    int status;

    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        _exit(measure(path, calls, pairs, "forked-child"));
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
        return 1;
    }
    return WEXITSTATUS(status);
}
