package broker_test

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// denyKeys is an Authorizer that refuses a set of keys and records who
// asked.
type denyKeys struct {
	mu    sync.Mutex
	deny  map[string]bool
	peers []broker.Peer
}

func (d *denyKeys) Authorize(p broker.Peer, key []byte, mode libspbroker.Mode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers = append(d.peers, p)
	if d.deny[string(key)] {
		return errors.New("key reserved")
	}
	return nil
}

func TestAuthorizerDenies(t *testing.T) {
	auth := &denyKeys{deny: map[string]bool{"secret": true}}
	e := startBroker(t, &broker.Config{Authorizer: auth})
	bl := snapshot(t, e)

	// A decoy waits on the key: the denied request must not reach it.
	decoy := e.park(t, "secret-decoy", libspbroker.ModeServer)
	denied := e.request(t, "secret", libspbroker.ModeClient)
	denied.expectClosed()
	denied.close()
	e.waitStats(t, "Denied == 1", func(s broker.Stats) bool { return s.Denied == 1 })
	assert.Equal(t, 1, e.Stats().Waiting)

	auth.mu.Lock()
	require.NotEmpty(t, auth.peers)
	for _, p := range auth.peers {
		assert.Equal(t, int32(os.Getpid()), p.PID)
		assert.Equal(t, uint32(os.Getuid()), p.UID)
		assert.Equal(t, uint32(os.Getgid()), p.GID)
	}
	auth.mu.Unlock()

	pairBoth(t, decoy, e.request(t, "secret-decoy", libspbroker.ModeClient))

	// Replaced at run time: the same request now pairs.
	e.SetAuthorizer(nil)
	w := e.park(t, "secret", libspbroker.ModeServer)
	pairBoth(t, w, e.request(t, "secret", libspbroker.ModeClient))
	assert.Equal(t, uint64(1), e.Stats().Denied)
	bl.verify(t)
}

// TestSetAuthorizerRechecksWaiters checks that a new policy applies to the
// clients already waiting: one it no longer allows is disconnected and
// counted as denied, and cannot be paired; the others keep their place.
func TestSetAuthorizerRechecksWaiters(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)
	banned := e.park(t, "banned", libspbroker.ModeServer)
	kept := e.park(t, "kept", libspbroker.ModeServer)
	e.waitWaiting(t, 2)

	e.SetAuthorizer(&denyKeys{deny: map[string]bool{"banned": true}})
	banned.expectClosed()
	banned.close()
	e.waitStats(t, "Denied == 1, Waiting == 1", func(s broker.Stats) bool { return s.Denied == 1 && s.Waiting == 1 })
	pairBoth(t, kept, e.request(t, "kept", libspbroker.ModeClient))
	bl.verify(t)
}

// judgeLog records which policy judged which request, as policy:key/mode.
type judgeLog struct {
	mu  sync.Mutex
	log []string
}

func (j *judgeLog) add(policy string, key []byte, mode libspbroker.Mode) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.log = append(j.log, policy+":"+string(key)+"/"+mode.String())
}

func (j *judgeLog) has(entry string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Contains(j.log, entry)
}

// gateAuth allows everything, but holds the loop inside Authorize on the
// key "gate" until release is closed.
type gateAuth struct {
	entered, release chan struct{}
	*judgeLog
}

func (g *gateAuth) Authorize(_ broker.Peer, key []byte, mode libspbroker.Mode) error {
	g.add("old", key, mode)
	if string(key) == "gate" {
		close(g.entered)
		<-g.release
	}
	return nil
}

// revokeServers refuses servers on one key.
type revokeServers struct {
	key string
	*judgeLog
}

func (r *revokeServers) Authorize(_ broker.Peer, key []byte, mode libspbroker.Mode) error {
	r.add("new", key, mode)
	if string(key) == r.key && mode == libspbroker.ModeServer {
		return errors.New("servers revoked")
	}
	return nil
}

// TestSetAuthorizerOneTurn has a request and a new policy that refuses the
// waiter it would pair with reach the loop together: the request is
// judged either by the old policy, and pairs, or by the new one once the
// waiter is gone. It is never judged by the new policy and paired with a
// waiter that policy refuses, as it was when the policy was put in force
// before the loop rechecked the waiters.
func TestSetAuthorizerOneTurn(t *testing.T) {
	judged := &judgeLog{}
	gate := &gateAuth{entered: make(chan struct{}), release: make(chan struct{}), judgeLog: judged}
	e := startBroker(t, &broker.Config{Authorizer: gate})
	bl := snapshot(t, e)
	w := e.park(t, "k", libspbroker.ModeServer)
	g := e.request(t, "gate", libspbroker.ModeClient)
	select {
	case <-gate.entered:
	case <-time.After(ioTimeout):
		t.Fatal("the gate's request never reached the authorizer")
	}
	// The loop is held: the newcomer and the new policy reach it at once.
	n := e.request(t, "k", libspbroker.ModeClient)
	set := make(chan struct{})
	go func() {
		e.SetAuthorizer(&revokeServers{key: "k", judgeLog: judged})
		close(set)
	}()
	require.Eventually(t, func() bool { return e.PendingCalls() > 0 }, ioTimeout, time.Millisecond,
		"SetAuthorizer posted nothing to the loop")
	close(gate.release)
	<-set
	require.Eventually(t, func() bool { return judged.has("old:k/client") || judged.has("new:k/client") },
		ioTimeout, time.Millisecond, "the newcomer's request was never judged")

	if judged.has("new:k/client") {
		w.expectClosed()
		assert.True(t, n.quiet(50*time.Millisecond), "the newcomer was not left waiting")
	} else {
		pairBoth(t, w, n)
	}
	judged.mu.Lock()
	t.Logf("judged: %v", judged.log)
	judged.mu.Unlock()
	n.close()
	w.close()
	g.close()
	bl.verify(t)
}

func TestMaxWait(t *testing.T) {
	const maxWait = 300 * time.Millisecond
	e := startBroker(t, &broker.Config{MaxWait: maxWait})
	bl := snapshot(t, e)

	start := time.Now()
	w := e.park(t, "patient", libspbroker.ModeServer)
	e.waitWaiting(t, 1)
	w.expectClosed()
	assert.GreaterOrEqual(t, time.Since(start), maxWait, "disconnected before MaxWait")
	w.close()
	e.waitStats(t, "Expired == 1", func(s broker.Stats) bool { return s.Expired == 1 && s.Waiting == 0 })

	// A waiter paired within the bound is not touched.
	w = e.park(t, "quick", libspbroker.ModeServer)
	pairBoth(t, w, e.request(t, "quick", libspbroker.ModeClient))
	time.Sleep(2 * maxWait)
	assert.Equal(t, uint64(1), e.Stats().Expired)
	bl.verify(t)
}

func TestQuotaPerUser(t *testing.T) {
	const quota = 3
	e := startBroker(t, &broker.Config{MaxWaitingPerUID: quota})
	bl := snapshot(t, e)

	var ws []*client
	for i := range quota {
		ws = append(ws, e.park(t, "q"+strconv.Itoa(i), libspbroker.ModeServer))
	}
	e.waitWaiting(t, quota)
	over := e.request(t, "q-over", libspbroker.ModeServer)
	over.expectClosed()
	over.close()
	e.waitStats(t, "OverQuota == 1", func(s broker.Stats) bool { return s.OverQuota == 1 })

	// At its quota a user can still take a pair: only waiting counts.
	pairBoth(t, ws[0], e.request(t, "q0", libspbroker.ModeClient))
	// And a freed place can be taken again.
	ws[0] = e.park(t, "q-again", libspbroker.ModeServer)
	e.waitWaiting(t, quota)
	for i, w := range ws {
		key := "q" + strconv.Itoa(i)
		if i == 0 {
			key = "q-again"
		}
		pairBoth(t, w, e.request(t, key, libspbroker.ModeClient))
	}
	assert.Equal(t, uint64(1), e.Stats().OverQuota)
	bl.verify(t)
}

// One user filling its quota leaves the others their own: a process
// running as nobody parks more clients than it may, and root's clients
// still wait.
func TestQuotaIsPerUser(t *testing.T) {
	require.Zero(t, os.Geteuid(), "this test starts a process as another user and must run as root")
	const quota = 4
	e := startBroker(t, &broker.Config{MaxWaitingPerUID: quota})
	// Let the other user reach the socket.
	for dir := filepath.Dir(e.path); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		require.NoError(t, os.Chmod(dir, 0o755))
	}
	require.NoError(t, os.Chmod(e.path, 0o666))

	// The test binary sits in a directory only root may enter: copy it.
	bin := filepath.Join(filepath.Dir(e.path), "waiter-host")
	self, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, self, 0o755))

	host := exec.Command(bin)
	host.Env = append(os.Environ(), waiterHostEnv+"="+e.path, waiterCountEnv+"=7")
	host.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	host.Stderr = os.Stderr
	stdin, err := host.StdinPipe()
	require.NoError(t, err)
	stdout, err := host.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, host.Start())
	t.Cleanup(func() {
		stdin.Close()
		host.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	e.waitStats(t, "nobody at its quota", func(s broker.Stats) bool { return s.Waiting == quota && s.OverQuota == 3 })

	var mine []*client
	for i := range quota {
		mine = append(mine, e.park(t, "root-"+strconv.Itoa(i), libspbroker.ModeServer))
	}
	e.waitWaiting(t, 2*quota)
	over := e.request(t, "root-over", libspbroker.ModeServer)
	over.expectClosed()
	over.close()
	e.waitStats(t, "root over its quota", func(s broker.Stats) bool { return s.OverQuota == 4 })

	// The other user's clients leave; root's are untouched and pair.
	stdin.Close()
	io.Copy(io.Discard, stdout)
	require.NoError(t, host.Wait())
	e.waitWaiting(t, quota)
	for i, w := range mine {
		pairBoth(t, w, e.request(t, "root-"+strconv.Itoa(i), libspbroker.ModeClient))
	}
}
