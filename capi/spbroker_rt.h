/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spbroker_rt.h - how the Go archive starts its runtime inside a C host
 * (internal; the runtime-free build has none of this).
 *
 * Three constructors run in this order when the host (or a shared object
 * that links the archive) is loaded:
 *
 *   1. spbroker_init (shim.c) blocks the asynchronous signals in the
 *      loading thread, saving its mask in spbroker_rt_saved_mask.
 *   2. The Go runtime's own constructor (in go.o) creates the runtime's
 *      first thread, which inherits that mask; the runtime gives the same
 *      mask to every thread it creates later (Go's initSigmask).
 *   3. spbroker_rt_init (spbroker_rt.c) restores the loading thread's mask
 *      and waits until the runtime has finished starting.
 *
 * The order of 1 before 2 before 3 comes from which object refers to
 * which, not from constructor priorities: the host refers to shim.c's
 * object, which comes first; go.o is reached only through the exports;
 * spbroker_rt.c's object only through go.o (runtime.go calls
 * spbroker_rt_started).  So shim.c must never refer to a symbol of
 * spbroker_rt.c, or its object would be taken before go.o.
 */
#ifndef SPBROKER_RT_H
#define SPBROKER_RT_H 1

#include <signal.h>

#define SPBROKER_RT_INTERNAL __attribute__((visibility("hidden")))

/* The loading thread's mask before step 1, valid while _blocked is 1. */
extern SPBROKER_RT_INTERNAL sigset_t spbroker_rt_saved_mask;
/* The signals step 1 added to the loading thread's mask. */
extern SPBROKER_RT_INTERNAL sigset_t spbroker_rt_added;
/* 1 between steps 1 and 3 when step 1 changed the mask. */
extern SPBROKER_RT_INTERNAL volatile int spbroker_rt_blocked;
/* Set by step 3: a step 1 that comes after it (an unusual link) does
 * nothing. */
extern SPBROKER_RT_INTERNAL volatile int spbroker_rt_done;

/* Called by the runtime's first thread (runtime.go) once the runtime has
 * started and opened its descriptors. */
void spbroker_rt_started(int poller);

#endif /* SPBROKER_RT_H */
