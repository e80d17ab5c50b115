// Package relay forwards a Unix stream connection to another, bytes and
// SCM_RIGHTS descriptors both ways, and keeps every descriptor on the byte
// it was sent with.
//
// That takes care. Linux delivers a stream socket's descriptors with the
// first byte of the send that carried them, and one recvmsg stops right
// after that send's bytes but glues the bytes of earlier sends in front of
// them. A relay that forwarded each read as one sendmsg would move the
// descriptors onto the first byte of an earlier message whenever messages
// queue up, which vhost-user's front-ends provoke by sending several
// requests back to back. The reader here finds where the
// descriptor-carrying send begins (see recv_linux.go) and forwards the
// bytes before it on their own, so the far side sees the same boundaries
// between plain and descriptor-carrying data as a direct connection would.
//
// Handoff is the other way to join two programs: when both ends of a
// brokered socket are one-socketctl, one hands its connection to the
// program over the brokered socket and leaves the data path.
package relay
