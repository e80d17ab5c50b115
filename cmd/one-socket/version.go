package main

import buildversion "github.com/one-socket/one-socket/internal/version"

// version is set at link time (-ldflags "-X main.version=v1.2.3"); when it
// is empty the module version from the build information is used.
var version string

// versionString returns the version this binary reports.
func versionString() string { return buildversion.String(version) }
