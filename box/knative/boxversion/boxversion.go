// Package boxversion lets each Knative binary of the box report the source it
// was built from: `<binary> --version` (or -version) prints it and exits 0.
// It is called from an init() in each cmd/<component>/version.go, which runs
// after every imported package's init and before upstream's main().
package boxversion

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
)

// Set by build.sh with -X (from the Go module proxy's .info of the module built).
var (
	// Release is the Knative release tag whose Go sources the binary holds.
	Release = "unknown"
	// Note says how the module version built relates to Release.
	Note = ""
)

// HandleVersionFlag prints the version and exits if --version/-version is the
// first argument; otherwise it does nothing and upstream's main runs as usual.
func HandleVersionFlag(component string) {
	if len(os.Args) < 2 || (os.Args[1] != "--version" && os.Args[1] != "-version") {
		return
	}
	fmt.Println(String(component))
	os.Exit(0)
}

// String describes the binary: component, Knative release, module versions.
func String(component string) string {
	s := fmt.Sprintf("knative-serving %s: release %s", component, Release)
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			switch d.Path {
			case "knative.dev/serving", "knative.dev/networking", "knative.dev/pkg":
				if d.Replace != nil {
					d = d.Replace
				}
				s += fmt.Sprintf(", %s %s", d.Path, d.Version)
			}
		}
	}
	if Note != "" {
		s += " (" + Note + ")"
	}
	return s + ", " + runtime.Version()
}
