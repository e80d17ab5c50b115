/* SPDX-License-Identifier: Apache-2.0 */
/*
 * consumer - a program built against an installed libspbroker.
 *
 * Usage: consumer [SOCKET KEY]
 *
 * Always: checks that the installed proto.h has the original layout and
 * that sp_broker_message_validate() accepts a well-formed GET_PAIR and
 * refuses a broken one with EPROTO.  With SOCKET and KEY: also obtains a
 * nondirectional pair under KEY from the broker at SOCKET (run two of
 * them with the same KEY), and says hello across it.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>
#include <socketpair-broker/proto.h>

/* The ABI every client of the original library was compiled with. */
static_assert(sizeof(struct sp_broker_get_pair_request) == 1028,
              "get_pair request size");
static_assert(offsetof(struct sp_broker_msg, payload) == 12,
              "payload offset");
static_assert(SP_BROKER_MESSAGE_SIZE == 1044, "message size on the wire");
static_assert(sizeof(struct sp_broker_msg) == 1304, "message size");

/* check_validate - 0 if validation behaves as documented, else 1. */
static int
check_validate(void)
{
    const enum sp_broker_request expected[] = { SP_BROKER_GET_PAIR };
    struct sp_broker_msg msg;
    char *err = NULL;

    memset(&msg, 0, sizeof msg);
    msg.request = SP_BROKER_GET_PAIR;
    msg.flags = SP_BROKER_PROTOCOL_VERSION;
    msg.size = sizeof msg.payload.get_pair;
    msg.payload.get_pair.mode = SP_BROKER_PAIR_MODE_NONE;
    msg.payload.get_pair.key_len = 3;
    memcpy(msg.payload.get_pair.key, "abc", 3);
    msg.n_fds = 0;

    if (sp_broker_message_validate(&msg, expected, 1, &err) != 0) {
        fprintf(stderr, "consumer: a valid GET_PAIR was refused: %s\n",
                err ? err : strerror(errno));
        free(err);
        return 1;
    }

    msg.flags = 0;              /* version 0 does not exist */
    errno = 0;
    if (sp_broker_message_validate(&msg, expected, 1, &err) != -1
        || errno != EPROTO) {
        fprintf(stderr, "consumer: a GET_PAIR of version 0 was accepted "
                        "or gave errno %d\n", errno);
        free(err);
        return 1;
    }
    if (!err) {
        fprintf(stderr, "consumer: no message for an invalid GET_PAIR\n");
        return 1;
    }
    printf("validate: refused as expected: %s\n", err);
    free(err);
    return 0;
}

/* pair - get a nondirectional pair and exchange a greeting over it. */
static int
pair(const char *path, const char *key)
{
    char buf[64], *err = NULL;
    ssize_t n;
    int fd;

    fd = sp_broker_get_pair_nondirectional(path, key, &err);
    if (fd < 0) {
        fprintf(stderr, "consumer: sp_broker_get_pair_nondirectional: %s\n",
                err ? err : strerror(errno));
        free(err);
        return 1;
    }
    if (write(fd, "hello", 5) != 5) {
        perror("consumer: write");
        close(fd);
        return 1;
    }
    n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        perror("consumer: read");
        close(fd);
        return 1;
    }
    buf[n] = '\0';
    printf("paired: the peer said \"%s\"\n", buf);
    close(fd);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc != 1 && argc != 3) {
        fprintf(stderr, "usage: consumer [SOCKET KEY]\n");
        return 2;
    }
    if (check_validate() != 0) {
        return 1;
    }
    return argc == 3 ? pair(argv[1], argv[2]) : 0;
}
