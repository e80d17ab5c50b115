package policy

import "os/user"

// FakeNames replaces the user and group databases for a test; it returns
// a function that restores them.
func FakeNames(users, groups map[string]string) (restore func()) {
	u, g := lookupUser, lookupGroup
	lookupUser = fakeLookup(users, func(n string) error { return UnknownUser(n) })
	lookupGroup = fakeLookup(groups, func(n string) error { return UnknownGroup(n) })
	return func() { lookupUser, lookupGroup = u, g }
}

func fakeLookup(m map[string]string, unknown func(string) error) func(string) (string, error) {
	return func(name string) (string, error) {
		if id, ok := m[name]; ok {
			return id, nil
		}
		return "", unknown(name)
	}
}

// RuleLines returns the line of every rule, in order.
func (p *Policy) RuleLines() []int {
	var out []int
	for _, r := range p.rules {
		out = append(out, r.line)
	}
	return out
}

// UnknownUser and UnknownGroup are the errors os/user returns.
func UnknownUser(n string) error  { return user.UnknownUserError(n) }
func UnknownGroup(n string) error { return user.UnknownGroupError(n) }
