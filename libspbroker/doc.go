// Package libspbroker is the Go implementation of libspbroker: the wire
// format of the SocketPair Broker Protocol, version 1, and a client for it.
//
// A SocketPair Broker listens on one Unix stream socket. Two clients that
// send a GET_PAIR with the same key and compatible modes each receive, in a
// SET_PAIR, one end of a fresh connected socketpair, and then talk to each
// other directly.
//
// The package mirrors the C library's headers: [Message] and its constants
// follow proto.h; [Dial], [Conn.SendGetPair], [Conn.ReceiveSetPair] and
// [GetPair] follow helper.h, except that GetPair, unlike sp_broker_get_pair,
// asks again through a restart of the broker until its context ends
// ([Config] turns that off). The lower-level [Connect], [SendGetPair] and
// [ReceiveSetPair] work on raw descriptors owned by the caller, for code that
// runs its own event loop. Every function says who owns the descriptors it
// returns; none of them closes a descriptor the caller passed in. The client
// is Linux-only (it relies on MSG_CMSG_CLOEXEC and the abstract namespace);
// the wire format builds everywhere.
//
// Wire size: the protocol's document lays a message out in 1040 bytes, but
// the original C implementation sends 1044 (its payload union is padded to
// 8 bytes). This package sends 1044-byte messages and accepts 1040 or 1044.
package libspbroker
