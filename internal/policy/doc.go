// Package policy is One Socket's optional access policy: which peers, by
// uid and primary gid, may ask for which keys in which modes.
//
// It is for the daemon, which loads a policy file once with [Load] and
// asks [Policy.Allow] for every GET_PAIR. A nil *Policy allows everything,
// so the no-policy case needs no special path. A policy that is
// configured is default-deny: a request no rule matches is refused.
//
// The file format and the security model are in doc/security.md. In
// short, one rule per line:
//
//	# action [uid=LIST] [gid=LIST] [key=PATTERN] [mode=LIST]
//	allow uid=qemu key=vm-* mode=client
//	allow uid=0 gid=openvswitch key=vm-* mode=server
//	deny key=hex:00ff
//
// The first matching rule decides. Names are resolved to numbers when the
// file is loaded, so a renamed or deleted account does not change a loaded
// policy, and Allow never touches /etc/passwd.
package policy
