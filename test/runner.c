//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * runner.c - run one test program and every process it leaves behind,
 * with a time limit.
 *
 * Usage: runner TIMEOUT_MS PROGRAM [ARG...]
 *
 * The fork tests start programs whose parent exits at once and whose child
 * (made by fork(), daemon(3) or a raw SYS_fork) goes on alone.  Such an
 * orphan would be re-parented to init, which on some machines never reaps
 * it, and a hung one would outlive the test.  The runner makes itself a
 * child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every orphan of the
 * program comes back to it; it reaps them all and exits only when none is
 * left.  When the time limit passes first, it kills every process below it
 * with SIGKILL and reaps them too.
 *
 * Exit status: the program's own exit status; 128+N if a signal N killed
 * it; 124 on a timeout (the program and all its descendants are gone by
 * then); 125 if the runner itself failed; 127 if PROGRAM could not be run.
 * The runner says why on stderr when it does not pass the status through.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;

static void
on_alarm(int sig)
{
    (void) sig;
    timed_out = 1;
}

/* parent_of - the parent pid of process @pid, or -1 if it is gone. */
static pid_t
parent_of(pid_t pid)
{
    char path[64], buf[512];
    FILE *f;
    char *p;
    long ppid;

    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    f = fopen(path, "re");
    if (!f) {
        return -1;
    }
    p = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!p) {
        return -1;
    }
    /* "pid (comm) state ppid ...": comm may hold anything, even ')'. */
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %*c %ld", &ppid) != 1) {
        return -1;
    }
    return (pid_t) ppid;
}

/*
 * kill_children - send SIGKILL to every process whose parent is this one.
 * Return: how many were sent a signal.
 */
static int
kill_children(void)
{
    pid_t self = getpid();
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (!d) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);

        if (*end != '\0' || pid <= 0) {
            continue;
        }
        if (parent_of((pid_t) pid) == self && kill((pid_t) pid, SIGKILL) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

int
main(int argc, char **argv)
{
    struct sigaction sa;
    struct itimerval it;
    long timeout_ms;
    pid_t child, pid;
    int status, child_status = -1, killed = 0;
    char *end;

    if (argc < 3) {
        fprintf(stderr, "usage: runner TIMEOUT_MS PROGRAM [ARG...]\n");
        return 125;
    }
    timeout_ms = strtol(argv[1], &end, 10);
    if (*end != '\0' || timeout_ms <= 0) {
        fprintf(stderr, "runner: bad timeout %s\n", argv[1]);
        return 125;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        perror("runner: prctl(PR_SET_CHILD_SUBREAPER)");
        return 125;
    }

    /* No SA_RESTART: the alarm must interrupt waitpid(). */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0) {
        perror("runner: sigaction");
        return 125;
    }

    child = fork();
    if (child < 0) {
        perror("runner: fork");
        return 125;
    }
    if (child == 0) {
        signal(SIGALRM, SIG_DFL);
        execvp(argv[2], argv + 2);
        fprintf(stderr, "runner: exec %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }

    memset(&it, 0, sizeof it);
    it.it_value.tv_sec = timeout_ms / 1000;
    it.it_value.tv_usec = (timeout_ms % 1000) * 1000;
    /* Then every 100 ms: an alarm that lands just before waitpid() does not
     * interrupt it, the next one will. */
    it.it_interval.tv_usec = 100 * 1000;
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) {
        perror("runner: setitimer");
        kill(child, SIGKILL);
    }

    /* Reap the program and every orphan that comes back to us. */
    for (;;) {
        if (timed_out) {
            killed += kill_children();
        }
        pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ECHILD) {
                break;
            }
            perror("runner: waitpid");
            return 125;
        }
        if (pid == child) {
            child_status = status;
        }
    }

    if (timed_out) {
        fprintf(stderr, "runner: %s: timed out after %ld ms; killed %d process(es)\n",
                argv[2], timeout_ms, killed);
        return 124;
    }
    if (WIFEXITED(child_status)) {
        return WEXITSTATUS(child_status);
    }
    if (WIFSIGNALED(child_status)) {
        fprintf(stderr, "runner: %s: killed by signal %d (%s)\n", argv[2],
                WTERMSIG(child_status), strsignal(WTERMSIG(child_status)));
        return 128 + WTERMSIG(child_status);
    }
    fprintf(stderr, "runner: %s: unexpected wait status 0x%x\n", argv[2], child_status);
    return 125;
}
