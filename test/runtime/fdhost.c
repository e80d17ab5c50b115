/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fdhost.c - a host that closes descriptors it did not open, as daemons
 * do: it closes standard error at the start of main(), then uses the
 * library.
 *
 * Usage: fdhost [--keep-stderr]
 *
 * Prints one line per descriptor open when main() starts, other than 0, 1
 * and 2 ("at-main FD TARGET"), then closes 2, makes a few library calls,
 * and prints one line per descriptor that appeared meanwhile
 * ("new FD TARGET", descriptor 2 included if something landed there),
 * then "done".  With --keep-stderr it leaves descriptor 2 open (the test
 * makes it a pipe nobody reads, with SIGPIPE at its default: a library
 * that wrote to it would kill the program).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#define MAX_FD 1024

/* open_fds - mark in @open which descriptors are open now. */
static void
open_fds(bool open[MAX_FD])
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self = d ? dirfd(d) : -1;

    memset(open, 0, MAX_FD * sizeof open[0]);
    if (!d) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);

        if (e->d_name[0] != '.' && fd != self && fd >= 0 && fd < MAX_FD) {
            open[fd] = true;
        }
    }
    closedir(d);
}

static void
show(const char *what, int fd)
{
    char path[64], target[512];
    ssize_t n;

    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    printf("%s %d %s\n", what, fd, target);
}

int
main(int argc, char **argv)
{
    static bool before[MAX_FD], after[MAX_FD];
    struct sp_broker_msg m;
    char *err = NULL;
    int fd;

    open_fds(before);
    for (fd = 3; fd < MAX_FD; fd++) {
        if (before[fd]) {
            show("at-main", fd);
        }
    }
    fflush(stdout);
    if (argc < 2 || strcmp(argv[1], "--keep-stderr") != 0) {
        close(2);
        before[2] = false;
    }

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    if (sp_broker_message_validate(&m, NULL, 0, NULL) != 0) {
        printf("validate failed\n");
        return 1;
    }
    if (sp_broker_connect("/nonexistent/one.socket", false, &err) != -1) {
        printf("connect to nothing succeeded\n");
        return 1;
    }
    free(err);
    usleep(50 * 1000);

    open_fds(after);
    for (fd = 0; fd < MAX_FD; fd++) {
        if (after[fd] && !before[fd]) {
            show("new", fd);
        }
    }
    printf("done\n");
    return 0;
}
