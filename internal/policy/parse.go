package policy

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/one-socket/one-socket/internal/safefile"
	"io"
	"os/user"
	"strconv"
	"strings"

	"github.com/one-socket/one-socket/libspbroker"
)

// maxLine bounds a line, so that a corrupt or hostile file cannot make
// the daemon buffer without limit. A 1024-byte key in hex is 2052 bytes.
const maxLine = 64 << 10

// ParseError is a mistake in a policy file. Error gives
// "file:line: message"; the message names the field at fault.
type ParseError struct {
	File string
	Line int
	Col  int // 1-based byte column of the field at fault, 0 if none
	Msg  string
	Err  error // the cause, such as a failed user lookup, or nil
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

func (e *ParseError) Unwrap() error { return e.Err }

// Name lookups, replaced in tests. os/user reads /etc/passwd and
// /etc/group itself when built without cgo, or asks NSS through libc.
var (
	lookupUser = func(name string) (string, error) {
		u, err := user.Lookup(name)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	}
	lookupGroup = func(name string) (string, error) {
		g, err := user.LookupGroup(name)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	}
)

// Load reads the policy file at path. The policy is only as strong as
// the file's permissions: it refuses, without blocking, a file that is
// not regular, or that anyone but root or the daemon's uid owns or may
// write, or that lies in a directory another user could change
// (safefile.OpenTrusted).
func Load(path string) (*Policy, error) {
	f, err := safefile.OpenTrusted(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a policy from r; name is the file name used in errors and
// reasons. An empty policy (no rules) is valid and denies everything.
func Parse(name string, r io.Reader) (*Policy, error) {
	p := &Policy{name: name, noMatch: name + ": no rule matched (default deny)"}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine+1)
	line := 0
	for sc.Scan() {
		line++
		ps := lineParser{file: name, line: line}
		r, ok, err := ps.parse(sc.Bytes())
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		r.reason = fmt.Sprintf("%s:%d: %s", name, line, r.text())
		if r.allow {
			p.allowCount++
		}
		p.rules = append(p.rules, r)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{File: name, Line: line + 1, Msg: fmt.Sprintf("line longer than %d bytes", maxLine), Err: err}
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

type lineParser struct {
	file string
	line int
}

func (ps *lineParser) errorf(col int, err error, format string, args ...any) error {
	return &ParseError{File: ps.file, Line: ps.line, Col: col, Msg: fmt.Sprintf(format, args...), Err: err}
}

// field is one whitespace-separated word and its 1-based column.
type field struct {
	s   string
	col int
}

// split cuts a line into fields at spaces and tabs. '#' at the start of a
// field begins a comment, so "key=a#b" is a key but "allow # why" has a
// comment. Control bytes are refused: they have no place in a text key
// (binary keys are written in hex) and would end up in logs.
func (ps *lineParser) split(b []byte) ([]field, error) {
	var fs []field
	for i := 0; i < len(b); {
		c := b[i]
		if c == ' ' || c == '\t' {
			i++
			continue
		}
		if c == '#' {
			break
		}
		j := i
		for ; j < len(b) && b[j] != ' ' && b[j] != '\t'; j++ {
			if b[j] < 0x20 || b[j] == 0x7f {
				return nil, ps.errorf(j+1, nil, "control character %#02x (write binary keys as key=hex:...)", b[j])
			}
		}
		fs = append(fs, field{string(b[i:j]), i + 1})
		i = j
	}
	return fs, nil
}

// parse compiles one line; ok is false for a blank or comment line.
func (ps *lineParser) parse(b []byte) (r rule, ok bool, err error) {
	fs, err := ps.split(b)
	if err != nil || len(fs) == 0 {
		return r, false, err
	}
	r = rule{line: ps.line, modes: modeAny}
	switch fs[0].s {
	case "allow":
		r.allow = true
	case "deny":
	default:
		return r, false, ps.errorf(fs[0].col, nil, "unknown action %q (want allow or deny)", fs[0].s)
	}
	seen := map[string]bool{}
	for _, f := range fs[1:] {
		k, v, found := strings.Cut(f.s, "=")
		switch k {
		case "uid", "gid", "key", "mode":
		default:
			return r, false, ps.errorf(f.col, nil, "unknown field %q (want uid=, gid=, key= or mode=)", k)
		}
		if !found {
			return r, false, ps.errorf(f.col, nil, "field %q has no \"=\" and value", k)
		}
		if v == "" {
			return r, false, ps.errorf(f.col, nil, "empty value for %s= (use %s=* for any)", k, k)
		}
		if seen[k] {
			return r, false, ps.errorf(f.col, nil, "%s= given twice", k)
		}
		seen[k] = true
		switch k {
		case "uid":
			r.uids, err = ps.ids(f, v, "uid", "user", lookupUser)
		case "gid":
			r.gids, err = ps.ids(f, v, "gid", "group", lookupGroup)
		case "key":
			err = ps.key(&r, f, v)
		case "mode":
			r.modes, err = ps.modes(f, v)
		}
		if err != nil {
			return r, false, err
		}
	}
	return r, true, nil
}

// ids parses a uid or gid list; nil means any.
func (ps *lineParser) ids(f field, v, what, kind string, lookup func(string) (string, error)) ([]uint32, error) {
	if v == "*" {
		return nil, nil
	}
	var out []uint32
	for item := range strings.SplitSeq(v, ",") {
		if item == "" {
			return nil, ps.errorf(f.col, nil, "empty item in %s list %q", what, v)
		}
		if item == "*" {
			return nil, ps.errorf(f.col, nil, "\"*\" must stand alone in %s=", what)
		}
		num := item
		if !isDigits(item) {
			id, err := lookup(item)
			if err != nil {
				var uu user.UnknownUserError
				var ug user.UnknownGroupError
				if errors.As(err, &uu) || errors.As(err, &ug) {
					return nil, ps.errorf(f.col, err, "unknown %s %q in %s=", kind, item, what)
				}
				return nil, ps.errorf(f.col, err, "looking up %s %q in %s=: %v", kind, item, what, err)
			}
			num = id
		}
		n, err := strconv.ParseUint(num, 10, 32)
		// (uid_t)-1 means "no id" to the kernel; no peer has it.
		if err != nil || n == 1<<32-1 {
			return nil, ps.errorf(f.col, err, "%s %q out of range (0 to %d)", what, num, uint32(1<<32-2))
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// key parses a key= value: "*", hex:DIGITS, prefix:TEXT or a pattern.
func (ps *lineParser) key(r *rule, f field, v string) error {
	const maxKey = libspbroker.MaxKeyLength
	switch {
	case v == "*":
		return nil
	case strings.HasPrefix(v, "hex:"):
		d := v[len("hex:"):]
		b, err := hex.DecodeString(d)
		switch {
		case errors.Is(err, hex.ErrLength):
			return ps.errorf(f.col, err, "key=hex: has an odd number of digits")
		case err != nil:
			var ib hex.InvalidByteError
			errors.As(err, &ib)
			return ps.errorf(f.col, err, "key=hex: has a non-hex digit %q", byte(ib))
		case len(b) == 0:
			return ps.errorf(f.col, nil, "empty key=hex:")
		case len(b) > maxKey:
			return ps.errorf(f.col, nil, "key=hex: of %d bytes is longer than the %d a key may have", len(b), maxKey)
		}
		r.key, r.lit, r.src = keyExact, b, "hex:"+hex.EncodeToString(b)
	case strings.HasPrefix(v, "prefix:"):
		t := v[len("prefix:"):]
		switch {
		case t == "":
			return ps.errorf(f.col, nil, "empty key=prefix: (use key=* for any key)")
		case len(t) > maxKey:
			return ps.errorf(f.col, nil, "key=prefix: of %d bytes is longer than the %d a key may have", len(t), maxKey)
		}
		r.key, r.lit, r.src = keyPrefix, []byte(t), v
	default:
		toks, err := compileGlob(v)
		if err != nil {
			return ps.errorf(f.col, err, "bad key pattern %q: %v", v, err)
		}
		need := 0
		for _, t := range toks {
			if !t.star {
				need++
			}
		}
		if need > maxKey {
			return ps.errorf(f.col, nil, "key pattern %q matches no key: it needs %d bytes, a key has at most %d", v, need, maxKey)
		}
		r.key, r.toks, r.src = keyGlob, toks, v
		simplify(r)
	}
	return nil
}

// simplify turns a pattern that is a literal, or a literal and a final
// '*', into an exact or prefix match, and "*" alone (say "**") into any:
// the common rules then cost a bytes comparison.
func simplify(r *rule) {
	toks := r.toks
	star := len(toks) > 0 && toks[len(toks)-1].star
	if star {
		toks = toks[:len(toks)-1]
	}
	lit := make([]byte, 0, len(toks))
	for i := range toks {
		c, ok := toks[i].set.single()
		if toks[i].star || !ok {
			return
		}
		lit = append(lit, c)
	}
	switch {
	case star && len(lit) == 0:
		r.key = keyAny
		r.src = ""
	case star:
		r.key, r.lit = keyPrefix, lit
	default:
		r.key, r.lit = keyExact, lit
	}
	r.toks = nil
}

// modes parses a mode list into a bit set.
func (ps *lineParser) modes(f field, v string) (uint8, error) {
	if v == "*" {
		return modeAny, nil
	}
	var set uint8
	for item := range strings.SplitSeq(v, ",") {
		var m libspbroker.Mode
		switch item {
		case "none":
			m = libspbroker.ModeNone
		case "client":
			m = libspbroker.ModeClient
		case "server":
			m = libspbroker.ModeServer
		case "":
			return 0, ps.errorf(f.col, nil, "empty item in mode list %q", v)
		case "*":
			return 0, ps.errorf(f.col, nil, "\"*\" must stand alone in mode=")
		default:
			return 0, ps.errorf(f.col, nil, "unknown mode %q (want none, client or server)", item)
		}
		set |= 1 << m
	}
	return set, nil
}
