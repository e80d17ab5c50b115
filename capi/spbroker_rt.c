/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spbroker_rt.c - the last of the Go archive's three constructors (see
 * spbroker_rt.h): give the loading thread its signal mask back, keep a
 * shared object that links the archive loaded for good, and wait until
 * the runtime has started.
 */
#ifndef SPBROKER_NO_GO
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <time.h>

#include "spbroker_rt.h"

/*
 * Weak: before glibc 2.34 these are in libdl, which a host that loads no
 * plugins need not link (and then there is nothing to keep); one that
 * does dlopen() has them.
 */
#pragma weak dladdr1
#pragma weak dlopen

/* How long a constructor waits for the runtime at most, in seconds. */
#define SPBROKER_RT_WAIT 10

static pthread_mutex_t spbroker_rt_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spbroker_rt_cond = PTHREAD_COND_INITIALIZER;
static int spbroker_rt_up;

void
spbroker_rt_started(int poller)
{
    (void) poller;      /* whether the poller is open: nothing to do */
    pthread_mutex_lock(&spbroker_rt_mu);
    spbroker_rt_up = 1;
    pthread_cond_broadcast(&spbroker_rt_cond);
    pthread_mutex_unlock(&spbroker_rt_mu);
}

/*
 * spbroker_rt_go_started - whether the runtime's constructor has run:
 * it installs one handler, its own, for SIGURG and SIGSEGV.
 */
static int
spbroker_rt_go_started(void)
{
    struct sigaction urg, segv;

    if (sigaction(SIGURG, NULL, &urg) != 0 ||
        sigaction(SIGSEGV, NULL, &segv) != 0) {
        return 0;
    }
    return (urg.sa_flags & SA_SIGINFO) && (segv.sa_flags & SA_SIGINFO) &&
           urg.sa_sigaction == segv.sa_sigaction;
}

/*
 * spbroker_rt_wait - wait until runtime.go's init has run: the runtime is
 * initialised and has opened its descriptors (the cgroup limit file, the
 * poller), so that none of them can take a number the host closes or
 * reuses after its constructors, such as 2.
 */
static void
spbroker_rt_wait(void)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += SPBROKER_RT_WAIT;
    pthread_mutex_lock(&spbroker_rt_mu);
    while (!spbroker_rt_up) {
        if (pthread_cond_timedwait(&spbroker_rt_cond, &spbroker_rt_mu,
                                   &deadline) != 0 &&
            !spbroker_rt_up) {
            break;
        }
    }
    pthread_mutex_unlock(&spbroker_rt_mu);
}

/*
 * spbroker_rt_nodelete - if the archive is linked into a shared object,
 * mark that object NODELETE: the runtime's threads run its code for the
 * life of the process, so a dlclose() that unmapped it would crash the
 * host.  The handle is kept, never closed.
 */
static void
spbroker_rt_nodelete(void)
{
    Dl_info info;
    struct link_map *map = NULL;

    if (!dladdr1 || !dlopen ||
        dladdr1((void *) spbroker_rt_nodelete, &info, (void **) &map,
                RTLD_DL_LINKMAP) == 0 ||
        map == NULL || map->l_name == NULL || map->l_name[0] == '\0') {
        return;     /* the main program, or not found */
    }
    (void) dlopen(map->l_name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

__attribute__((constructor)) static void
spbroker_rt_init(void)
{
    if (spbroker_rt_blocked) {
        pthread_sigmask(SIG_UNBLOCK, &spbroker_rt_added, NULL);
        spbroker_rt_blocked = 0;
    }
    spbroker_rt_done = 1;
    spbroker_rt_nodelete();
    if (spbroker_rt_go_started()) {
        spbroker_rt_wait();
    }
}
#endif /* SPBROKER_NO_GO */
