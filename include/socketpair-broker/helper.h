/* SPDX-License-Identifier: Apache-2.0 */
/*
 * socketpair-broker/helper.h - client functions of libspbroker.
 *
 * Two ways to use them:
 *
 *   - Blocking: sp_broker_get_pair() connects, asks for a pair, waits for the
 *     broker's answer and returns your end of the socketpair.
 *
 *   - From an event loop (the pattern of vhost-user hosts):
 *         fd = sp_broker_connect(path, true, &err);
 *         sp_broker_send_get_pair(fd, key, is_server, &err);
 *         ...add fd to the poll set; when it becomes readable:
 *         peer = sp_broker_receive_set_pair(fd, &err);
 *         close(fd);
 *     A receive on a nonblocking fd before the answer has arrived fails with
 *     errno EAGAIN and changes nothing, so spurious wake-ups are harmless.
 *
 * Common rules for every function:
 *
 *   - Failure returns -1 and sets errno to a definite value.  When 'err' is
 *     not NULL, a failure also stores in *err a malloc'd, NUL-terminated
 *     message for a human; release it with free().  On success *err is
 *     left untouched.  (A NULL 'err' just means no message.)
 *   - Descriptors this library creates are close-on-exec.  A descriptor it
 *     returns belongs to the caller; descriptors passed in stay the
 *     caller's and are never closed by the library.
 *   - All functions are thread-safe: they keep no shared state beyond the
 *     library's one-time initialisation.
 *   - Sends use MSG_NOSIGNAL: a broker that has gone away yields EPIPE,
 *     never SIGPIPE.  The library never writes to stdout or stderr.
 *
 * Notes for host authors (QEMU, DPDK, Open vSwitch and the like):
 *
 *   libspbroker.a (pkg-config spbroker) is built by default from Go (a
 *   c-archive), which puts a Go runtime in your process.  It starts from
 *   constructors before main(), which wait for it (about 1 ms per process
 *   start), and runs 5 to 8 threads of its own.  libspbroker-c.a
 *   (pkg-config spbroker-c) is the runtime-free build: same ABI, no
 *   threads, constructors or signal handlers.  doc/c-library.md has a
 *   table of host kinds and the archive each should use.
 *
 *   - fork(): a child forked after start (daemon(3), --detach, -daemonize)
 *     cannot run Go code safely.  The library detects such a child (by a
 *     pthread_atfork handler and by comparing getpid() with the pid seen at
 *     start) and serves it from a pure C implementation of every function,
 *     with the same behaviour.  No host action is needed.
 *   - Signals: the runtime installs handlers for SIGBUS, SIGFPE, SIGSEGV,
 *     SIGPIPE and SIGURG at start, and adds SA_ONSTACK to handlers the
 *     host installed before; other dispositions stay yours.  Its threads
 *     block every asynchronous signal except SIGCHLD, SIGPROF, SIGURG and
 *     glibc's SIGRTMIN (34), which Go never lets them block.  So a host
 *     that blocks signals in main() and collects them with sigwait() or
 *     signalfd() gets SIGUSR1, SIGALRM, SIGTERM, SIGRTMIN+1... as before,
 *     but SIGCHLD can be lost to a runtime thread, and SIGRTMIN (34) or
 *     SIGPROF kill the process at the first one.  Such a host, and one
 *     linking the archive with -Wl,--whole-archive (which undoes the
 *     blocking: then SIGUSR1 and the like kill too), should use
 *     spbroker-c.  Handlers installed after start should use SA_ONSTACK.
 *     Each call restores the calling thread's signal mask as it found it;
 *     a calling thread is left a 32 KiB sigaltstack.
 *   - Plugins: a shared object that links the archive marks itself
 *     NODELETE; dlclose() leaves it loaded (unmapping it would crash the
 *     runtime's threads).
 *   - Descriptors: the runtime keeps its cgroup CPU limit file(s) and its
 *     poller (epoll, eventfd) open for the life of the process, all
 *     opened before main() starts.  A host that closes descriptors it
 *     does not know of must spare them, or use spbroker-c: closing the
 *     poller's aborts the process ("fatal error: runtime: netpoll
 *     failed").
 *   - Only one Go c-archive can be linked into a process.  A host that
 *     links another one must use spbroker-c.
 *   - Cost: about 2 MB per stripped binary; a call ~0.4-0.8 us against a
 *     few ns for spbroker-c; a pairing is dominated by the kernel's work.
 */
#ifndef SOCKETPAIR_BROKER_HELPER_H
#define SOCKETPAIR_BROKER_HELPER_H 1

#include <stdbool.h>

#include <socketpair-broker/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * sp_broker_message_validate - check a received message against the protocol.
 * @msg:        the message; msg->n_fds is the number of descriptors it carried.
 * @expected:   if not NULL, the request types acceptable here ...
 * @n_expected: ... and how many there are.
 * @err:        where to store a message on failure, or NULL.
 *
 * Checks, in the protocol's order: version, reserved flag bits, request
 * type, payload size, descriptor count, that the type is one of @expected,
 * and for GET_PAIR the mode and the key length (1..1024).  Does not block.
 *
 * Return: 0 if valid; -1 with errno EPROTO if invalid, EINVAL if @msg is NULL.
 */
int sp_broker_message_validate(const struct sp_broker_msg *msg,
                               const enum sp_broker_request *expected,
                               int n_expected, char **err);

/*
 * sp_broker_connect - connect to the broker socket at @sock_path.
 * @sock_path: filesystem path, or "@name" for an abstract socket.
 * @nonblock:  make the socket O_NONBLOCK and do not wait for the connection.
 * @err:       where to store a message on failure, or NULL.
 *
 * Blocks only when @nonblock is false, and then only briefly.
 *
 * Return: the connected socket, owned by the caller, or -1 with errno:
 * EINVAL (NULL or too long a path), ENOENT (no such path), ECONNREFUSED
 * (nobody listening, or not a socket), EACCES, EAGAIN (@nonblock and the
 * broker's queue of new connections is full: a Unix socket connects at
 * once or not at all), or another errno from socket(2)/connect(2).
 */
int sp_broker_connect(const char *sock_path, bool nonblock, char **err);

/*
 * sp_broker_send_get_pair - ask the broker for a pair in directional mode.
 * @broker_fd: a socket from sp_broker_connect(); not closed.
 * @key:       NUL-terminated key, 1 to 1024 bytes without the NUL.
 * @server:    true for mode SERVER, false for mode CLIENT.
 * @err:       where to store a message on failure, or NULL.
 *
 * Sends one 1044-byte GET_PAIR.  A key that is empty or too long is refused
 * before anything is sent.
 *
 * Return: 0, or -1 with errno EINVAL (NULL or bad key; nothing sent), EAGAIN
 * (a nonblocking socket with a full send buffer; nothing sent), ETIMEDOUT
 * (the send stalled half-way for a second; close @broker_fd), EPIPE or
 * ECONNRESET (the broker went away), EBADF or ENOTSOCK (not a socket), or
 * another errno from sendmsg(2).
 */
int sp_broker_send_get_pair(int broker_fd, const char *key, bool server,
                            char **err);

/*
 * sp_broker_send_get_pair_nondirectional - the same, with mode NONE.
 */
int sp_broker_send_get_pair_nondirectional(int broker_fd, const char *key,
                                           char **err);

/*
 * sp_broker_receive_set_pair - take the broker's answer to a GET_PAIR.
 * @broker_fd: the socket the GET_PAIR was sent on; not closed.
 * @err:       where to store a message on failure, or NULL.
 *
 * Reads one SET_PAIR whole, however its bytes arrive, validates it, and
 * returns the descriptor it carried (close-on-exec).  Extra descriptors are
 * closed.  On a blocking socket it waits; on a nonblocking one it fails
 * with EAGAIN, consuming nothing, until the answer has begun to arrive.
 *
 * Return: the peer socket, owned by the caller, or -1 with errno EAGAIN
 * (nonblocking, nothing yet), EPROTO (invalid message; every descriptor that
 * came with it is closed), ECONNRESET (the broker closed the connection
 * without answering), ETIMEDOUT (an answer began but did not complete
 * within a second), EBADF or ENOTSOCK (not a socket), or another errno
 * from recvmsg(2).
 */
int sp_broker_receive_set_pair(int broker_fd, char **err);

/*
 * sp_broker_get_pair - connect, ask for a pair, wait for it, disconnect.
 * @sock_path: broker socket, as for sp_broker_connect().
 * @key:       NUL-terminated key, 1 to 1024 bytes.
 * @server:    true for mode SERVER, false for mode CLIENT.
 * @err:       where to store a message on failure, or NULL.
 *
 * Blocks until a peer with the same key and the opposite mode asks too.
 *
 * Return: the peer socket, owned by the caller, or -1 with any errno of
 * the three steps.
 */
int sp_broker_get_pair(const char *sock_path, const char *key, bool server,
                       char **err);

/*
 * sp_broker_get_pair_nondirectional - the same, with mode NONE.
 */
int sp_broker_get_pair_nondirectional(const char *sock_path, const char *key,
                                      char **err);

#ifdef __cplusplus
}
#endif

#endif /* SOCKETPAIR_BROKER_HELPER_H */
