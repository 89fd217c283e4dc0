// Command kindcheck strict-decodes kind cluster config files with kind's own Go types.
//
// kind needs a Docker engine, which the development and CI machines lack, so the
// config cannot be checked by creating a cluster. Decoding it strictly into
// sigs.k8s.io/kind/pkg/apis/config/v1alpha4.Cluster catches unknown fields
// (typos) and wrong types the same way kind itself would reject them. It does not
// check enum values or cross-field rules.
//
// Usage: kindcheck FILE...   (exit status 1 on the first invalid file, 2 on usage errors)
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// check strict-decodes one file and verifies the type metadata kind requires.
func check(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cluster v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &cluster); err != nil {
		return err
	}
	if cluster.Kind != "Cluster" {
		return fmt.Errorf("kind: want %q, got %q", "Cluster", cluster.Kind)
	}
	if cluster.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("apiVersion: want %q, got %q", "kind.x-k8s.io/v1alpha4", cluster.APIVersion)
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kindcheck FILE...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		fmt.Printf("%s: ok\n", path)
	}
}
