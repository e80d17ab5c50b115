// SPDX-License-Identifier: Apache-2.0
//
// headers.cc - the public headers from C++: both compile with
// -std=c++11 -Wall -Wextra -Werror -pedantic, give the same layout as in C,
// and the functions link with C linkage (extern "C" in the headers) and work.
#include <socketpair-broker/helper.h>
#include <socketpair-broker/proto.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

static_assert(sizeof(sp_broker_get_pair_request) == 1028, "sizeof(struct sp_broker_get_pair_request)");
static_assert(offsetof(sp_broker_msg, payload) == 12, "offsetof(struct sp_broker_msg, payload)");
static_assert(SP_BROKER_MESSAGE_SIZE == 1044, "SP_BROKER_MESSAGE_SIZE");
static_assert(sizeof(sp_broker_msg) == 1304, "sizeof(struct sp_broker_msg)");
static_assert(offsetof(sp_broker_msg, n_fds) == 1300, "offsetof(struct sp_broker_msg, n_fds)");
static_assert(SP_BROKER_MAX_KEY_LENGTH == 1024, "SP_BROKER_MAX_KEY_LENGTH");
static_assert(SP_BROKER_SET_PAIR == 2 && SP_BROKER_PAIR_MODE_SERVER == 2, "enum values");

// Every function, with the exact type the header gives it.
static int (*const validate)(const sp_broker_msg *, const sp_broker_request *, int, char **) =
    sp_broker_message_validate;
static int (*const connect_fn)(const char *, bool, char **) = sp_broker_connect;
static int (*const send_fn)(int, const char *, bool, char **) = sp_broker_send_get_pair;
static int (*const send_nd)(int, const char *, char **) = sp_broker_send_get_pair_nondirectional;
static int (*const receive_fn)(int, char **) = sp_broker_receive_set_pair;
static int (*const get_pair_fn)(const char *, const char *, bool, char **) = sp_broker_get_pair;
static int (*const get_pair_nd)(const char *, const char *, char **) =
    sp_broker_get_pair_nondirectional;

static int failures;

static void check(bool ok, const char *what)
{
    std::printf("%sok - %s\n", ok ? "" : "not ", what);
    if (!ok) {
        failures++;
    }
}

int main()
{
    sp_broker_msg m;
    std::memset(&m, 0, sizeof m);
    m.request = SP_BROKER_GET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = sizeof m.payload.get_pair;
    m.payload.get_pair.mode = SP_BROKER_PAIR_MODE_CLIENT;
    m.payload.get_pair.key_len = 3;
    std::memcpy(m.payload.get_pair.key, "c++", 3);
    m.n_fds = 0;
    const sp_broker_request expected[] = { SP_BROKER_GET_PAIR };

    char *err = nullptr;
    check(validate(&m, expected, 1, &err) == 0 && err == nullptr, "validate a GET_PAIR");

    m.payload.get_pair.key_len = 0;
    errno = 0;
    check(validate(&m, expected, 1, &err) == -1 && errno == EPROTO && err && *err,
          "validate key_len 0: EPROTO and a message");
    std::free(err);

    err = nullptr;
    errno = 0;
    check(connect_fn(nullptr, false, &err) == -1 && errno == EINVAL && err, "connect NULL: EINVAL");
    std::free(err);
    errno = 0;
    check(send_fn(-1, "", true, nullptr) == -1 && errno == EINVAL, "send an empty key: EINVAL");
    errno = 0;
    check(send_nd(-1, nullptr, nullptr) == -1 && errno == EINVAL, "send a NULL key: EINVAL");
    errno = 0;
    check(receive_fn(-1, nullptr) == -1 && (errno == EBADF || errno == EINVAL),
          "receive on -1: EBADF");
    errno = 0;
    check(get_pair_fn("/nonexistent/one.socket", "k", true, nullptr) == -1 && errno == ENOENT,
          "get_pair to a missing path: ENOENT");
    errno = 0;
    check(get_pair_nd(nullptr, "k", nullptr) == -1 && errno == EINVAL,
          "get_pair_nondirectional NULL path: EINVAL");

    std::printf("# %d failed\n", failures);
    return failures ? 1 : 0;
}
