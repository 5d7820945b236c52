// Exposes the (internal) SDKv2 provider of kreuzwerker/terraform-provider-docker
// to the wrapper module one level up (see ../go.mod). The module path sits under
// the upstream module's declared path on purpose: Go allows importing an
// internal package only from inside the tree it belongs to.
module github.com/terraform-providers/terraform-provider-docker/shim

go 1.26

require github.com/terraform-providers/terraform-provider-docker v0.0.0-20260916201441-96d331c98ff4
