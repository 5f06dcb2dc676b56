// Not upstream: added by the box so that `controller --version` reports its source.
// Every other .go file in this folder is a verbatim copy of
// knative.dev/serving cmd/controller (see ../../sync-upstream.sh).

package main

import "imagelingo.local/box/knative/boxversion"

func init() { boxversion.HandleVersionFlag("controller") }
