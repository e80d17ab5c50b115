/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testutil.h - what the C test programs of libspbroker share: TAP-style
 * checks, descriptor counting, and running the program in a forked child
 * that reports its result through a pipe.
 *
 * Every program takes the common options
 *
 *   --fork=fork|daemon|sysfork   run the checks in a child made by fork(),
 *                                daemon(3) or syscall(SYS_fork); the parent
 *                                exits at once
 *   --when=before|after          fork before any library call, or after a
 *                                successful one (the program decides which)
 *   --report-fd=N                write "ok" or "fail N" there at the end
 *   --watchdog=SECONDS           give up after this long (see tu_watchdog)
 *
 * The harness (harness_test.go) always passes --report-fd, so a result is
 * read the same way whether or not the process that made it was forked.
 */
#ifndef SPBROKER_TESTUTIL_H
#define SPBROKER_TESTUTIL_H 1

#include <stdbool.h>

/* Common options; fork_kind is NULL when the checks run in this process. */
struct tu_opts {
    const char *fork_kind;
    const char *when;
    int report_fd;
    int watchdog;   /* seconds; 0 for TU_WATCHDOG_SECONDS */
};

/* How long a program may run before its watchdog ends it (--watchdog=N). */
#define TU_WATCHDOG_SECONDS 40

/*
 * tu_common_opt - take @arg if it is a common option.
 * Return: true if it was one (and was valid); exits on an invalid value.
 */
bool tu_common_opt(struct tu_opts *o, const char *arg);

/*
 * tu_opt_value - the value of "--@name=VALUE" in @arg, or NULL.
 */
const char *tu_opt_value(const char *arg, const char *name);

/* tu_after - whether the program must make a library call before forking. */
bool tu_after(const struct tu_opts *o);

/*
 * tu_fork - fork as @o says; only the child returns, with its watchdog
 * started.  Without --fork it starts the watchdog and returns.  The parent (or daemon(3)) exits with status 0; a failed
 * fork is reported through the report descriptor and ends the program.
 * daemon(3) is called as daemon(0, 1): it moves to "/" but keeps stdio, so
 * paths given to the program must be absolute.
 */
void tu_fork(const struct tu_opts *o);

/*
 * tu_check - record one check; prints "ok N - ..." or "not ok N - ...".
 * Return: @cond.
 */
bool tu_check(bool cond, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* tu_diag - print a "# ..." line. */
void tu_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* tu_failures - how many checks have failed so far. */
int tu_failures(void);

/*
 * tu_watchdog - end the program if it has not called tu_finish() within
 * @seconds: print "Bail out!" with the last check made, report "fail
 * watchdog" and exit with status 3.  A check that blocks for good then
 * says where it blocked.  Start it after tu_fork(): threads do not survive
 * a fork.
 */
void tu_watchdog(const struct tu_opts *o, int seconds);

/* tu_helper_threads - how many threads of its own testutil runs (0 or 1). */
int tu_helper_threads(void);

/*
 * tu_finish - print the summary, write "ok" or "fail N" to the report
 * descriptor and close it.
 * Return: the exit status for main: 0 if every check passed, else 1.
 */
int tu_finish(const struct tu_opts *o);

/*
 * tu_fd_count - how many descriptors this process has open, not counting
 * those a Go runtime keeps for itself (see testutil.c).
 */
int tu_fd_count(void);

/*
 * tu_connected - whether @a and @b are the two ends of one connection:
 * a byte written on each arrives on the other (within 5 s).
 */
bool tu_connected(int a, int b);

/*
 * tu_exchange - write byte @out on @fd and read one byte, which must be
 * @in, waiting at most 10 s.  For peers in different threads or processes.
 */
bool tu_exchange(int fd, char out, char in);

/* tu_cloexec - whether @fd has FD_CLOEXEC. */
bool tu_cloexec(int fd);

/* tu_nonblocking - whether @fd has O_NONBLOCK. */
bool tu_nonblocking(int fd);

#endif /* SPBROKER_TESTUTIL_H */
