// Box addition (not upstream): KServe's manager has no version variable or flag
// (kserve/kserve cmd/manager/main.go; its Dockerfile builds with no -ldflags), so this
// file, next to the unchanged upstream main.go, reports the version the binary was
// built from: main.version is set by box/kserve/build.sh with
// -ldflags "-X main.version=<tag>", and is checked against the kserve module version
// recorded in the binary's build info. `manager --version` prints it and exits;
// every start logs it on stderr before upstream's main() runs.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
)

var version = "unset"

func buildInfo() string {
	mod, sum := "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/kserve/kserve" {
				mod, sum = d.Version, d.Sum
				if d.Replace != nil {
					mod += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
	}
	return fmt.Sprintf("kserve-controller-manager version=%s (module github.com/kserve/kserve %s %s, %s %s/%s)",
		version, mod, sum, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func init() {
	for _, a := range os.Args[1:] {
		if a == "--version" || a == "-version" {
			fmt.Println(buildInfo())
			os.Exit(0)
		}
	}
	fmt.Fprintln(os.Stderr, buildInfo())
}
