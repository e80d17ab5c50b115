//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigmask.c - a host that blocks signals in main() (to collect them with
 * sigwait or signalfd) finds its signal mask unchanged after every call.
 *
 * Usage: sigmask --broker=PATH [--runtime-free] [--report-fd=N]
 *
 * The Go runtime may change the mask of a thread that calls into Go
 * (golang/go#51676); the library must restore it.  With --runtime-free the
 * program also checks the promises of the runtime-free build: one thread,
 * no signal handlers installed, and blocked signals delivered to the host's
 * sigtimedwait() -- none of which a Go runtime allows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#include "proc_threads.h"
#include "testutil.h"

static const char *broker_path;
static sigset_t blocked;

/* same_mask - whether the calling thread's mask is exactly @blocked. */
static bool
same_mask(char *diff, size_t cap)
{
    sigset_t cur;
    int s;
    size_t n = 0;

    diff[0] = '\0';
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    for (s = 1; s <= SIGRTMAX; s++) {
        if (sigismember(&cur, s) != sigismember(&blocked, s) && n + 24 < cap) {
            n += (size_t) snprintf(diff + n, cap - n, " %s%d",
                                   sigismember(&cur, s) ? "+" : "-", s);
        }
    }
    return diff[0] == '\0';
}

static void
mask_kept(const char *what)
{
    char diff[256];
    bool same = same_mask(diff, sizeof diff);

    tu_check(same, "mask unchanged after %s%s%s", what, same ? "" : ": changed", diff);
}

static void *
server_main(void *arg)
{
    int *fd = arg;
    char diff[256];
    bool same;

    *fd = sp_broker_get_pair(broker_path, "sigmask-key", true, NULL);
    same = same_mask(diff, sizeof diff);
    tu_check(same, "mask unchanged in a second thread after get_pair%s", diff);
    return NULL;
}

/* default_handler - whether @sig has its default disposition. */
static bool
default_handler(int sig)
{
    struct sigaction sa;

    return sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL;
}

/* collects - whether the pending, blocked @sig reaches sigtimedwait(). */
static bool
collects(int sig)
{
    struct timespec ts = { .tv_sec = 5 };
    siginfo_t si;

    return sigtimedwait(&blocked, &si, &ts) == sig;
}

int
main(int argc, char **argv)
{
    struct tu_opts o = { .report_fd = -1 };
    bool runtime_free = false;
    const char *v;
    struct sp_broker_msg m;
    pthread_t th;
    int i, fd, peer = -1, server = -1, start_threads = proc_threads();
    char *err = NULL;

    for (i = 1; i < argc; i++) {
        if (tu_common_opt(&o, argv[i])) {
            continue;
        }
        if ((v = tu_opt_value(argv[i], "broker")) != NULL) {
            broker_path = v;
        } else if (strcmp(argv[i], "--runtime-free") == 0) {
            runtime_free = true;
        } else {
            fprintf(stderr, "sigmask: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker_path) {
        fprintf(stderr, "usage: sigmask --broker=PATH [--runtime-free] [--report-fd=N]\n");
        return 2;
    }

    tu_fork(&o);
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGUSR2);
    sigaddset(&blocked, SIGCHLD);
    sigaddset(&blocked, SIGALRM);
    sigaddset(&blocked, SIGPROF);
    sigaddset(&blocked, SIGTRAP);
    sigaddset(&blocked, SIGRTMIN + 2);
    pthread_sigmask(SIG_SETMASK, &blocked, NULL);

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    tu_check(sp_broker_message_validate(&m, NULL, 0, NULL) == 0, "validate a SET_PAIR");
    mask_kept("the first call (validate)");
    m.flags = 0;
    tu_check(sp_broker_message_validate(&m, NULL, 0, &err) == -1, "validate version 0");
    free(err);
    err = NULL;
    mask_kept("a failed validate");
    tu_check(sp_broker_connect("/nonexistent/one.socket", false, &err) == -1, "connect fails");
    free(err);
    err = NULL;
    mask_kept("a failed connect");

    fd = sp_broker_connect(broker_path, true, NULL);
    tu_check(fd >= 0, "connect");
    mask_kept("connect");
    tu_check(sp_broker_send_get_pair(fd, "sigmask-key", false, NULL) == 0, "send_get_pair");
    mask_kept("send_get_pair");
    tu_check(sp_broker_receive_set_pair(fd, NULL) == -1 && errno == EAGAIN, "receive: EAGAIN");
    mask_kept("a receive that found nothing");
    tu_check(sp_broker_send_get_pair(fd, "", false, NULL) == -1, "send an empty key");
    mask_kept("a failed send");

    tu_check(pthread_create(&th, NULL, server_main, &server) == 0, "start the other side");
    pthread_join(th, NULL);
    mask_kept("the other side's get_pair in another thread");
    for (i = 0; i < 500 && peer < 0; i++) {
        struct timespec ts = { .tv_nsec = 10 * 1000 * 1000 };

        peer = sp_broker_receive_set_pair(fd, NULL);
        if (peer < 0 && errno != EAGAIN) {
            break;
        }
        if (peer < 0) {
            nanosleep(&ts, NULL);
        }
    }
    tu_check(peer >= 0 && server >= 0 && tu_connected(peer, server), "paired");
    mask_kept("receive_set_pair");
    close(fd);
    if (peer >= 0) {
        close(peer);
    }
    if (server >= 0) {
        close(server);
    }

    if (runtime_free) {
        pid_t child;

        /* Beside the watchdog's. */
        tu_check(start_threads == 1 && proc_threads() == 1 + tu_helper_threads(),
                 "runtime-free: one thread, at start and after the calls (%d, %d)",
                 start_threads, proc_threads() - tu_helper_threads());
        tu_check(default_handler(SIGPIPE) && default_handler(SIGSEGV) &&
                     default_handler(SIGBUS) && default_handler(SIGFPE) &&
                     default_handler(SIGURG) && default_handler(SIGCHLD) &&
                     default_handler(SIGUSR1),
                 "runtime-free: no signal handler installed");
        kill(getpid(), SIGUSR1);
        tu_check(collects(SIGUSR1), "runtime-free: a blocked SIGUSR1 reaches sigtimedwait");
        child = fork();
        if (child == 0) {
            _exit(0);
        }
        tu_check(child > 0 && collects(SIGCHLD),
                 "runtime-free: a blocked SIGCHLD reaches sigtimedwait");
        if (child > 0) {
            waitpid(child, NULL, 0);
        }
    }
    return tu_finish(&o);
}
