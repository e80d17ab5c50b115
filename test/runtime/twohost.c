/* SPDX-License-Identifier: Apache-2.0 */
/*
 * twohost.c - a host that links another Go c-archive (othergo.go, built
 * with go build -buildmode=c-archive) together with libspbroker, and calls
 * both.
 *
 * Usage: twohost
 *
 * Prints "both 5" and exits 0 when othergo_add(2, 3) is 5 and a message
 * validates; exit 1 otherwise.
 */
#include <stdio.h>
#include <string.h>

#include <socketpair-broker/helper.h>

int othergo_add(int a, int b);

int
main(void)
{
    struct sp_broker_msg m;
    int sum = othergo_add(2, 3);

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    if (sp_broker_message_validate(&m, NULL, 0, NULL) != 0 || sum != 5) {
        printf("failed: sum %d\n", sum);
        return 1;
    }
    printf("both %d\n", sum);
    return 0;
}
