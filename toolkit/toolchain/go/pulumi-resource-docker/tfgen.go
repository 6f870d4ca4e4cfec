//go:build tfgen

// Built with -tags tfgen this package is the schema generator instead of the
// plugin:  pulumi-tfgen-docker schema --out DIR [--skip-examples]
// writes DIR/schema.json and DIR/bridge-metadata.json.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"
)

func main() {
	tfgen.Main(packageName, Version, Provider())
}
