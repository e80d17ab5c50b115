/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spbroker_c.h - the pure C implementation of libspbroker (internal).
 *
 * The same code serves two builds: in the Go archive it runs in forked
 * children, where entering Go could hang; in the runtime-free build
 * (libspbroker-c.a, which meson always builds) it is the whole library.  Each function has
 * the contract of its public counterpart in helper.h: -1 with a definite
 * errno on failure, and a malloc'd message in *err when err is not NULL.
 * None of these names is part of the ABI.
 */
#ifndef SPBROKER_C_H
#define SPBROKER_C_H 1

#include <stdbool.h>

#include <socketpair-broker/proto.h>

#define SPBROKER_INTERNAL __attribute__((visibility("hidden")))

SPBROKER_INTERNAL int
spbroker_c_message_validate(const struct sp_broker_msg *msg,
                            const enum sp_broker_request *expected,
                            int n_expected, char **err);

SPBROKER_INTERNAL int
spbroker_c_connect(const char *sock_path, bool nonblock, char **err);

SPBROKER_INTERNAL int
spbroker_c_send_get_pair(int broker_fd, const char *key,
                         enum sp_broker_get_pair_mode mode, char **err);

SPBROKER_INTERNAL int
spbroker_c_receive_set_pair(int broker_fd, char **err);

SPBROKER_INTERNAL int
spbroker_c_get_pair(const char *sock_path, const char *key,
                    enum sp_broker_get_pair_mode mode, char **err);

/*
 * spbroker_fail - report a failure: set errno to @errnum (EIO if it is not
 * positive), last, after the message is made; and, when @err is not NULL,
 * store in *err a malloc'd message made from @fmt (or, if even that
 * allocation fails, NULL: there is nothing better to give).
 * Return: -1, for 'return spbroker_fail(...)'.
 */
SPBROKER_INTERNAL int
spbroker_fail(char **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* SPBROKER_C_H */
