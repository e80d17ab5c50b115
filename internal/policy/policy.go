package policy

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/one-socket/one-socket/libspbroker"
)

// Cred is what the kernel says about a peer (SO_PEERCRED) when it
// connected. GID is the peer's primary group only: the kernel does not
// report supplementary groups here. PID is for logs; rules never match
// on it, since a pid can be reused.
type Cred struct {
	PID      int32
	UID, GID uint32
}

// Decision is the result of [Policy.Allow].
type Decision struct {
	Allowed bool
	// Rule is the 1-based line of the rule that decided, or 0 when no rule
	// did (no policy, no matching rule, or an invalid request).
	Rule int
	// Reason says why, for logs: the deciding rule with its file and line,
	// or the default. It is built at load time, so it costs nothing here.
	Reason string
}

// Policy is a loaded policy file. It is immutable and safe for concurrent
// use. The nil *Policy allows everything.
type Policy struct {
	name       string
	rules      []rule
	noMatch    string // Reason when no rule matches
	allowCount int
}

// Reasons that do not depend on a file.
const (
	reasonNoPolicy = "no policy configured"
	reasonInvalid  = "invalid key length or mode"
)

type keyKind uint8

const (
	keyAny keyKind = iota
	keyExact
	keyPrefix
	keyGlob
)

// rule is one compiled line. A nil uid or gid list matches anyone: a list
// given in the file is never empty.
type rule struct {
	line   int
	allow  bool
	uids   []uint32
	gids   []uint32
	modes  uint8 // bit 1<<mode; modeAny when not restricted
	key    keyKind
	lit    []byte // keyExact, keyPrefix
	toks   []gtok // keyGlob
	src    string // the key field's value in canonical form
	reason string
}

const modeAny = 1<<libspbroker.ModeNone | 1<<libspbroker.ModeClient | 1<<libspbroker.ModeServer

// Allow decides whether a peer with credentials c may ask for key in mode.
// The first rule matching all of its fields decides; when none matches,
// the request is denied. A key of the wrong length or an invalid mode is
// denied by any policy: the broker refuses those before asking, and a
// policy must not be the thing that lets them through.
func (p *Policy) Allow(c Cred, key []byte, mode libspbroker.Mode) Decision {
	if p == nil {
		return Decision{Allowed: true, Reason: reasonNoPolicy}
	}
	if len(key) < 1 || len(key) > libspbroker.MaxKeyLength || mode >= libspbroker.ModeMax {
		return Decision{Reason: reasonInvalid}
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.matches(c, key, mode) {
			return Decision{Allowed: r.allow, Rule: r.line, Reason: r.reason}
		}
	}
	return Decision{Reason: p.noMatch}
}

// matches tests the cheap fields first; the key last.
func (r *rule) matches(c Cred, key []byte, mode libspbroker.Mode) bool {
	if r.modes&(1<<mode) == 0 {
		return false
	}
	if r.uids != nil && !contains(r.uids, c.UID) {
		return false
	}
	if r.gids != nil && !contains(r.gids, c.GID) {
		return false
	}
	switch r.key {
	case keyExact:
		return bytes.Equal(key, r.lit)
	case keyPrefix:
		return bytes.HasPrefix(key, r.lit)
	case keyGlob:
		return matchGlob(r.toks, key)
	}
	return true
}

func contains(list []uint32, v uint32) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// String summarises p for a log line.
func (p *Policy) String() string {
	if p == nil {
		return "no policy (everything allowed)"
	}
	n := len(p.rules)
	return fmt.Sprintf("policy %s: %d rule%s (%d allow, %d deny), default deny",
		p.name, n, plural(n), p.allowCount, n-p.allowCount)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Format returns p in canonical form: one rule per line in file order,
// fields in the order uid, gid, key, mode, names resolved to numbers, no
// comments. Parsing it gives a policy that decides alike, which also makes
// it a way to show what a loaded policy means.
func (p *Policy) Format() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	for i := range p.rules {
		b.WriteString(p.rules[i].text())
		b.WriteByte('\n')
	}
	return b.String()
}

// text renders one rule canonically.
func (r *rule) text() string {
	var b strings.Builder
	if r.allow {
		b.WriteString("allow")
	} else {
		b.WriteString("deny")
	}
	writeIDs(&b, " uid=", r.uids)
	writeIDs(&b, " gid=", r.gids)
	if r.key != keyAny {
		b.WriteString(" key=")
		b.WriteString(r.src)
	}
	if r.modes != modeAny {
		b.WriteString(" mode=")
		sep := ""
		for m := libspbroker.ModeNone; m < libspbroker.ModeMax; m++ {
			if r.modes&(1<<m) != 0 {
				b.WriteString(sep)
				b.WriteString(m.String())
				sep = ","
			}
		}
	}
	return b.String()
}

func writeIDs(b *strings.Builder, field string, ids []uint32) {
	if ids == nil {
		return
	}
	b.WriteString(field)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(id), 10))
	}
}
