package policy_test

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/policy"
)

// fakeNames gives tests a user and group database of their own, so that
// they do not depend on the machine's accounts.
func fakeNames(t testing.TB) {
	t.Helper()
	restore := policy.FakeNames(
		map[string]string{"qemu": "107", "root": "0", "huge": "4294967296"},
		map[string]string{"kvm": "36", "openvswitch": "990", "root": "0"},
	)
	t.Cleanup(restore)
}

func parse(t testing.TB, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("policy.conf", strings.NewReader(text))
	require.NoError(t, err)
	return p
}

func TestParseCanonical(t *testing.T) {
	fakeNames(t)
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty file", "", ""},
		{"comments and blanks", "# a comment\n\n   \t\n  # indented\n", ""},
		{"bare actions", "allow\ndeny\n", "allow\ndeny\n"},
		{"trailing comment", "allow uid=1 # why\n", "allow uid=1\n"},
		{"hash inside a field is text", "allow key=a#b\n", "allow key=a#b\n"},
		{"tabs and CRLF", "\tallow\tuid=1\r\ndeny\r\n", "allow uid=1\ndeny\n"},
		{"no final newline", "allow uid=1", "allow uid=1\n"},
		{"field order is canonical", "allow mode=client key=k gid=2 uid=1\n", "allow uid=1 gid=2 key=k mode=client\n"},
		{"stars are omitted", "allow uid=* gid=* key=* mode=*\n", "allow\n"},
		{"double star is any key", "allow key=**\n", "allow\n"},
		{"uid list", "allow uid=0,1,65534\n", "allow uid=0,1,65534\n"},
		{"user names", "allow uid=qemu,root,1000\n", "allow uid=107,0,1000\n"},
		{"group names", "allow gid=openvswitch,kvm,5\n", "allow gid=990,36,5\n"},
		{"largest id", "allow uid=4294967294\n", "allow uid=4294967294\n"},
		{"leading zeros", "allow uid=007\n", "allow uid=7\n"},
		{"modes in canonical order", "allow mode=server,none\n", "allow mode=none,server\n"},
		{"every mode is any mode", "allow mode=server,none,client\n", "allow\n"},
		{"one mode", "deny mode=none\n", "deny mode=none\n"},
		{"glob", "allow key=vm-*\n", "allow key=vm-*\n"},
		{"glob class", "allow key=vm-[0-9]?[^x]\n", "allow key=vm-[0-9]?[^x]\n"},
		{"escaped glob", `allow key=\hex:1` + "\n", `allow key=\hex:1` + "\n"},
		{"hex lowercased", "allow key=hex:00FFab\n", "allow key=hex:00ffab\n"},
		{"prefix", "allow key=prefix:vm-[\n", "allow key=prefix:vm-[\n"},
		{"prefix may hold stars", "allow key=prefix:*\n", "allow key=prefix:*\n"},
		{"non-UTF-8 text key", "allow key=\xff\xfe*\n", "allow key=\xff\xfe*\n"},
		{"longest hex key", "allow key=hex:" + strings.Repeat("ab", 1024) + "\n", "allow key=hex:" + strings.Repeat("ab", 1024) + "\n"},
		{"line numbers survive comments", "# c\n\nallow\n", "allow\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := parse(t, tc.in)
			assert.Equal(t, tc.want, p.Format())
			again := parse(t, p.Format())
			assert.Equal(t, p.Format(), again.Format(), "canonical form is stable")
		})
	}
}

func TestParseErrors(t *testing.T) {
	fakeNames(t)
	for _, tc := range []struct {
		name, in, want string
		col            int
	}{
		{"unknown action", "permit\n", `policy.conf:1: unknown action "permit" (want allow or deny)`, 1},
		{"action is case-sensitive", "Allow\n", `policy.conf:1: unknown action "Allow" (want allow or deny)`, 1},
		{"line number counts comments", "# c\n\nallow\n  deny bogus=1\n", `policy.conf:4: unknown field "bogus" (want uid=, gid=, key= or mode=)`, 8},
		{"field without =", "allow uid\n", `policy.conf:1: field "uid" has no "=" and value`, 7},
		{"empty value", "allow gid=\n", `policy.conf:1: empty value for gid= (use gid=* for any)`, 7},
		{"duplicate field", "allow uid=1 uid=2\n", `policy.conf:1: uid= given twice`, 13},
		{"unknown mode", "allow mode=client,srv\n", `policy.conf:1: unknown mode "srv" (want none, client or server)`, 7},
		{"mode case", "allow mode=Client\n", `policy.conf:1: unknown mode "Client" (want none, client or server)`, 7},
		{"empty mode item", "allow mode=client,\n", `policy.conf:1: empty item in mode list "client,"`, 7},
		{"star in mode list", "allow mode=*,none\n", `policy.conf:1: "*" must stand alone in mode=`, 7},
		{"empty uid item", "allow uid=1,,2\n", `policy.conf:1: empty item in uid list "1,,2"`, 7},
		{"star in uid list", "allow uid=1,*\n", `policy.conf:1: "*" must stand alone in uid=`, 7},
		{"unknown user", "allow uid=nobodyhere\n", `policy.conf:1: unknown user "nobodyhere" in uid=`, 7},
		{"unknown group", "allow gid=qemu\n", `policy.conf:1: unknown group "qemu" in gid=`, 7},
		{"uid too large", "allow uid=4294967296\n", `policy.conf:1: uid "4294967296" out of range (0 to 4294967294)`, 7},
		{"uid -1 is not an id", "allow uid=4294967295\n", `policy.conf:1: uid "4294967295" out of range (0 to 4294967294)`, 7},
		{"negative uid", "allow uid=-1\n", `policy.conf:1: unknown user "-1" in uid=`, 7},
		{"name resolving out of range", "allow uid=huge\n", `policy.conf:1: uid "4294967296" out of range (0 to 4294967294)`, 7},
		{"odd hex", "allow key=hex:abc\n", `policy.conf:1: key=hex: has an odd number of digits`, 7},
		{"bad hex digit", "allow key=hex:0g\n", `policy.conf:1: key=hex: has a non-hex digit 'g'`, 7},
		{"empty hex", "allow key=hex:\n", `policy.conf:1: empty key=hex:`, 7},
		{"hex too long", "allow key=hex:" + strings.Repeat("00", 1025) + "\n", `policy.conf:1: key=hex: of 1025 bytes is longer than the 1024 a key may have`, 7},
		{"empty prefix", "allow key=prefix:\n", `policy.conf:1: empty key=prefix: (use key=* for any key)`, 7},
		{"prefix too long", "allow key=prefix:" + strings.Repeat("a", 1025) + "\n", `policy.conf:1: key=prefix: of 1025 bytes is longer than the 1024 a key may have`, 7},
		{"pattern too long", "allow key=" + strings.Repeat("?", 1025) + "*\n", `policy.conf:1: key pattern "` + strings.Repeat("?", 1025) + `*" matches no key: it needs 1025 bytes, a key has at most 1024`, 7},
		{"unterminated class", "allow key=vm-[0-9\n", `policy.conf:1: bad key pattern "vm-[0-9": unterminated [`, 7},
		{"empty class", "allow key=a[]\n", `policy.conf:1: bad key pattern "a[]": empty []`, 7},
		{"reversed range", "allow key=[z-a]\n", `policy.conf:1: bad key pattern "[z-a]": reversed range 'z'-'a' in []`, 7},
		{"unescaped dash", "allow key=[-a]\n", `policy.conf:1: bad key pattern "[-a]": unescaped '-' in []`, 7},
		{"trailing backslash", `allow key=a\` + "\n", `policy.conf:1: bad key pattern "a\\": trailing \`, 7},
		{"trailing backslash in class", `allow key=[a\` + "\n", `policy.conf:1: bad key pattern "[a\\": trailing \`, 7},
		{"control character", "allow key=a\x01b\n", `policy.conf:1: control character 0x01 (write binary keys as key=hex:...)`, 12},
		{"NUL", "allow\x00\n", `policy.conf:1: control character 0x00 (write binary keys as key=hex:...)`, 6},
		{"line too long", "allow\n" + strings.Repeat("#", 70000) + "\n", `policy.conf:2: line longer than 65536 bytes`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse("policy.conf", strings.NewReader(tc.in))
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Equal(t, tc.want, err.Error())
			var pe *policy.ParseError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, tc.col, pe.Col, "column")
		})
	}
}

func TestParseLookupCause(t *testing.T) {
	fakeNames(t)
	_, err := policy.Parse("p", strings.NewReader("allow uid=ghost\n"))
	var unknown user.UnknownUserError
	assert.ErrorAs(t, err, &unknown, "the lookup error is kept for errors.As")
}

// The real databases: root is uid 0 and group 0 on any Linux system.
func TestParseSystemNames(t *testing.T) {
	p := parse(t, "allow uid=root gid=root\n")
	assert.Equal(t, "allow uid=0 gid=0\n", p.Format())
	_, err := policy.Parse("p", strings.NewReader("allow uid=no-such-user-one-socket\n"))
	assert.EqualError(t, err, `p:1: unknown user "no-such-user-one-socket" in uid=`)
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParseReadError(t *testing.T) {
	_, err := policy.Parse("p.conf", failingReader{})
	assert.EqualError(t, err, "p.conf: disk on fire")
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.conf")
	require.NoError(t, os.WriteFile(path, []byte("allow uid=1\ndeny\nallow mode=none\n"), 0o644))

	p, err := policy.Load(path)
	require.NoError(t, err)
	assert.Equal(t, "policy "+path+": 3 rules (2 allow, 1 deny), default deny", p.String())
	assert.Equal(t, []int{1, 2, 3}, p.RuleLines())

	require.NoError(t, os.Chmod(path, 0o666))
	_, err = policy.Load(path)
	assert.EqualError(t, err, path+": unsafe file: writable by its group or by everyone (mode 0666)")

	_, err = policy.Load(dir)
	assert.EqualError(t, err, dir+": unsafe file: a directory, not a regular file")

	_, err = policy.Load(filepath.Join(dir, "missing"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	bad := filepath.Join(dir, "bad.conf")
	require.NoError(t, os.WriteFile(bad, []byte("allow\nallow mode=srv\n"), 0o600))
	_, err = policy.Load(bad)
	assert.EqualError(t, err, bad+`:2: unknown mode "srv" (want none, client or server)`)
}

func TestString(t *testing.T) {
	var nilPolicy *policy.Policy
	assert.Equal(t, "no policy (everything allowed)", nilPolicy.String())
	assert.Equal(t, "policy x: 1 rule (0 allow, 1 deny), default deny", mustParse(t, "x", "deny\n").String())
	assert.Equal(t, "policy x: 0 rules (0 allow, 0 deny), default deny", mustParse(t, "x", "").String())
}

func mustParse(t *testing.T, name, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse(name, strings.NewReader(text))
	require.NoError(t, err)
	return p
}
