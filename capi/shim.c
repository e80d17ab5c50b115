/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shim.c - the public functions of libspbroker (helper.h).
 *
 * In the Go archive each function is a thin C wrapper: in the process that
 * loaded the library it calls the Go implementation (capi/exports.go); in a
 * child forked from it, it calls the pure C implementation (spbroker_c.c)
 * and never enters Go, because a Go runtime cannot survive fork() without
 * exec() -- its other threads did not come along, and the first call that
 * needs them hangs.  Compiled with SPBROKER_NO_GO (the runtime-free build),
 * every function is the C implementation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

#include "spbroker_c.h"

#ifndef SPBROKER_NO_GO
#include "_cgo_export.h"
#include "spbroker_rt.h"

/* Room for an error message coming back from Go; longer ones are cut. */
#define SPBROKER_MSG_MAX 512

static pid_t spbroker_pid;
static volatile sig_atomic_t spbroker_forked;

static void
spbroker_atfork_child(void)
{
    spbroker_forked = 1;
}

/* Shared with spbroker_rt.c, defined here: see spbroker_rt.h. */
sigset_t spbroker_rt_saved_mask;
sigset_t spbroker_rt_added;
volatile int spbroker_rt_blocked;
volatile int spbroker_rt_done;

/*
 * spbroker_block_async - step 1 of spbroker_rt.h: block in the loading
 * thread every signal a host may collect with sigwait() or signalfd(), so
 * that the runtime's threads, which inherit this mask from the runtime's
 * constructor, block them too and such a signal can only reach the host's
 * own threads.  The signals of faults (which the kernel delivers to the
 * faulting thread) stay as they are; spbroker_rt.c takes back exactly the
 * signals added here.
 */
static void
spbroker_block_async(void)
{
    static const int sync_signals[] = {
        SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS,
    };
    sigset_t all;
    int s;
    size_t i;

    if (spbroker_rt_done) {
        return;                 /* an unusual link order: too late */
    }
    sigfillset(&all);
    for (i = 0; i < sizeof sync_signals / sizeof sync_signals[0]; i++) {
        sigdelset(&all, sync_signals[i]);
    }
    if (pthread_sigmask(SIG_BLOCK, &all, &spbroker_rt_saved_mask) != 0) {
        return;
    }
    sigemptyset(&spbroker_rt_added);
    for (s = 1; s < NSIG; s++) {
        if (sigismember(&all, s) == 1 &&
            sigismember(&spbroker_rt_saved_mask, s) == 0) {
            sigaddset(&spbroker_rt_added, s);
        }
    }
    spbroker_rt_blocked = 1;
}

/*
 * Runs when the host is loaded, before the Go runtime's own constructor
 * (see spbroker_rt.h).  The atfork handler catches fork() and daemon(3); a
 * raw syscall(SYS_fork) runs no handlers, so the pid comparison catches
 * that one.
 */
__attribute__((constructor)) static void
spbroker_init(void)
{
    spbroker_pid = getpid();
    pthread_atfork(NULL, NULL, spbroker_atfork_child);
    spbroker_block_async();
}

/* spbroker_use_c - whether this process must stay out of Go. */
static int
spbroker_use_c(void)
{
    return spbroker_forked || getpid() != spbroker_pid;
}

/*
 * A Go call and back: the runtime can leave the calling thread's signal
 * mask changed (golang/go#51676), so it is saved and restored around each
 * call; then errno and *err are set from what Go reported.
 */
struct spbroker_go_call {
    sigset_t mask;
    int errnum;
    char msg[SPBROKER_MSG_MAX];
};

static void
spbroker_go_enter(struct spbroker_go_call *c)
{
    pthread_sigmask(SIG_SETMASK, NULL, &c->mask);
    c->errnum = 0;
    c->msg[0] = '\0';
}

static int
spbroker_go_leave(struct spbroker_go_call *c, int ret, char **err)
{
    pthread_sigmask(SIG_SETMASK, &c->mask, NULL);
    if (ret >= 0) {
        return ret;
    }
    if (err) {
        c->msg[sizeof c->msg - 1] = '\0';
        *err = strdup(c->msg[0] ? c->msg : "libspbroker: unknown error");
    }
    errno = c->errnum ? c->errnum : EIO;
    return -1;
}

#define SPBROKER_DISPATCH(c_call, go_call)                              \
    do {                                                                \
        struct spbroker_go_call call_;                                  \
        int ret_;                                                       \
                                                                        \
        if (spbroker_use_c()) {                                         \
            return c_call;                                              \
        }                                                               \
        spbroker_go_enter(&call_);                                      \
        ret_ = go_call;                                                 \
        return spbroker_go_leave(&call_, ret_, err);                    \
    } while (0)

#define GO_ERR &call_.errnum, call_.msg, (int) sizeof call_.msg

#else /* SPBROKER_NO_GO */

#define SPBROKER_DISPATCH(c_call, go_call) return c_call

#endif

int
sp_broker_message_validate(const struct sp_broker_msg *msg,
                           const enum sp_broker_request *expected,
                           int n_expected, char **err)
{
    SPBROKER_DISPATCH(
        spbroker_c_message_validate(msg, expected, n_expected, err),
        spbrokerGoValidate((void *) msg, msg ? msg->n_fds : 0,
                           (void *) expected, n_expected, GO_ERR));
}

int
sp_broker_connect(const char *sock_path, bool nonblock, char **err)
{
    SPBROKER_DISPATCH(
        spbroker_c_connect(sock_path, nonblock, err),
        spbrokerGoConnect((char *) sock_path, nonblock, GO_ERR));
}

int
sp_broker_send_get_pair(int broker_fd, const char *key, bool server,
                        char **err)
{
    enum sp_broker_get_pair_mode mode = server ? SP_BROKER_PAIR_MODE_SERVER
                                               : SP_BROKER_PAIR_MODE_CLIENT;

    SPBROKER_DISPATCH(
        spbroker_c_send_get_pair(broker_fd, key, mode, err),
        spbrokerGoSendGetPair(broker_fd, (char *) key, (int) mode, GO_ERR));
}

int
sp_broker_send_get_pair_nondirectional(int broker_fd, const char *key,
                                       char **err)
{
    SPBROKER_DISPATCH(
        spbroker_c_send_get_pair(broker_fd, key, SP_BROKER_PAIR_MODE_NONE,
                                 err),
        spbrokerGoSendGetPair(broker_fd, (char *) key,
                              SP_BROKER_PAIR_MODE_NONE, GO_ERR));
}

int
sp_broker_receive_set_pair(int broker_fd, char **err)
{
    SPBROKER_DISPATCH(
        spbroker_c_receive_set_pair(broker_fd, err),
        spbrokerGoReceiveSetPair(broker_fd, GO_ERR));
}

int
sp_broker_get_pair(const char *sock_path, const char *key, bool server,
                   char **err)
{
    enum sp_broker_get_pair_mode mode = server ? SP_BROKER_PAIR_MODE_SERVER
                                               : SP_BROKER_PAIR_MODE_CLIENT;

    SPBROKER_DISPATCH(
        spbroker_c_get_pair(sock_path, key, mode, err),
        spbrokerGoGetPair((char *) sock_path, (char *) key, (int) mode,
                          GO_ERR));
}

int
sp_broker_get_pair_nondirectional(const char *sock_path, const char *key,
                                  char **err)
{
    SPBROKER_DISPATCH(
        spbroker_c_get_pair(sock_path, key, SP_BROKER_PAIR_MODE_NONE, err),
        spbrokerGoGetPair((char *) sock_path, (char *) key,
                          SP_BROKER_PAIR_MODE_NONE, GO_ERR));
}
