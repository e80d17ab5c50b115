package version

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestString(t *testing.T) {
	assert.Equal(t, "v1.2.3", String("v1.2.3"))
	assert.NotEmpty(t, String(""))

	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}}
	assert.Equal(t, "devel+0123456789ab", fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}))
	assert.Equal(t, "v1.0.0", fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "v1.0.0"}}))
	assert.Equal(t, "devel", fromBuildInfo(&debug.BuildInfo{}))
}
