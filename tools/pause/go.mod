// The pod sandbox's pause program for the real node (standard library only).
// Built by ../build-tools.sh; never imported by the project.
module rlscale.dev/tools/pause

go 1.24.0
