// The bridge description (tfbridge.ProviderInfo) of the Docker provider.
//
// pulumi-docker's own provider module is not published on the Go module
// proxy, so the toolkit bridges the upstream Terraform provider
// (kreuzwerker/terraform-provider-docker) itself. This file maps every
// Terraform resource and data source onto the token and property names that
// the pinned `pulumi_docker` Python SDK sends, so the SDK works unchanged
// against the plugin built here.
package main

import (
	"context"
	_ "embed"
	"os"
	"runtime"
	"strings"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	bridgetokens "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"

	"github.com/terraform-providers/terraform-provider-docker/shim"
)

// Version is the plugin version, stamped at link time so that it equals the
// installed pulumi_docker package version:
//
//	go build -ldflags "-X main.Version=5.2.0"
var Version = "0.0.0-dev"

const (
	packageName = "docker"
	indexModule = "index"
)

// bridgeMetadata is the bridge-metadata.json written by the tfgen step next to
// schema.json. The checked-in file is an empty object so that the tfgen build
// itself compiles; the plugin build embeds the generated one.
//
//go:embed bridge-metadata.json
var bridgeMetadata []byte

// resourceTokens: Terraform resource -> Pulumi resource name, all in module
// "index". docker:index/image:Image (a native docker-build resource in the
// real provider, not a Terraform one) is deliberately absent.
var resourceTokens = map[string]string{
	"docker_buildx_builder": "BuildxBuilder",
	"docker_config":         "ServiceConfig",
	"docker_container":      "Container",
	"docker_image":          "RemoteImage",
	"docker_network":        "Network",
	"docker_plugin":         "Plugin",
	"docker_registry_image": "RegistryImage",
	"docker_secret":         "Secret",
	"docker_service":        "Service",
	"docker_tag":            "Tag",
	"docker_volume":         "Volume",
}

// dataSourceTokens: Terraform data source -> Pulumi function name.
var dataSourceTokens = map[string]string{
	"docker_image":                    "getRemoteImage",
	"docker_logs":                     "getLogs",
	"docker_network":                  "getNetwork",
	"docker_plugin":                   "getPlugin",
	"docker_registry_image":           "getRegistryImage",
	"docker_registry_image_manifests": "getRegistryImageManifests",
}

// member makes "docker:index/<name, first letter lower-cased>:<name>", the
// shape of every token of the SDK, e.g. docker:index/container:Container or
// docker:index/getNetwork:getNetwork.
func member(name string) tokens.ModuleMember {
	file := strings.ToLower(name[:1]) + name[1:]
	return tokens.ModuleMember(packageName + ":" + indexModule + "/" + file + ":" + name)
}

func defaultDockerHost(context.Context, tfbridge.ComputeDefaultOptions) (interface{}, error) {
	if runtime.GOOS == "windows" {
		return "npipe:////./pipe/docker_engine", nil
	}
	return "unix:///var/run/docker.sock", nil
}

// Provider returns the bridge description of the Docker provider.
func Provider() tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:           shimv2.NewProvider(shim.NewProvider(Version)),
		Name:        packageName,
		DisplayName: "Docker",
		Version:     Version,
		Description: "A Pulumi package for interacting with Docker in Pulumi programs",
		Keywords:    []string{"pulumi", "docker"},
		License:     "Apache-2.0",
		GitHubOrg:   "kreuzwerker",
		// Only read by tfgen: the upstream module directory, whose docs/ folder
		// provides the descriptions. The build sets it from `go list -m`.
		UpstreamRepoPath: os.Getenv("DOCKER_UPSTREAM_DIR"),
		Config: map[string]*tfbridge.SchemaInfo{
			"host": {
				Default: &tfbridge.DefaultInfo{
					EnvVars:        []string{"DOCKER_HOST"},
					ComputeDefault: defaultDockerHost,
				},
			},
			// A list of registries that the SDK calls registryAuth (no plural).
			"registry_auth": {Name: "registryAuth", MaxItemsOne: tfbridge.False()},
		},
		Resources:    map[string]*tfbridge.ResourceInfo{},
		DataSources:  map[string]*tfbridge.DataSourceInfo{},
		Python:       &tfbridge.PythonInfo{RespectSchemaVersion: true},
		MetadataInfo: tfbridge.NewProviderMetadata(bridgeMetadata),
	}
	for tf, name := range resourceTokens {
		info.Resources[tf] = &tfbridge.ResourceInfo{Tok: tokens.Type(member(name))}
	}
	for tf, name := range dataSourceTokens {
		info.DataSources[tf] = &tfbridge.DataSourceInfo{Tok: member(name)}
	}

	container := info.Resources["docker_container"]
	// An explicit container name is unique per engine, so a replacement must
	// delete the old container before creating the new one.
	container.DeleteBeforeReplace = true
	container.Fields = map[string]*tfbridge.SchemaInfo{
		// One argv, not several commands: no pluralisation.
		"command": {Name: "command"},
		// Holds many entries, yet the SDK keeps the Terraform (singular) name.
		"networks_advanced": {Name: "networksAdvanced"},
	}
	// docker_image.name is the image reference: never auto-named.
	info.Resources["docker_image"].Fields = map[string]*tfbridge.SchemaInfo{
		"name": {Name: "name"},
	}

	// Anything a newer upstream adds still gets a deterministic token.
	info.MustComputeTokens(bridgetokens.SingleModule("docker_", indexModule,
		bridgetokens.MakeStandard(packageName)))
	info.MustApplyAutoAliases()
	// Other `name` inputs become optional and default to "<resource name>-<random>".
	info.SetAutonaming(255, "-")
	return info
}
