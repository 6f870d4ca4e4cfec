//go:build !tfgen

// Command pulumi-resource-docker is the Pulumi resource provider plugin for
// Docker, bridged from the upstream Terraform provider.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
)

// schema-embed.json is the schema.json written by the tfgen build of this
// package (see tfgen.go), copied here before the provider build.
//
//go:embed schema-embed.json
var pulumiSchema []byte

func main() {
	tfbridge.Main(packageName, Version, Provider(), pulumiSchema)
}
