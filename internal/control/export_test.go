package control

import "time"

// SetLimits replaces s's request timeout and its cap on requests served at
// once, for tests that cannot wait RequestTimeout or open MaxClients
// connections. Call it before Serve.
func (s *Server) SetLimits(timeout time.Duration, maxClients int) {
	s.timeout = timeout
	s.maxClients = maxClients
}

// Reading returns the number of clients the server has accepted that are
// still sending their request.
func (s *Server) Reading() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reading)
}

// DecodeRequest is decodeRequest, for the fuzz target.
var DecodeRequest = decodeRequest
