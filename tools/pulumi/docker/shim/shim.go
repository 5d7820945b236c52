// Package shim gives the Pulumi bridge access to the upstream Terraform provider.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"

	upstream "github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

// NewProvider returns the upstream SDKv2 provider (the plugin-framework half of
// the upstream mux, i.e. the compose resources, is not bridged).
func NewProvider() *schema.Provider { return upstream.New("dev")() }
