//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testutil.c - helpers shared by the C test programs; see testutil.h.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static pthread_mutex_t tu_lock = PTHREAD_MUTEX_INITIALIZER;
static int tu_n;
static int tu_failed;
static char tu_last[1024]; /* the last check, for the watchdog */

static pthread_cond_t tu_dog_cond = PTHREAD_COND_INITIALIZER;
static pthread_t tu_dog;
static bool tu_dog_running;
static bool tu_dog_stop;
static int tu_dog_seconds;
static int tu_dog_report_fd = -1;

const char *
tu_opt_value(const char *arg, const char *name)
{
    size_t n = strlen(name);

    if (strncmp(arg, "--", 2) != 0 || strncmp(arg + 2, name, n) != 0 ||
        arg[2 + n] != '=') {
        return NULL;
    }
    return arg + 3 + n;
}

static void
tu_usage_exit(const char *what, const char *arg)
{
    fprintf(stderr, "bad %s: %s\n", what, arg);
    exit(2);
}

bool
tu_common_opt(struct tu_opts *o, const char *arg)
{
    const char *v;

    if ((v = tu_opt_value(arg, "fork")) != NULL) {
        if (strcmp(v, "fork") != 0 && strcmp(v, "daemon") != 0 &&
            strcmp(v, "sysfork") != 0) {
            tu_usage_exit("--fork", v);
        }
        o->fork_kind = v;
        return true;
    }
    if ((v = tu_opt_value(arg, "when")) != NULL) {
        if (strcmp(v, "before") != 0 && strcmp(v, "after") != 0) {
            tu_usage_exit("--when", v);
        }
        o->when = v;
        return true;
    }
    if ((v = tu_opt_value(arg, "watchdog")) != NULL) {
        o->watchdog = atoi(v);
        if (o->watchdog <= 0) {
            tu_usage_exit("--watchdog", v);
        }
        return true;
    }
    if ((v = tu_opt_value(arg, "report-fd")) != NULL) {
        char *end;
        long fd = strtol(v, &end, 10);

        if (*end != '\0' || fd < 0 || fcntl((int) fd, F_GETFD) < 0) {
            tu_usage_exit("--report-fd", v);
        }
        o->report_fd = (int) fd;
        return true;
    }
    return false;
}

bool
tu_after(const struct tu_opts *o)
{
    return o->when && strcmp(o->when, "after") == 0;
}

static void
tu_report(const struct tu_opts *o, const char *text)
{
    if (o->report_fd >= 0) {
        ssize_t n = write(o->report_fd, text, strlen(text));

        (void) n; /* the harness sees a short report as a failure */
        close(o->report_fd);
    }
}

void
tu_fork(const struct tu_opts *o)
{
    pid_t pid;

    if (!o->fork_kind) {
        tu_watchdog(o, o->watchdog > 0 ? o->watchdog : TU_WATCHDOG_SECONDS);
        return;
    }
    fflush(stdout);
    fflush(stderr);
    if (strcmp(o->fork_kind, "daemon") == 0) {
        if (daemon(0, 1) != 0) {
            fprintf(stderr, "daemon: %s\n", strerror(errno));
            tu_report(o, "fail daemon\n");
            exit(1);
        }
        tu_watchdog(o, o->watchdog > 0 ? o->watchdog : TU_WATCHDOG_SECONDS);
        return;
    }
    if (strcmp(o->fork_kind, "sysfork") == 0) {
        pid = (pid_t) syscall(SYS_fork);
    } else {
        pid = fork();
    }
    if (pid < 0) {
        fprintf(stderr, "%s: %s\n", o->fork_kind, strerror(errno));
        tu_report(o, "fail fork\n");
        exit(1);
    }
    if (pid > 0) {
        _exit(0);
    }
    tu_watchdog(o, o->watchdog > 0 ? o->watchdog : TU_WATCHDOG_SECONDS);
}

bool
tu_check(bool cond, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&tu_lock);
    tu_n++;
    if (!cond) {
        tu_failed++;
    }
    va_start(ap, fmt);
    vsnprintf(tu_last, sizeof tu_last, fmt, ap);
    va_end(ap);
    printf("%sok %d - %s\n", cond ? "" : "not ", tu_n, tu_last);
    fflush(stdout);
    pthread_mutex_unlock(&tu_lock);
    return cond;
}

void
tu_diag(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&tu_lock);
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&tu_lock);
}

int
tu_failures(void)
{
    int n;

    pthread_mutex_lock(&tu_lock);
    n = tu_failed;
    pthread_mutex_unlock(&tu_lock);
    return n;
}

static void *
tu_dog_main(void *arg)
{
    struct timespec deadline;
    int r = 0;

    (void) arg;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += tu_dog_seconds;
    pthread_mutex_lock(&tu_lock);
    while (!tu_dog_stop && r != ETIMEDOUT) {
        r = pthread_cond_timedwait(&tu_dog_cond, &tu_lock, &deadline);
    }
    if (!tu_dog_stop) {
        static const char fail[] = "fail watchdog\n";
        ssize_t n;

        printf("Bail out! watchdog: still running after %d s; the last check was %d (%s)\n",
               tu_dog_seconds, tu_n, tu_last);
        fflush(stdout);
        if (tu_dog_report_fd >= 0) {
            n = write(tu_dog_report_fd, fail, sizeof fail - 1);
            (void) n;
        }
        _exit(3);
    }
    pthread_mutex_unlock(&tu_lock);
    return NULL;
}

void
tu_watchdog(const struct tu_opts *o, int seconds)
{
    sigset_t all, old;

    tu_dog_seconds = seconds;
    tu_dog_report_fd = o->report_fd;
    tu_dog_stop = false;
    /* The watchdog takes no signal: they are the program's to handle. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    tu_dog_running = pthread_create(&tu_dog, NULL, tu_dog_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int
tu_helper_threads(void)
{
    return tu_dog_running ? 1 : 0;
}

static void
tu_watchdog_stop(void)
{
    if (!tu_dog_running) {
        return;
    }
    pthread_mutex_lock(&tu_lock);
    tu_dog_stop = true;
    pthread_cond_signal(&tu_dog_cond);
    pthread_mutex_unlock(&tu_lock);
    pthread_join(tu_dog, NULL);
    tu_dog_running = false;
}

int
tu_finish(const struct tu_opts *o)
{
    char buf[64];
    int failed = tu_failures();

    tu_watchdog_stop();

    printf("1..%d\n", tu_n);
    printf("# %d passed, %d failed\n", tu_n - failed, failed);
    fflush(stdout);
    if (tu_n == 0) {
        tu_report(o, "fail no checks\n");
        return 1;
    }
    if (failed == 0) {
        tu_report(o, "ok\n");
        return 0;
    }
    snprintf(buf, sizeof buf, "fail %d\n", failed);
    tu_report(o, buf);
    return 1;
}

/*
 * runtime_owned - whether descriptor @name of this process belongs to a Go
 * runtime: the cgroup files it keeps open to follow the CPU limit, files
 * under /sys and /proc it reads while it starts (on a thread of its own,
 * alongside main()), and its network poller.  A Go runtime opens these on
 * its own schedule, and no function of the library opens any of them.
 * A descriptor that is gone by the time it is looked at was closed by
 * another thread, which in these single-threaded tests is the runtime's.
 */
static bool
runtime_owned(const char *name)
{
    char path[64], target[256];
    ssize_t n;

    snprintf(path, sizeof path, "/proc/self/fd/%s", name);
    n = readlink(path, target, sizeof target - 1);
    if (n < 0) {
        return errno == ENOENT;
    }
    target[n] = '\0';
    return strncmp(target, "/sys/", 5) == 0 ||
           strncmp(target, "/proc/", 6) == 0 ||
           strcmp(target, "anon_inode:[eventpoll]") == 0 ||
           strcmp(target, "anon_inode:[eventfd]") == 0;
}

int
tu_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d) && !runtime_owned(e->d_name)) {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* tu_read1 - read one byte from @fd within @ms milliseconds. */
static bool
tu_read1(int fd, char *c, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r;

    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    if (r != 1) {
        return false;
    }
    return read(fd, c, 1) == 1;
}

bool
tu_connected(int a, int b)
{
    char c;

    if (write(a, "A", 1) != 1 || !tu_read1(b, &c, 5000) || c != 'A') {
        return false;
    }
    if (write(b, "B", 1) != 1 || !tu_read1(a, &c, 5000) || c != 'B') {
        return false;
    }
    return true;
}

bool
tu_exchange(int fd, char out, char in)
{
    char c;

    return write(fd, &out, 1) == 1 && tu_read1(fd, &c, 10000) && c == in;
}

bool
tu_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);

    return fl >= 0 && (fl & FD_CLOEXEC);
}

bool
tu_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl >= 0 && (fl & O_NONBLOCK);
}
