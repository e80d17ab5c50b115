/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dlhost.c - a host that loads a plugin linking libspbroker, calls into
 * it, and unloads it, over and over (as hosts with loadable modules do).
 *
 * Usage: dlhost PLUGIN.so COUNT
 *
 * Prints "loaded N times" and exits 0 when all COUNT rounds passed and the
 * process then lived on for 2 s more (the runtime's threads, if the object
 * were unmapped, would crash it within that time), then "after-dlclose
 * loaded" if the plugin is still loaded after the last dlclose() (as
 * dlopen(RTLD_NOLOAD) finds it) or "after-dlclose unloaded".  Exit 1: a
 * dlopen, dlsym or call failed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int
main(int argc, char **argv)
{
    struct timespec pause = { .tv_nsec = 10 * 1000 * 1000 };
    struct timespec linger = { .tv_sec = 2 };
    int i, count;

    if (argc != 3 || (count = atoi(argv[2])) <= 0) {
        fprintf(stderr, "usage: dlhost PLUGIN.so COUNT\n");
        return 2;
    }
    for (i = 0; i < count; i++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        int (*call)(void);

        if (!h) {
            fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
            return 1;
        }
        *(void **) &call = dlsym(h, "plugin_call");
        if (!call) {
            fprintf(stderr, "dlsym plugin_call: %s\n", dlerror());
            return 1;
        }
        if (call() != 0) {
            fprintf(stderr, "round %d: the call failed\n", i);
            return 1;
        }
        if (dlclose(h) != 0) {
            fprintf(stderr, "dlclose: %s\n", dlerror());
            return 1;
        }
        nanosleep(&pause, NULL);
    }
    nanosleep(&linger, NULL);
    printf("loaded %d times\n", count);
    printf("after-dlclose %s\n",
           dlopen(argv[1], RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD) ? "loaded" : "unloaded");
    return 0;
}
