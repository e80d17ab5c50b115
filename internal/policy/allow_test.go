package policy_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/one-socket/one-socket/internal/policy"
	"github.com/one-socket/one-socket/libspbroker"
)

const (
	none   = libspbroker.ModeNone
	client = libspbroker.ModeClient
	server = libspbroker.ModeServer
)

// vhostUser is the vhost-user example of doc/security.md.
const vhostUser = `# QEMU (uid 107) connects to the switch as the vhost-user client.
allow uid=107 key=vm-* mode=client
# Open vSwitch runs as root in group openvswitch and serves every port.
allow uid=0 gid=openvswitch key=vm-* mode=server
# A health check anyone may use, in both directions.
allow key=hex:70696e67 mode=none
deny uid=107 key=prefix:vm-admin
allow uid=107 key=vm-admin-*
`

func TestAllow(t *testing.T) {
	fakeNames(t)
	p := parse(t, vhostUser)
	qemu := policy.Cred{PID: 10, UID: 107, GID: 107}
	ovs := policy.Cred{PID: 20, UID: 0, GID: 990}
	other := policy.Cred{PID: 30, UID: 1000, GID: 1000}
	rootNoGroup := policy.Cred{UID: 0, GID: 0}
	for _, tc := range []struct {
		name    string
		cred    policy.Cred
		key     string
		mode    libspbroker.Mode
		allowed bool
		rule    int
	}{
		{"qemu as client", qemu, "vm-1", client, true, 2},
		{"qemu key outside vm-*", qemu, "db-1", client, false, 0},
		{"qemu may not serve", qemu, "vm-1", server, false, 0},
		{"qemu may not use none", qemu, "vm-1", none, false, 0},
		{"star matches slash", qemu, "vm-1/net0", client, true, 2},
		{"star matches empty", qemu, "vm-", client, true, 2},
		{"first match wins over a later deny", qemu, "vm-admin", client, true, 2},
		{"ovs serves", ovs, "vm-1", server, true, 4},
		{"ovs may not connect", ovs, "vm-1", client, false, 0},
		{"uid 0 without the group", rootNoGroup, "vm-1", server, false, 0},
		{"other user, vm key", other, "vm-1", client, false, 0},
		{"exact hex key, anyone", other, "ping", none, true, 6},
		{"exact means exact", other, "ping2", none, false, 0},
		{"exact key, wrong mode", other, "ping", client, false, 0},
		{"empty key is invalid", qemu, "", client, false, 0},
		{"overlong key is invalid", qemu, "vm-" + strings.Repeat("x", 1022), client, false, 0},
		{"longest key", qemu, "vm-" + strings.Repeat("x", 1021), client, true, 2},
		{"invalid mode", qemu, "vm-1", libspbroker.ModeMax, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Allow(tc.cred, []byte(tc.key), tc.mode)
			assert.Equal(t, tc.allowed, d.Allowed, d.Reason)
			assert.Equal(t, tc.rule, d.Rule, d.Reason)
		})
	}
}

func TestAllowFirstMatchWins(t *testing.T) {
	p := parse(t, "deny uid=5 key=a*\nallow key=a*\ndeny key=*\nallow\n")
	d := p.Allow(policy.Cred{UID: 5}, []byte("ab"), none)
	assert.Equal(t, policy.Decision{Allowed: false, Rule: 1, Reason: "policy.conf:1: deny uid=5 key=a*"}, d)
	d = p.Allow(policy.Cred{UID: 6}, []byte("ab"), none)
	assert.Equal(t, policy.Decision{Allowed: true, Rule: 2, Reason: "policy.conf:2: allow key=a*"}, d)
	d = p.Allow(policy.Cred{UID: 6}, []byte("b"), none)
	assert.Equal(t, policy.Decision{Allowed: false, Rule: 3, Reason: "policy.conf:3: deny"}, d)
}

func TestAllowDefaultDeny(t *testing.T) {
	for _, text := range []string{"", "# only comments\n", "allow uid=1\n", "deny\n"} {
		p := parse(t, text)
		d := p.Allow(policy.Cred{UID: 2}, []byte("k"), client)
		assert.False(t, d.Allowed, "%q", text)
		if strings.HasPrefix(text, "deny") {
			assert.Equal(t, 1, d.Rule)
		} else {
			assert.Equal(t, policy.Decision{Reason: "policy.conf: no rule matched (default deny)"}, d)
		}
	}
}

func TestAllowNilPolicy(t *testing.T) {
	var p *policy.Policy
	for _, key := range []string{"k", "", strings.Repeat("x", 2000)} {
		d := p.Allow(policy.Cred{UID: 12345}, []byte(key), libspbroker.ModeMax)
		assert.Equal(t, policy.Decision{Allowed: true, Reason: "no policy configured"}, d)
	}
	assert.Empty(t, p.Format())
}

func TestAllowIDs(t *testing.T) {
	p := parse(t, "allow uid=1,2 gid=10,20\nallow gid=30\nallow uid=3\n")
	for _, tc := range []struct {
		uid, gid uint32
		rule     int
	}{
		{1, 10, 1}, {2, 20, 1}, {1, 11, 0}, {4, 10, 0},
		{9, 30, 2}, {1, 30, 2},
		{3, 99, 3}, {3, 30, 2},
	} {
		d := p.Allow(policy.Cred{UID: tc.uid, GID: tc.gid}, []byte("k"), none)
		assert.Equal(t, tc.rule, d.Rule, "uid %d gid %d", tc.uid, tc.gid)
		assert.Equal(t, tc.rule != 0, d.Allowed)
	}
}

func TestAllowKeys(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		nomatch []string
	}{
		{"abc", []string{"abc"}, []string{"ab", "abcd", "ABC"}},
		{"a*", []string{"a", "ab", "a/b/c", "a\xff"}, []string{"b", "ba"}},
		{"*c", []string{"c", "abc", "\x00c"}, []string{"ca", "ab"}},
		{"a*b*c", []string{"abc", "aXbYc", "abbbc", "acbc"}, []string{"acb", "ab"}},
		{"*a*a*a*b", []string{"aaab", "xaxaxaxb"}, []string{"aaa" + strings.Repeat("a", 500)}},
		{"?", []string{"a", "\x00", "\xff"}, []string{"ab"}},
		{"vm-[0-9][0-9]", []string{"vm-00", "vm-42"}, []string{"vm-4", "vm-4a"}},
		{"[^a-y]", []string{"z", "\xff", "\x00"}, []string{"a", "m"}},
		{"[!a]", []string{"b"}, []string{"a"}},
		{`[\]\-\\]`, []string{"]", "-", `\`}, []string{"a"}},
		{`\*\?`, []string{"*?"}, []string{"a?", "*a"}},
		{`\hex:1`, []string{"hex:1"}, []string{"\x01"}},
		{"a]b", []string{"a]b"}, nil},
		{"é*", []string{"é", "éa"}, []string{"e"}},
		{"\xe9?", []string{"\xe9a", "\xe9\xe9"}, []string{"é"}},
		{"?\x80", []string{"\xc3\x80"}, []string{"é"}},
		{"hex:00ff80", []string{"\x00\xff\x80"}, []string{"\x00\xff", "\x00\xff\x80\x00"}},
		{"hex:ff", []string{"\xff"}, []string{"f"}},
		{"prefix:vm-", []string{"vm-", "vm-1"}, []string{"vm", "xvm-"}},
		{"prefix:a*", []string{"a*", "a*b"}, []string{"ab"}},
		// Keys are not paths: nothing resolves "..", so a key can only
		// reach what its own bytes match, and the broker pairs only
		// equal keys.
		{"tenant-b/*", []string{"tenant-b/x", "tenant-b/../tenant-a/x"}, []string{"tenant-a/../tenant-b/x", "./tenant-b/x", "tenant-b"}},
		{"a/../b", []string{"a/../b"}, []string{"b", "a/b", "a/./b"}},
		{"prefix:..", []string{"..", "../x"}, []string{".", "x/.."}},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			p := parse(t, "allow key="+tc.pattern+"\n")
			for _, k := range tc.match {
				assert.True(t, p.Allow(policy.Cred{}, []byte(k), none).Allowed, "%q should match %q", tc.pattern, k)
			}
			for _, k := range tc.nomatch {
				assert.False(t, p.Allow(policy.Cred{}, []byte(k), none).Allowed, "%q should not match %q", tc.pattern, k)
			}
		})
	}
}

// Allow runs for every request, so it must not allocate.
func TestAllowAllocs(t *testing.T) {
	fakeNames(t)
	p := parse(t, vhostUser+"allow key=*x[0-9]?y*\n")
	key := []byte("vm-" + strings.Repeat("x", 1000) + "x1zy")
	for _, k := range [][]byte{[]byte("vm-1"), []byte("ping"), key, []byte("none")} {
		n := testing.AllocsPerRun(100, func() { p.Allow(policy.Cred{UID: 1000}, k, none) })
		assert.Zero(t, n, "%q", k)
	}
}

// benchPolicy is a plausible Kubernetes node policy: a dozen rules, the
// common one last.
const benchPolicy = `deny uid=0 key=prefix:secret-
allow uid=1001 key=net-*-eth[0-9] mode=client
allow uid=1002 key=net-*-eth[0-9] mode=server
allow uid=2000,2001,2002 gid=2000 key=metrics-? mode=none
allow uid=3000 key=hex:deadbeef
allow gid=4000 key=pod-*-[a-f0-9][a-f0-9][a-f0-9][a-f0-9]-vhost mode=client
allow uid=5000 key=storage-*
allow uid=5001 key=storage-*
allow uid=5002 key=prefix:backup/
allow uid=107 key=vm-* mode=client
allow uid=0 gid=990 key=vm-* mode=server
`

func BenchmarkAllow(b *testing.B) {
	p := parse(b, benchPolicy)
	long := []byte("pod-" + strings.Repeat("q", 900) + "-beef-vhost")
	for _, bc := range []struct {
		name string
		cred policy.Cred
		key  []byte
		mode libspbroker.Mode
		want bool
	}{
		{"first rule", policy.Cred{UID: 0}, []byte("secret-1"), client, false},
		{"last rule prefix", policy.Cred{UID: 0, GID: 990}, []byte("vm-123"), server, true},
		{"glob", policy.Cred{UID: 1001}, []byte("net-pod1-eth0"), client, true},
		{"glob 1KiB key", policy.Cred{UID: 7, GID: 4000}, long, client, true},
		{"default deny", policy.Cred{UID: 9999, GID: 9999}, []byte("vm-123"), client, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if d := p.Allow(bc.cred, bc.key, bc.mode); d.Allowed != bc.want {
				b.Fatalf("got %+v", d)
			}
			b.ReportAllocs()
			for b.Loop() {
				p.Allow(bc.cred, bc.key, bc.mode)
			}
		})
	}
}
