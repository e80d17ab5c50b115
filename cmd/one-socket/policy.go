package main

import (
	"errors"
	"fmt"
	"log/slog"
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

// policyState is the daemon's --policy: the file, and the policy in force
// with its summary. Reloads from SIGHUP and from the control socket are
// serialised by mu.
type policyState struct {
	path    string // "" without --policy
	mu      sync.Mutex
	auth    broker.Authorizer // in force; nil without --policy
	summary atomic.Pointer[string]
}

// denyAll is the authorizer of a daemon that took clients over after an
// upgrade but could not load its policy: it fails closed, and keeps the
// clients, until a reload succeeds.
type denyAll struct{}

func (denyAll) Authorize(broker.Peer, []byte, libspbroker.Mode) error {
	return errors.New("the policy could not be loaded; nothing is allowed until it is fixed and reloaded")
}

// start loads the policy at path, if any, for the daemon's start. A daemon
// that cannot apply its policy must not start; one that adopts clients
// after an upgrade (adopting) must not drop them either, so it starts with
// denyAll in force and an error logged.
func (ps *policyState) start(path string, adopting bool, log *slog.Logger) error {
	if path == "" {
		return nil
	}
	ps.path = path
	a, summary, err := ps.load()
	if err != nil && adopting {
		log.Error("cannot load the policy after the upgrade: every request is denied until a reload succeeds",
			"policy", path, "err", err)
		a, summary, err = denyAll{}, "denying everything: the policy did not load", nil
	}
	if err != nil {
		return err
	}
	ps.set(a, summary)
	return nil
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

// set puts a in force.
func (ps *policyState) set(a broker.Authorizer, summary string) {
	ps.auth = a
	ps.summary.Store(&summary)
}

// authorizer returns the authorizer in force, for a new broker.
func (ps *policyState) authorizer() broker.Authorizer {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.auth
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
	ps.set(a, summary)
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
