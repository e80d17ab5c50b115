/* proc_threads.h - how many threads this process has, from /proc.
 *
 * Shared by the C tests (test/sigmask.c) and the C library's benchmark
 * (bench/capi/capibench.c), which both check what threads the library
 * starts in its host.
 */
#ifndef ONE_SOCKET_PROC_THREADS_H
#define ONE_SOCKET_PROC_THREADS_H

#include <stdio.h>

/* proc_threads - the Threads: line of /proc/self/status, or -1. */
static inline int
proc_threads(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    int n = -1;

    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Threads: %d", &n) == 1) {
            break;
        }
    }
    fclose(f);
    return n;
}

#endif
