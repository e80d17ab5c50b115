package main

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/policy"
	"github.com/one-socket/one-socket/libspbroker"
)

// noPolicy is the summary reload and status give without --policy.
const noPolicy = "no policy configured"

// policyAuthorizer lets a policy.Policy decide for the broker. It lives
// here rather than in internal/policy so that the policy package does not
// depend on the engine.
type policyAuthorizer struct{ p *policy.Policy }

// Authorize denies with the decision's reason: the deciding rule and its
// line, or the default.
func (a policyAuthorizer) Authorize(p broker.Peer, key []byte, mode libspbroker.Mode) error {
	d := a.p.Allow(policy.Cred{PID: p.PID, UID: p.UID, GID: p.GID}, key, mode)
	if d.Allowed {
		return nil
	}
	return errors.New(d.Reason)
}

// policyState is the daemon's --policy: the file and the summary of the
// policy in force. Reloads from SIGHUP and from the control socket are
// serialised by mu.
type policyState struct {
	path    string // "" without --policy
	mu      sync.Mutex
	summary atomic.Pointer[string]
}

// load reads the file and returns the authorizer for it; the state is not
// changed, so that a failure leaves the policy in force alone.
func (ps *policyState) load() (broker.Authorizer, string, error) {
	p, err := policy.Load(ps.path)
	if err != nil {
		return nil, "", err
	}
	return policyAuthorizer{p}, p.String(), nil
}

// current returns the summary of the policy in force, or "none".
func (ps *policyState) current() string {
	if s := ps.summary.Load(); s != nil {
		return *s
	}
	return "none"
}

// reloadPolicy rereads --policy and puts it in force if it loads; if it
// does not, the old policy stays and the error says why. It logs either
// way. Without --policy it does nothing and says so.
func (d *instance) reloadPolicy(trigger string) (string, error) {
	ps := &d.policy
	if ps.path == "" {
		d.log.Info("policy reload requested, but no policy is configured", "trigger", trigger)
		return noPolicy, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	a, summary, err := ps.load()
	if err != nil {
		d.log.Warn("cannot reload the policy; keeping the old one", "policy", ps.path,
			"trigger", trigger, "in_force", ps.current(), "err", err)
		return "", fmt.Errorf("policy not reloaded, the old one stays in force: %w", err)
	}
	d.b.SetAuthorizer(a)
	ps.summary.Store(&summary)
	d.log.Info("policy reloaded", "policy", ps.path, "trigger", trigger, "summary", summary)
	return summary, nil
}

// lookupSocketGroup resolves --socket-group: a group name, else a number.
func lookupSocketGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err == nil {
		return strconv.Atoi(g.Gid)
	}
	if n, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		return int(n), nil
	}
	return 0, fmt.Errorf("--socket-group: %w", err)
}
