// Command pulumi-resource-command is an offline stand-in for the Pulumi
// "command" provider (github.com/pulumi/pulumi-command), wire-compatible with
// the pulumi-command 1.2.1 SDKs for:
//
//   - command:local:Command (create / update / delete commands, environment,
//     dir, interpreter, stdin, triggers, addPreviousOutputInEnv, logging;
//     outputs stdout and stderr), and
//   - the command:local:run function.
//
// Not supported (the resource reports a clear error): the command:remote:*
// resources (SSH) and assetPaths/archivePaths.
//
// Semantics follow upstream's documentation: a change of `triggers` replaces
// the resource; any other input change is an update, which runs `update` (or
// `create` when `update` is not set). `delete` runs when the resource is
// deleted. Previous stdout/stderr are passed as PULUMI_COMMAND_STDOUT and
// PULUMI_COMMAND_STDERR unless addPreviousOutputInEnv is false. If any input is
// a secret, stdout and stderr are secrets too.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"

	pbempty "google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// Version is the Pulumi package version this plugin reports.
var Version = "1.2.1"

const (
	localCommand = "command:local:Command"
	localRun     = "command:local:run"
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
		"(only command:local:Command and command:local:run are)", typ)
}

func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	typ := req.Type
	if typ == "" {
		typ = string(resource.URN(req.Urn).Type())
	}
	if typ != localCommand {
		return nil, unsupported(typ)
	}
	news, err := unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := news[k]; ok && !v.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{
				Property: string(k), Reason: string(k) + " is not supported by this offline build",
			})
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.News, Failures: failures}, nil
}

// inputKeys are the inputs of local.Command; everything else in state is an output.
var inputKeys = []resource.PropertyKey{
	"addPreviousOutputInEnv", "archivePaths", "assetPaths", "create", "delete", "dir",
	"environment", "interpreter", "logging", "stdin", "triggers", "update",
}

func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
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
	for _, k := range inputKeys {
		if ignore[string(k)] {
			continue
		}
		o, hasO := olds[k]
		n, hasN := news[k]
		if !hasO && !hasN {
			continue
		}
		if hasO && hasN && !n.ContainsUnknowns() && o.DeepEquals(n) {
			continue
		}
		if (!hasO || o.IsNull()) && (!hasN || n.IsNull()) {
			continue
		}
		diffs = append(diffs, string(k))
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !hasO || o.IsNull():
			kind = pulumirpc.PropertyDiff_ADD
		case !hasN || n.IsNull():
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if k == "triggers" {
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

// spec is a resolved (known, secret-stripped) set of inputs.
type spec struct {
	command     string
	dir         string
	env         map[string]string
	interpreter []string
	stdin       string
	logging     string
	addPrevious bool
	secret      bool
}

func plain(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	if v.IsOutput() {
		v = v.OutputValue().Element
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

func resolve(m resource.PropertyMap, commandKey resource.PropertyKey) spec {
	s := spec{
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

// lineLogger forwards complete lines to the engine as status messages.
type lineLogger struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	emit func(string)
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.Reset()
			l.buf.WriteString(line)
			return len(b), nil
		}
		l.emit(strings.TrimRight(line, "\r\n"))
	}
}

func (p *commandProvider) run(ctx context.Context, urn string, s spec, extraEnv map[string]string) (string, string, error) {
	args := append(append([]string{}, s.interpreter[1:]...), s.command)
	cmd := exec.CommandContext(ctx, s.interpreter[0], args...)
	cmd.Dir = s.dir
	env := os.Environ()
	keys := make([]string, 0, len(s.env))
	for k := range s.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+s.env[k])
	}
	for k, v := range extraEnv {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	if s.stdin != "" {
		cmd.Stdin = strings.NewReader(s.stdin)
	}
	var stdout, stderr bytes.Buffer
	logTo := func(stream string) io.Writer {
		if p.host == nil || s.secret || s.logging == "none" ||
			(s.logging == "stdout" && stream != "stdout") || (s.logging == "stderr" && stream != "stderr") {
			return io.Discard
		}
		return &lineLogger{emit: func(line string) {
			_ = p.host.LogStatus(ctx, diag.Info, resource.URN(urn), line)
		}}
	}
	cmd.Stdout = io.MultiWriter(&stdout, logTo("stdout"))
	cmd.Stderr = io.MultiWriter(&stderr, logTo("stderr"))
	err := cmd.Run()
	out := strings.TrimSuffix(stdout.String(), "\n")
	errOut := strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		msg := fmt.Sprintf("%v: running %q", err, s.command)
		if !s.secret {
			msg += fmt.Sprintf(":\n%s\n%s", out, errOut)
		}
		return out, errOut, fmt.Errorf("%s", msg)
	}
	return out, errOut, nil
}

func withOutputs(inputs resource.PropertyMap, stdout, stderr resource.PropertyValue, secret bool) resource.PropertyMap {
	out := resource.PropertyMap{}
	for _, k := range inputKeys {
		if v, ok := inputs[k]; ok {
			out[k] = v
		}
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
	news, err := unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	if req.Preview {
		unknown := resource.MakeComputed(resource.NewStringProperty(""))
		props, err := marshal(withOutputs(news, unknown, unknown, false))
		return &pulumirpc.CreateResponse{Properties: props}, err
	}
	s := resolve(news, "create")
	stdout, stderr := "", ""
	if s.command != "" {
		stdout, stderr, err = p.run(ctx, req.Urn, s, nil)
		if err != nil {
			return nil, err
		}
	}
	props, err := marshal(withOutputs(news, resource.NewStringProperty(stdout),
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
		props, err := marshal(withOutputs(news, unknown, unknown, false))
		return &pulumirpc.UpdateResponse{Properties: props}, err
	}
	key := resource.PropertyKey("update")
	if str(news, key) == "" {
		key = "create"
	}
	s := resolve(news, key)
	stdout, stderr := str(olds, "stdout"), str(olds, "stderr")
	if s.command != "" {
		stdout, stderr, err = p.run(ctx, req.Urn, s, previousEnv(olds, s))
		if err != nil {
			return nil, err
		}
	}
	props, err := marshal(withOutputs(news, resource.NewStringProperty(stdout),
		resource.NewStringProperty(stderr), s.secret))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*pbempty.Empty, error) {
	olds, err := unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	s := resolve(olds, "delete")
	if s.command != "" {
		if _, _, err := p.run(ctx, req.Urn, s, previousEnv(olds, s)); err != nil {
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

// A minimal package schema: enough for `pulumi package get-schema` and for the
// engine to know the package name and version.
var schemaJSON = `{
  "name": "command",
  "version": "` + Version + `",
  "description": "Offline subset of the Pulumi Command provider (local.Command, local.run).",
  "resources": {
    "command:local:Command": {
      "inputProperties": {
        "create": {"type": "string"}, "update": {"type": "string"}, "delete": {"type": "string"},
        "dir": {"type": "string"}, "stdin": {"type": "string"}, "logging": {"type": "string"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "interpreter": {"type": "array", "items": {"type": "string"}},
        "triggers": {"type": "array", "items": {"$ref": "pulumi.json#/Any"}, "replaceOnChanges": true},
        "addPreviousOutputInEnv": {"type": "boolean"}
      },
      "properties": {
        "create": {"type": "string"}, "update": {"type": "string"}, "delete": {"type": "string"},
        "dir": {"type": "string"}, "stdin": {"type": "string"}, "logging": {"type": "string"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "interpreter": {"type": "array", "items": {"type": "string"}},
        "triggers": {"type": "array", "items": {"$ref": "pulumi.json#/Any"}},
        "addPreviousOutputInEnv": {"type": "boolean"},
        "stdout": {"type": "string"}, "stderr": {"type": "string"}
      },
      "required": ["stdout", "stderr"]
    }
  },
  "functions": {
    "command:local:run": {
      "inputs": {
        "properties": {
          "command": {"type": "string"}, "dir": {"type": "string"}, "stdin": {"type": "string"},
          "logging": {"type": "string"},
          "environment": {"type": "object", "additionalProperties": {"type": "string"}},
          "interpreter": {"type": "array", "items": {"type": "string"}},
          "addPreviousOutputInEnv": {"type": "boolean"}
        },
        "required": ["command"]
      },
      "outputs": {
        "properties": {"command": {"type": "string"}, "stdout": {"type": "string"}, "stderr": {"type": "string"}},
        "required": ["command", "stdout", "stderr"]
      }
    }
  }
}`
