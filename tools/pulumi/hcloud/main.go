// Command pulumi-resource-hcloud: the Pulumi "hcloud" provider, bridged from
// hetznercloud/terraform-provider-hcloud. The Pulumi package schema and the
// mux dispatch table are computed in-process at start-up.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/hetznercloud/terraform-provider-hcloud/hcloud"
	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/x/muxer"
	"github.com/pulumi/pulumi-terraform-bridge/v3/unstable/metadata"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
)

// Version is the Pulumi package version this plugin reports.
var Version = "1.43.3"

func providerInfo(ctx context.Context) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		Name: "hcloud",
		P: pftfbridge.MuxShimWithPF(ctx,
			shimv2.NewProvider(hcloud.Provider()), hcloud.NewPluginProvider()),
		Version:      Version,
		Description:  "A Pulumi package for creating and managing hcloud cloud resources.",
		License:      "Apache-2.0",
		Repository:   "https://github.com/pulumi/pulumi-hcloud",
		GitHubOrg:    "hetznercloud",
		MetadataInfo: tfbridge.NewProviderMetadata([]byte("{}")),
		Config: map[string]*tfbridge.SchemaInfo{
			"token": {Secret: tfbridge.True()},
		},
	}
	info.MustComputeTokens(tokens.SingleModule("hcloud_", "index", tokens.MakeStandard("hcloud")))
	info.SetAutonaming(255, "-")
	return info
}

type dispatcher interface {
	ResolveDispatch(*tfbridge.ProviderInfo) (muxer.DispatchTable, error)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pulumi-resource-hcloud: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	ctx := context.Background()
	info := providerInfo(ctx)

	d, ok := info.P.(dispatcher)
	if !ok {
		fail("muxed provider shim does not expose ResolveDispatch")
	}
	table, err := d.ResolveDispatch(&info)
	if err != nil {
		fail("computing mux dispatch table: %v", err)
	}
	if err := metadata.Set(info.GetMetadata(), "mux", table); err != nil {
		fail("storing mux dispatch table: %v", err)
	}

	sink := diag.DefaultSink(discard{}, discard{}, diag.FormatOptions{Color: colors.Never})
	if os.Getenv("SELEXTRACT_TFGEN_VERBOSE") != "" {
		sink = diag.DefaultSink(os.Stderr, os.Stderr, diag.FormatOptions{Color: colors.Never})
	}
	gen, err := tfgen.GenerateSchemaWithOptions(tfgen.GenerateSchemaOptions{
		ProviderInfo: info, DiagnosticsSink: sink, XInMemoryDocs: true,
	})
	if err != nil {
		fail("generating schema: %v", err)
	}
	schema, err := json.Marshal(gen.PackageSpec)
	if err != nil {
		fail("encoding schema: %v", err)
	}
	pftfbridge.MainWithMuxer(ctx, "hcloud", info, schema)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
