// kindcheck: offline strict validation of a kind cluster config with kind's own types.
module rlscale.dev/tools/kindcheck

go 1.24.0

require (
	sigs.k8s.io/kind v0.32.0
	sigs.k8s.io/yaml v1.4.0
)

require github.com/pkg/errors v0.9.1 // indirect
