// Package version says which version a One Socket binary is, for its
// --version output and the control protocol's status.
package version

import "runtime/debug"

// String returns linked if it is not empty (a version set at link time
// with -ldflags "-X main.version=v1.2.3"), else the main module's version
// from the build information, "devel" for a build from a work tree, with
// "+" and the first 12 digits of the VCS revision when known.
func String(linked string) string {
	if linked != "" {
		return linked
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}
