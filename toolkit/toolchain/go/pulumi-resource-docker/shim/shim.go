// Package shim exposes the upstream Terraform docker provider's SDKv2
// provider constructor, which lives in an internal package upstream.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"

	"github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

// NewProvider returns the upstream SDKv2 provider (resources and data sources
// docker_*); the plugin-framework half of the upstream mux is not bridged.
func NewProvider(version string) *schema.Provider {
	return provider.New(version)()
}
