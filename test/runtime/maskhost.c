/* SPDX-License-Identifier: Apache-2.0 */
/*
 * maskhost.c - what the library does to a host's signal state, read from
 * /proc without sending a signal.
 *
 * Usage: maskhost            (linked with the library)
 *        maskhost PLUGIN.so  (compiled with -DMASKHOST_DLOPEN, not linked)
 *
 * Before any constructor (from .preinit_array) the program records its
 * signal mask and installs a SIGUSR2 handler without SA_ONSTACK.  In
 * main() it optionally dlopen()s PLUGIN.so (which links the library) and
 * calls its plugin_call(), else it calls the library directly; then it
 * prints:
 *
 *   main-mask-kept yes|no    the main thread's mask is the one from before
 *                            the constructors
 *   threads N                threads other than the main one
 *   thread-blocks SIG yes|no for each signal of a list: whether every other
 *                            thread blocks it ("-" if there is none)
 *   onstack yes|no           the SIGUSR2 handler has gained SA_ONSTACK
 *   altstack N               the size of the main thread's sigaltstack
 *                            after the call (0 when none)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

static sigset_t start_mask;

static void
on_usr2(int sig)
{
    (void) sig;
}

static void
before_constructors(void)
{
    struct sigaction sa;

    pthread_sigmask(SIG_SETMASK, NULL, &start_mask);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
}

__attribute__((section(".preinit_array"), used))
static void (*const preinit)(void) = before_constructors;

/* sigblk - the SigBlk mask of thread @tid, or 0 if unreadable. */
static unsigned long long
sigblk(const char *tid)
{
    char path[300], line[256];
    unsigned long long mask = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    f = fopen(path, "re");
    if (!f) {
        return 0;
    }
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "SigBlk: %llx", &mask) == 1) {
            break;
        }
    }
    fclose(f);
    return mask;
}

static int
call_library(const char *plugin)
{
    if (plugin) {
        void *h = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
        int (*call)(void);

        if (!h) {
            fprintf(stderr, "dlopen %s: %s\n", plugin, dlerror());
            return -1;
        }
        *(void **) &call = dlsym(h, "plugin_call");
        return call ? call() : -1;
    }
#ifdef MASKHOST_DLOPEN
    return -1;
#else
    {
        struct sp_broker_msg m;

        memset(&m, 0, sizeof m);
        m.request = SP_BROKER_SET_PAIR;
        m.flags = SP_BROKER_PROTOCOL_VERSION;
        m.size = 8;
        m.n_fds = 1;
        return sp_broker_message_validate(&m, NULL, 0, NULL);
    }
#endif
}

int
main(int argc, char **argv)
{
    static const struct { const char *name; int sig; } list[] = {
        { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT },
        { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "PIPE", SIGPIPE },
        { "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "CHLD", SIGCHLD },
        { "URG", SIGURG }, { "PROF", SIGPROF }, { "WINCH", SIGWINCH },
        { "IO", SIGIO }, { "34", 34 }, { "35", 35 }, { "36", 36 },
        { "64", 64 },
    };
    unsigned long long all = ~0ULL, main_blk;
    sigset_t now;
    stack_t ss;
    struct sigaction sa;
    char self[32];
    DIR *d;
    struct dirent *e;
    int threads = 0, s;
    size_t i;

    if (call_library(argc > 1 ? argv[1] : NULL) != 0) {
        fprintf(stderr, "the library call failed\n");
        return 1;
    }
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    main_blk = 0;
    for (s = 1; s <= 64; s++) {
        if (sigismember(&now, s) != sigismember(&start_mask, s)) {
            main_blk = 1;
        }
    }
    printf("main-mask-kept %s\n", main_blk ? "no" : "yes");

    snprintf(self, sizeof self, "%d", getpid());
    d = opendir("/proc/self/task");
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, self) == 0) {
            continue;
        }
        threads++;
        all &= sigblk(e->d_name);
    }
    if (d) {
        closedir(d);
    }
    printf("threads %d\n", threads);
    for (i = 0; i < sizeof list / sizeof list[0]; i++) {
        printf("thread-blocks %s %s\n", list[i].name,
               threads == 0 ? "-" : (all >> (list[i].sig - 1)) & 1 ? "yes" : "no");
    }
    sigaction(SIGUSR2, NULL, &sa);
    printf("onstack %s\n", sa.sa_flags & SA_ONSTACK ? "yes" : "no");
    if (sigaltstack(NULL, &ss) == 0 && !(ss.ss_flags & SS_DISABLE)) {
        printf("altstack %zu\n", ss.ss_size);
    } else {
        printf("altstack 0\n");
    }
    return 0;
}
