// A tiny nested module whose only purpose is to sit *under* the upstream
// provider's module path, so that Go's internal-package rule lets it import
// github.com/terraform-providers/terraform-provider-docker/internal/provider.
module github.com/terraform-providers/terraform-provider-docker/shim

go 1.25.8
