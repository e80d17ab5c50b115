/* SPDX-License-Identifier: Apache-2.0 */
/*
 * closehost.c - a host that closes descriptors it did not open, as some
 * daemons do after start (closing everything from 3 up), and then uses
 * the library.
 *
 * Usage: closehost
 *
 * It makes one library call (by then the Go archive's runtime has started
 * and opened its descriptors), closes every descriptor from 3 up, opens a
 * pipe of its own (which takes the lowest numbers, those just closed),
 * then calls sp_broker_connect() to a path where nothing is and
 * sp_broker_message_validate() over and over for 500 ms (calls that keep
 * the Go archive's runtime awake, so that it looks at its descriptors).  It prints
 * "closed N" (how many it closed), then "done" and exits 0 if every call
 * gave the expected result; exit 1 if one did not.  If the library's
 * runtime cannot survive it, the process dies or hangs instead.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

static int
validate(void)
{
    struct sp_broker_msg m;

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    return sp_broker_message_validate(&m, NULL, 0, NULL);
}

int
main(void)
{
    struct timespec start, now;
    int fds[1024], n = 0, i, p[2];
    char *err = NULL;
    DIR *d;
    struct dirent *e;

    if (validate() != 0) {
        printf("validate failed before\n");
        return 1;
    }
    d = opendir("/proc/self/fd");
    if (!d) {
        perror("opendir");
        return 2;
    }
    while ((e = readdir(d)) != NULL && n < 1024) {
        int fd = atoi(e->d_name);

        if (e->d_name[0] != '.' && fd >= 3 && fd != dirfd(d)) {
            fds[n++] = fd;
        }
    }
    closedir(d);
    for (i = 0; i < n; i++) {
        close(fds[i]);
    }
    printf("closed %d\n", n);
    fflush(stdout);
    if (pipe(p) != 0) {
        perror("pipe");
        return 2;
    }
    if (sp_broker_connect("/nonexistent/one.socket", false, &err) != -1 || errno != ENOENT) {
        printf("connect to nothing: not ENOENT\n");
        return 1;
    }
    free(err);
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        if (validate() != 0) {
            printf("validate failed after\n");
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < 500);
    printf("done\n");
    return 0;
}
