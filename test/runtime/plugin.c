/* SPDX-License-Identifier: Apache-2.0 */
/*
 * plugin.c - a shared object that links libspbroker, for dlhost.c.
 */
#include <string.h>

#include <socketpair-broker/helper.h>

/* plugin_call - one library call; 0 if the message validates. */
int
plugin_call(void)
{
    struct sp_broker_msg m;

    memset(&m, 0, sizeof m);
    m.request = SP_BROKER_SET_PAIR;
    m.flags = SP_BROKER_PROTOCOL_VERSION;
    m.size = 8;
    m.n_fds = 1;
    return sp_broker_message_validate(&m, NULL, 0, NULL);
}
