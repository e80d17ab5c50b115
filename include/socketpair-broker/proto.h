/* SPDX-License-Identifier: Apache-2.0 */
/*
 * socketpair-broker/proto.h - the SocketPair Broker Protocol, version 1.
 *
 * A client connects to the broker's Unix stream socket and sends one
 * GET_PAIR naming a key and a mode.  When a second client sends the same key
 * with a compatible mode (NONE with NONE, CLIENT with SERVER), the broker
 * sends each of them a SET_PAIR carrying, as SCM_RIGHTS ancillary data, one
 * end of a fresh connected socketpair, and closes both connections.
 *
 * Layout and sizes are part of the ABI and identical to the original
 * libspbroker: both structures are packed, but the payload union holds a
 * uint64_t and is therefore 8-byte aligned and 1032 bytes long, so a
 * message occupies SP_BROKER_MESSAGE_SIZE == 1044 bytes on the wire (the
 * protocol's prose describes 1040; receivers accept both).  All fields are
 * in host byte order.
 */
#ifndef SOCKETPAIR_BROKER_PROTO_H
#define SOCKETPAIR_BROKER_PROTO_H 1

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Message types.  Only GET_PAIR and SET_PAIR are valid on the wire. */
enum sp_broker_request {
    SP_BROKER_NONE = 0,
    SP_BROKER_GET_PAIR = 1,     /* client -> broker: key and mode */
    SP_BROKER_SET_PAIR = 2,     /* broker -> client: one socket end */
    SP_BROKER_MAX = 3,
};

/* Longest key a GET_PAIR can carry, in bytes.  The shortest is 1. */
#define SP_BROKER_MAX_KEY_LENGTH 1024

/* Pairing modes: NONE pairs with NONE, CLIENT with SERVER, and no other way. */
enum sp_broker_get_pair_mode {
    SP_BROKER_PAIR_MODE_NONE = 0,
    SP_BROKER_PAIR_MODE_CLIENT = 1,
    SP_BROKER_PAIR_MODE_SERVER = 2,
    SP_BROKER_PAIR_MODE_MAX = 3,
};

/* Payload of a GET_PAIR.  Key bytes past key_len are ignored (send zeros). */
struct sp_broker_get_pair_request {
    uint16_t mode;                          /* enum sp_broker_get_pair_mode */
    uint16_t key_len;                       /* 1..SP_BROKER_MAX_KEY_LENGTH */
    uint8_t key[SP_BROKER_MAX_KEY_LENGTH];
} __attribute__((__packed__));

/* Low bits of sp_broker_msg.flags: the protocol version.  Other bits are 0. */
#define SP_BROKER_PROTOCOL_VERSION_MASK 0xf

/* Most descriptors a message can describe in sp_broker_msg.fds. */
#define SP_BROKER_PROTOCOL_MAX_FDS 64

/*
 * One message.  Everything before 'fds' travels on the wire; 'fds' and
 * 'n_fds' describe the descriptors that came with it as SCM_RIGHTS data
 * (GET_PAIR: none; SET_PAIR: exactly one).
 */
struct sp_broker_msg {
    uint32_t request;           /* enum sp_broker_request */
    uint32_t flags;             /* version in the low 4 bits */
    uint32_t size;              /* payload size: 1028 GET_PAIR, 8 SET_PAIR */
    union {
        uint64_t u64;           /* SET_PAIR: must be 0 */
        struct sp_broker_get_pair_request get_pair;
    } payload;
    int fds[SP_BROKER_PROTOCOL_MAX_FDS];
    int n_fds;
} __attribute__((__packed__));

/* Bytes of a message on the wire: 1044 (see the comment at the top). */
#define SP_BROKER_MESSAGE_SIZE offsetof(struct sp_broker_msg, fds[0])

/* The version this header describes. */
#define SP_BROKER_PROTOCOL_VERSION 0x1

#ifdef __cplusplus
}
#endif

#endif /* SOCKETPAIR_BROKER_PROTO_H */
