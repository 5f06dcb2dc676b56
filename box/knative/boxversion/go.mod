module imagelingo.local/box/knative/boxversion

// The box's --version for Knative's binaries, one module that each release's build
// (box/knative for 1.16, box/knative/v1.21 for 1.21) requires with a replace line.
go 1.22.0
