/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sighost.c - a host that blocks signals in main() and collects them with
 * sigwait() or signalfd(), as QEMU's main loop does with signalfd.
 *
 * Usage: sighost sigwait|signalfd SIGNAL COUNT [WAIT_MS]
 *
 * SIGNAL is USR1, USR2, ALRM, CHLD, TERM, HUP, PROF, RTMIN or RTMIN+N.  The
 * program
 * blocks USR1, USR2, ALRM, CHLD, TERM, HUP, PROF and RTMIN to RTMIN+2 in
 * main(), calls the library once, then COUNT times generates SIGNAL for
 * the process (kill(getpid()), or for CHLD a child that exits) and waits
 * up to WAIT_MS (default 2000) to collect it.  It prints "collected N lost M" and exits 0;
 * if a signal kills it, its exit status says which.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

static int
signal_by_name(const char *name)
{
    static const struct { const char *name; int sig; } names[] = {
        { "USR1", SIGUSR1 }, { "ALRM", SIGALRM }, { "CHLD", SIGCHLD },
        { "TERM", SIGTERM }, { "HUP", SIGHUP }, { "PROF", SIGPROF },
        { "USR2", SIGUSR2 },
    };
    size_t i;

    if (strcmp(name, "RTMIN") == 0) {
        return SIGRTMIN;
    }
    if (strncmp(name, "RTMIN+", 6) == 0 && atoi(name + 6) > 0 &&
        SIGRTMIN + atoi(name + 6) <= SIGRTMAX) {
        return SIGRTMIN + atoi(name + 6);
    }
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            return names[i].sig;
        }
    }
    return -1;
}

/* collect - wait up to @ms for @sig; 1 if it came, 0 if not. */
static int
collect(int sfd, const sigset_t *set, int sig, int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    siginfo_t si;

    if (sfd < 0) {
        int got;

        do {
            got = sigtimedwait(set, &si, &ts);
        } while (got < 0 && errno == EINTR);
        return got == sig;
    }
    for (;;) {
        struct pollfd p = { .fd = sfd, .events = POLLIN };
        struct signalfd_siginfo ssi;
        int n = poll(&p, 1, ms);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return 0;
        }
        /* Nonblocking: the signal that made it readable may have gone to
         * another thread by now, and a blocking read would then hang. */
        if (read(sfd, &ssi, sizeof ssi) != (ssize_t) sizeof ssi) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return 0;
        }
        return (int) ssi.ssi_signo == sig;
    }
}

int
main(int argc, char **argv)
{
    struct sp_broker_msg m;
    sigset_t set;
    int sig, count, i, sfd = -1, collected = 0, ms = 2000;

    if (argc == 5) {
        ms = atoi(argv[4]);
    }
    if ((argc != 4 && argc != 5) || ms <= 0 || (sig = signal_by_name(argv[2])) < 0 ||
        (count = atoi(argv[3])) <= 0 ||
        (strcmp(argv[1], "sigwait") != 0 && strcmp(argv[1], "signalfd") != 0)) {
        fprintf(stderr, "usage: sighost sigwait|signalfd SIGNAL COUNT [WAIT_MS]\n");
        return 2;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGALRM);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPROF);
    sigaddset(&set, SIGRTMIN);
    sigaddset(&set, SIGRTMIN + 1);
    sigaddset(&set, SIGRTMIN + 2);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("pthread_sigmask");
        return 2;
    }
    if (strcmp(argv[1], "signalfd") == 0 &&
        (sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
        perror("signalfd");
        return 2;
    }
    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    if (sp_broker_message_validate(&m, NULL, 0, NULL) != 0) {
        fprintf(stderr, "validate failed\n");
        return 2;
    }
    for (i = 0; i < count; i++) {
        pid_t child = -1;

        if (sig == SIGCHLD) {
            child = fork();
            if (child == 0) {
                _exit(0);
            }
        } else {
            kill(getpid(), sig);
        }
        collected += collect(sfd, &set, sig, ms);
        if (child > 0) {
            waitpid(child, NULL, 0);
        }
    }
    printf("collected %d lost %d\n", collected, count - collected);
    return 0;
}
