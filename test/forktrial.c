//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * forktrial.c - one trial of a host that forks and uses the library in the
 * child.  The harness runs it as hundreds of fresh processes per scenario,
 * each with a time limit: without the library's fork detection a good part
 * of them hang (see shared/design/c-library.md).
 *
 * Usage: forktrial --broker=PATH --key=KEY --fork=fork|daemon|sysfork
 *                  --when=before|after [--busy] --report-fd=N
 *
 *   --when=before  fork first thing in main(), while the Go runtime may
 *                  still be starting
 *   --when=after   fork after successful library calls (Go path)
 *   --busy         before forking, start 4 threads that call
 *                  sp_broker_message_validate() (Go path) in a loop, and
 *                  keep them running while the parent pairs
 *
 * The child pairs with sp_broker_get_pair(KEY, client) -- the pure C path
 * -- says 'c', hears 'p', writes "ok" to the report descriptor and exits 0.
 * With fork and sysfork the parent is the other side: it pairs with
 * sp_broker_get_pair(KEY, server) on the Go path, says 'p', hears 'c', and
 * waits for the child.  daemon(3) leaves no parent, so the harness is the
 * other side.  Exit status 0 and "ok" reported: the trial passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#include "testutil.h"

#define N_BUSY 4

static atomic_int busy_stop;
static atomic_int busy_calls[N_BUSY];
static atomic_int busy_bad;

static void *
busy_main(void *arg)
{
    atomic_int *calls = arg;
    struct sp_broker_msg m;

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    while (!atomic_load(&busy_stop)) {
        if (sp_broker_message_validate(&m, NULL, 0, NULL) != 0) {
            atomic_fetch_add(&busy_bad, 1);
        }
        atomic_fetch_add(calls, 1);
    }
    return NULL;
}

static void
report(int fd, const char *text)
{
    if (fd >= 0) {
        ssize_t n = write(fd, text, strlen(text));

        (void) n;
        close(fd);
    }
}

/* pair - get a pair under @key and exchange one byte each way. */
static bool
pair(const char *path, const char *key, bool server, const char *who)
{
    char *err = NULL;
    int fd = sp_broker_get_pair(path, key, server, &err);
    bool ok;

    if (fd < 0) {
        fprintf(stderr, "forktrial: %s: sp_broker_get_pair: %s (errno %d)\n", who,
                err ? err : "", errno);
        free(err);
        return false;
    }
    ok = tu_exchange(fd, server ? 'p' : 'c', server ? 'c' : 'p');
    if (!ok) {
        fprintf(stderr, "forktrial: %s: no exchange with the peer\n", who);
    }
    close(fd);
    return ok;
}

int
main(int argc, char **argv)
{
    struct tu_opts o = { .report_fd = -1 };
    const char *broker = NULL, *key = NULL, *v;
    bool busy = false, ok = true;
    pthread_t th[N_BUSY];
    pid_t pid;
    int i, status;

    for (i = 1; i < argc; i++) {
        if (tu_common_opt(&o, argv[i])) {
            continue;
        }
        if ((v = tu_opt_value(argv[i], "broker")) != NULL) {
            broker = v;
        } else if ((v = tu_opt_value(argv[i], "key")) != NULL) {
            key = v;
        } else if (strcmp(argv[i], "--busy") == 0) {
            busy = true;
        } else {
            fprintf(stderr, "forktrial: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker || !key || !o.fork_kind || !o.when) {
        fprintf(stderr, "usage: forktrial --broker=PATH --key=KEY --fork=KIND --when=WHEN "
                        "[--busy] --report-fd=N\n");
        return 2;
    }

    if (busy) {
        for (i = 0; i < N_BUSY; i++) {
            if (pthread_create(&th[i], NULL, busy_main, &busy_calls[i]) != 0) {
                fprintf(stderr, "forktrial: pthread_create failed\n");
                return 1;
            }
        }
        /* Fork only once every thread is inside its loop of Go calls. */
        for (i = 0; i < N_BUSY; i++) {
            while (atomic_load(&busy_calls[i]) < 10) {
                sched_yield();
            }
        }
    }
    if (tu_after(&o)) {
        struct sp_broker_msg m;
        char *err = NULL;
        int fd;

        memset(&m, 0, sizeof m);
        if (sp_broker_message_validate(&m, NULL, 0, &err) != -1 || !err) {
            fprintf(stderr, "forktrial: validate before fork\n");
            return 1;
        }
        free(err);
        fd = sp_broker_connect(broker, false, NULL);
        if (fd < 0) {
            fprintf(stderr, "forktrial: connect before fork: errno %d\n", errno);
            return 1;
        }
        close(fd);
    }

    fflush(stdout);
    fflush(stderr);
    if (strcmp(o.fork_kind, "daemon") == 0) {
        if (daemon(0, 1) != 0) {
            fprintf(stderr, "forktrial: daemon: %s\n", strerror(errno));
            return 1;
        }
        pid = 0;
    } else if (strcmp(o.fork_kind, "sysfork") == 0) {
        pid = (pid_t) syscall(SYS_fork);
    } else {
        pid = fork();
    }
    if (pid < 0) {
        fprintf(stderr, "forktrial: %s: %s\n", o.fork_kind, strerror(errno));
        return 1;
    }

    if (pid == 0) {
        if (pair(broker, key, false, "child")) {
            report(o.report_fd, "ok\n");
            exit(0);
        }
        report(o.report_fd, "fail\n");
        exit(1);
    }

    /* The parent, on the Go path, is the child's peer. */
    if (o.report_fd >= 0) {
        close(o.report_fd);
    }
    ok = pair(broker, key, true, "parent");
    if (busy) {
        atomic_store(&busy_stop, 1);
        for (i = 0; i < N_BUSY; i++) {
            pthread_join(th[i], NULL);
        }
        if (atomic_load(&busy_bad)) {
            fprintf(stderr, "forktrial: %d validate calls failed in the busy threads\n",
                    atomic_load(&busy_bad));
            ok = false;
        }
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "forktrial: waitpid: %s\n", strerror(errno));
            return 1;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "forktrial: the child ended with status 0x%x\n", status);
        ok = false;
    }
    return ok ? 0 : 1;
}
