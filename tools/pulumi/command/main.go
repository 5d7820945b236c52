// Command pulumi-resource-command is an offline stand-in for the Pulumi
// "command" provider (github.com/pulumi/pulumi-command), wire-compatible with
// the pulumi-command 1.2.1 SDKs for:
//
//   - command:local:Command (create / update / delete commands, environment,
//     dir, interpreter, stdin, triggers, addPreviousOutputInEnv, logging;
//     outputs stdout and stderr; local.go),
//   - the command:local:run function, and
//   - command:remote:Command (the same commands run over SSH, with
//     golang.org/x/crypto/ssh; connection, environment, stdin, triggers,
//     addPreviousOutputInEnv, logging; remote.go).
//
// Not supported (a clear error): command:remote:CopyToRemote,
// command:remote:CopyFile, and assetPaths/archivePaths of local.Command.
//
// Semantics follow upstream's documentation: a change of `triggers` replaces
// the resource (for remote.Command also a change of the target of
// `connection`: host, port, user or proxy); any other input change is an
// update, which runs `update` (or `create` when `update` is not set).
// `delete` runs when the resource is deleted. Previous stdout/stderr are
// passed as PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR unless
// addPreviousOutputInEnv is false. During a preview nothing runs and
// stdout/stderr are unknown. If any input is a secret (for remote.Command: any
// input but `connection`, which the SDK always makes secret and which never
// reaches the command), stdout and stderr are secrets too and the command's
// output is neither logged nor put into error messages.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	pbempty "google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// Version is the Pulumi package version this plugin reports.
var Version = "1.2.1"

const (
	localCommand  = "command:local:Command"
	localRun      = "command:local:run"
	remoteCommand = "command:remote:Command"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println(Version)
		return
	}
	err := provider.Main("command", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return &commandProvider{host: host}, nil
	})
	if err != nil {
		cmdutil.ExitError(err.Error())
	}
}

type commandProvider struct {
	pulumirpc.UnimplementedResourceProviderServer
	host *provider.HostClient
}

var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, marshalOpts)
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, marshalOpts)
}

func (p *commandProvider) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (p *commandProvider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: schemaJSON}, nil
}

func (p *commandProvider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.News}, nil
}

func (p *commandProvider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *commandProvider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *commandProvider) Cancel(context.Context, *pbempty.Empty) (*pbempty.Empty, error) {
	return &pbempty.Empty{}, nil
}

func unsupported(typ string) error {
	return fmt.Errorf("%s is not supported by this offline build of the command provider "+
		"(only command:local:Command, command:local:run and command:remote:Command are)", typ)
}

// resourceType is the type token of a request (older engines only send the URN).
func resourceType(typ, urn string) string {
	if typ != "" {
		return typ
	}
	return string(resource.URN(urn).Type())
}

func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	typ := resourceType(req.Type, req.Urn)
	if typ != localCommand && typ != remoteCommand {
		return nil, unsupported(typ)
	}
	news, err := unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	fail := func(k, reason string) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: k, Reason: reason})
	}
	if typ == localCommand {
		for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
			if v, ok := news[k]; ok && !v.IsNull() {
				fail(string(k), string(k)+" is not supported by this offline build")
			}
		}
	} else {
		for _, f := range checkRemote(news) {
			fail(f[0], f[1])
		}
	}
	if v, ok := news["logging"]; ok {
		if v = plain(v); v.IsString() && !validLogging[v.StringValue()] {
			fail("logging", fmt.Sprintf("logging must be one of stdout, stderr, stdoutAndStderr, none (got %q)",
				v.StringValue()))
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.News, Failures: failures}, nil
}

var validLogging = map[string]bool{"stdout": true, "stderr": true, "stdoutAndStderr": true, "none": true}

// inputKeys are the inputs of each resource; everything else in state is an output.
var inputKeys = map[string][]resource.PropertyKey{
	localCommand: {
		"addPreviousOutputInEnv", "archivePaths", "assetPaths", "create", "delete", "dir",
		"environment", "interpreter", "logging", "stdin", "triggers", "update",
	},
	remoteCommand: {
		"addPreviousOutputInEnv", "connection", "create", "delete", "environment", "logging",
		"stdin", "triggers", "update",
	},
}

func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	typ := resourceType(req.Type, req.Urn)
	keys, ok := inputKeys[typ]
	if !ok {
		return nil, unsupported(typ)
	}
	olds, err := unmarshal(req.Olds)
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	ignore := map[string]bool{}
	for _, k := range req.IgnoreChanges {
		ignore[k] = true
	}
	var diffs, replaces []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for _, k := range keys {
		if ignore[string(k)] {
			continue
		}
		o, hasO := olds[k]
		n, hasN := news[k]
		if !hasO && !hasN {
			continue
		}
		if (!hasO || o.IsNull()) && (!hasN || n.IsNull()) {
			continue
		}
		if hasO && hasN && !n.ContainsUnknowns() {
			if k == "connection" && deepPlain(o).DeepEquals(deepPlain(n)) {
				continue // the state always holds it as a secret
			}
			if o.DeepEquals(n) {
				continue
			}
		}
		diffs = append(diffs, string(k))
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !hasO || o.IsNull():
			kind = pulumirpc.PropertyDiff_ADD
		case !hasN || n.IsNull():
			kind = pulumirpc.PropertyDiff_DELETE
		}
		replace := k == "triggers" || (k == "connection" && connectionTargetChanged(o, n))
		if replace {
			replaces = append(replaces, string(k))
			kind += pulumirpc.PropertyDiff_ADD_REPLACE - pulumirpc.PropertyDiff_ADD
		}
		detailed[string(k)] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	changes := pulumirpc.DiffResponse_DIFF_NONE
	if len(diffs) > 0 {
		changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return &pulumirpc.DiffResponse{
		Changes: changes, Diffs: diffs, Replaces: replaces,
		DetailedDiff: detailed, HasDetailedDiff: true,
	}, nil
}

// plain strips the secret/output wrappers of a value (not of its elements).
func plain(v resource.PropertyValue) resource.PropertyValue {
	for {
		switch {
		case v.IsSecret():
			v = v.SecretValue().Element
		case v.IsOutput() && v.OutputValue().Known:
			v = v.OutputValue().Element
		default:
			return v
		}
	}
}

// deepPlain strips secret/output wrappers at every level.
func deepPlain(v resource.PropertyValue) resource.PropertyValue {
	v = plain(v)
	switch {
	case v.IsObject():
		m := resource.PropertyMap{}
		for k, e := range v.ObjectValue() {
			m[k] = deepPlain(e)
		}
		return resource.NewObjectProperty(m)
	case v.IsArray():
		a := make([]resource.PropertyValue, 0, len(v.ArrayValue()))
		for _, e := range v.ArrayValue() {
			a = append(a, deepPlain(e))
		}
		return resource.NewArrayProperty(a)
	}
	return v
}

func str(m resource.PropertyMap, k resource.PropertyKey) string {
	v, ok := m[k]
	if !ok {
		return ""
	}
	v = plain(v)
	if v.IsString() {
		return v.StringValue()
	}
	return ""
}

// spec is a resolved (known, secret-stripped) set of inputs.
type spec struct {
	which       string // "create", "update", "delete" or "command" (local.run)
	command     string
	dir         string
	env         map[string]string
	interpreter []string
	stdin       string
	logging     string
	addPrevious bool
	secret      bool
}

func resolve(m resource.PropertyMap, commandKey resource.PropertyKey) spec {
	s := spec{
		which:       string(commandKey),
		command:     str(m, commandKey),
		dir:         str(m, "dir"),
		stdin:       str(m, "stdin"),
		logging:     str(m, "logging"),
		addPrevious: true,
		env:         map[string]string{},
		secret:      m.ContainsSecrets(),
	}
	if v, ok := m["addPreviousOutputInEnv"]; ok {
		if v = plain(v); v.IsBool() {
			s.addPrevious = v.BoolValue()
		}
	}
	if v, ok := m["environment"]; ok {
		if v = plain(v); v.IsObject() {
			for k, e := range v.ObjectValue() {
				if e = plain(e); e.IsString() {
					s.env[string(k)] = e.StringValue()
				}
			}
		}
	}
	if v, ok := m["interpreter"]; ok {
		if v = plain(v); v.IsArray() {
			for _, e := range v.ArrayValue() {
				if e = plain(e); e.IsString() {
					s.interpreter = append(s.interpreter, e.StringValue())
				}
			}
		}
	}
	if len(s.interpreter) == 0 {
		s.interpreter = []string{"/bin/sh", "-c"}
	}
	return s
}

// resolveFor resolves the inputs of a resource of type typ: for remote.Command
// the connection does not make the outputs secret (it never reaches the command).
func resolveFor(typ string, m resource.PropertyMap, commandKey resource.PropertyKey) spec {
	s := resolve(m, commandKey)
	if typ == remoteCommand {
		rest := resource.PropertyMap{}
		for k, v := range m {
			if k != "connection" {
				rest[k] = v
			}
		}
		s.secret = rest.ContainsSecrets()
	}
	return s
}

// runFor runs a resolved command the way resource type typ does.
func (p *commandProvider) runFor(ctx context.Context, typ, urn string, m resource.PropertyMap, s spec,
	extraEnv map[string]string,
) (string, string, error) {
	if typ == remoteCommand {
		conn, err := parseConnection(m["connection"])
		if err != nil {
			return "", "", err
		}
		return p.runRemote(ctx, urn, conn, s, extraEnv)
	}
	return p.run(ctx, urn, s, extraEnv)
}

func withOutputs(typ string, inputs resource.PropertyMap, stdout, stderr resource.PropertyValue, secret bool) resource.PropertyMap {
	out := resource.PropertyMap{}
	for _, k := range inputKeys[typ] {
		if v, ok := inputs[k]; ok {
			out[k] = v
		}
	}
	if c, ok := out["connection"]; ok && !c.IsNull() && !c.IsSecret() {
		out["connection"] = resource.MakeSecret(c) // it holds the private key / password
	}
	if secret && !stdout.IsComputed() {
		stdout = resource.MakeSecret(stdout)
		stderr = resource.MakeSecret(stderr)
	}
	out["stdout"] = stdout
	out["stderr"] = stderr
	return out
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (p *commandProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	typ := resourceType(req.Type, req.Urn)
	if _, ok := inputKeys[typ]; !ok {
		return nil, unsupported(typ)
	}
	news, err := unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	if req.Preview {
		unknown := resource.MakeComputed(resource.NewStringProperty(""))
		props, err := marshal(withOutputs(typ, news, unknown, unknown, false))
		return &pulumirpc.CreateResponse{Properties: props}, err
	}
	s := resolveFor(typ, news, "create")
	stdout, stderr := "", ""
	if s.command != "" {
		stdout, stderr, err = p.runFor(ctx, typ, req.Urn, news, s, nil)
		if err != nil {
			return nil, err
		}
	}
	props, err := marshal(withOutputs(typ, news, resource.NewStringProperty(stdout),
		resource.NewStringProperty(stderr), s.secret))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: newID(), Properties: props}, nil
}

func previousEnv(olds resource.PropertyMap, s spec) map[string]string {
	if !s.addPrevious {
		return nil
	}
	return map[string]string{
		"PULUMI_COMMAND_STDOUT": str(olds, "stdout"),
		"PULUMI_COMMAND_STDERR": str(olds, "stderr"),
	}
}

func (p *commandProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	typ := resourceType(req.Type, req.Urn)
	if _, ok := inputKeys[typ]; !ok {
		return nil, unsupported(typ)
	}
	olds, err := unmarshal(req.Olds)
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	if req.Preview {
		unknown := resource.MakeComputed(resource.NewStringProperty(""))
		props, err := marshal(withOutputs(typ, news, unknown, unknown, false))
		return &pulumirpc.UpdateResponse{Properties: props}, err
	}
	key := resource.PropertyKey("update")
	if str(news, key) == "" {
		key = "create"
	}
	s := resolveFor(typ, news, key)
	stdout, stderr := str(olds, "stdout"), str(olds, "stderr")
	if s.command != "" {
		stdout, stderr, err = p.runFor(ctx, typ, req.Urn, news, s, previousEnv(olds, s))
		if err != nil {
			return nil, err
		}
	}
	props, err := marshal(withOutputs(typ, news, resource.NewStringProperty(stdout),
		resource.NewStringProperty(stderr), s.secret))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*pbempty.Empty, error) {
	typ := resourceType(req.Type, req.Urn)
	if _, ok := inputKeys[typ]; !ok {
		return nil, unsupported(typ)
	}
	olds, err := unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	s := resolveFor(typ, olds, "delete")
	if s.command != "" {
		if _, _, err := p.runFor(ctx, typ, req.Urn, olds, s, previousEnv(olds, s)); err != nil {
			return nil, err
		}
	}
	return &pbempty.Empty{}, nil
}

func (p *commandProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.Id, Properties: req.Properties, Inputs: req.Inputs}, nil
}

func (p *commandProvider) Invoke(ctx context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	if req.Tok != localRun {
		return nil, unsupported(req.Tok)
	}
	args, err := unmarshal(req.Args)
	if err != nil {
		return nil, err
	}
	for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := args[k]; ok && !v.IsNull() {
			return nil, fmt.Errorf("%s is not supported by this offline build", k)
		}
	}
	s := resolve(args, "command")
	stdout, stderr, err := p.run(ctx, "", s, nil)
	if err != nil {
		return nil, err
	}
	ret := resource.PropertyMap{}
	for k, v := range args {
		ret[k] = v
	}
	ret["stdout"] = resource.NewStringProperty(stdout)
	ret["stderr"] = resource.NewStringProperty(stderr)
	if s.secret {
		ret["stdout"] = resource.MakeSecret(ret["stdout"])
		ret["stderr"] = resource.MakeSecret(ret["stderr"])
	}
	out, err := marshal(ret)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.InvokeResponse{Return: out}, nil
}
