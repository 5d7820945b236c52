// Command pulumi-language-python is a small, self-contained Pulumi language
// host for Python programs, built by scripts/setup-pulumi.sh.
//
// Upstream's host (module github.com/pulumi/pulumi/sdk/python/cmd/
// pulumi-language-python/v3) is not served by the Go module proxy that this
// project can reach, so this host implements the parts of the LanguageRuntime
// gRPC service that `pulumi preview/up/destroy/refresh/install/about` need,
// reusing the Python toolchain helpers of the Pulumi Go SDK
// (sdk/v3/python/toolchain). The Python side is upstream's
// `pulumi-language-python-exec` script (shipped in the sdk/v3 module), which
// must sit next to this binary.
//
// It also runs plugins written in Python (RunPlugin), which is how
// `pulumi preview --policy-pack DIR` runs a pulumi-policy pack.
//
// Not implemented: codegen (GenerateProgram/Project/Package, Template) and
// debugger attach.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	pbempty "google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
)

// Exit code the exec script uses to say it already showed an actionable error.
const bailExitCode = 32

const execScriptName = "pulumi-language-python-exec"

func main() {
	flags := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	// Flags the engine (or a user) may pass; most are accepted for compatibility.
	tracing := flags.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	root := flags.String("root", "", "Project root path to use")
	_ = flags.String("binary", "", "unused")
	_ = flags.String("virtualenv", "", "Virtual environment path (prefer the Pulumi.yaml runtime option)")
	_ = flags.String("typechecker", "", "unused")
	_ = flags.String("toolchain", "", "Toolchain (prefer the Pulumi.yaml runtime option)")
	logging.InitLogging(false, 0, false)
	if err := flags.Parse(os.Args[1:]); err != nil {
		cmdutil.ExitError(err.Error())
	}
	_ = tracing
	_ = root

	args := flags.Args()
	engineAddress := ""
	if len(args) > 0 {
		engineAddress = args[0]
	}

	execPath, err := findExecScript()
	if err != nil {
		cmdutil.ExitError(err.Error())
	}

	cancel := make(chan bool)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, &host{engineAddress: engineAddress, execPath: execPath})
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.ExitError(fmt.Sprintf("could not start language host RPC server: %v", err))
	}
	// The engine reads the port from our first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.ExitError(fmt.Sprintf("language host RPC stopped serving: %v", err))
	}
}

func findExecScript() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	p := filepath.Join(filepath.Dir(self), execScriptName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found next to %s: %w", execScriptName, self, err)
	}
	return p, nil
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execPath      string
}

func (h *host) Handshake(ctx context.Context,
	req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.EngineAddress != "" {
		h.engineAddress = req.EngineAddress
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// optionsFrom reads the `runtime.options` of Pulumi.yaml (virtualenv, toolchain).
func optionsFrom(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Toolchain: toolchain.Pip}
	if info == nil {
		wd, _ := os.Getwd()
		opts.Root, opts.ProgramDir = wd, wd
		return opts, nil
	}
	opts.Root = info.RootDirectory
	opts.ProgramDir = info.ProgramDirectory
	m := map[string]any{}
	if info.Options != nil {
		m = info.Options.AsMap()
	}
	if v, ok := m["virtualenv"].(string); ok {
		opts.Virtualenv = v
	}
	if v, ok := m["toolchain"].(string); ok {
		switch strings.ToLower(v) {
		case "pip", "":
			opts.Toolchain = toolchain.Pip
		case "poetry":
			opts.Toolchain = toolchain.Poetry
		case "uv":
			opts.Toolchain = toolchain.Uv
		default:
			return opts, fmt.Errorf("unsupported python toolchain %q", v)
		}
	} else if opts.Virtualenv == "" {
		opts.Toolchain = toolchain.Auto
	}
	return opts, nil
}

func (h *host) toolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts, err := optionsFrom(info)
	if err != nil {
		return nil, err
	}
	return toolchain.ResolveToolchain(opts)
}

// pluginScript prints the pulumi-plugin.json files of installed distributions.
const pluginScript = `
import json, sys
try:
    import importlib.metadata as md
except ImportError:  # pragma: no cover
    print("[]"); sys.exit(0)
out = []
seen = set()
for dist in md.distributions():
    for f in (dist.files or []):
        if f.name != "pulumi-plugin.json":
            continue
        try:
            data = json.loads(f.read_text())
        except Exception:
            continue
        if not isinstance(data, dict) or not data.get("resource"):
            continue
        key = (data.get("name"), data.get("version"), json.dumps(data.get("parameterization")))
        if key in seen:
            continue
        seen.add(key)
        out.append(data)
print(json.dumps(out))
`

type pluginJSON struct {
	Resource         bool   `json:"resource"`
	Name             string `json:"name"`
	Version          string `json:"version"`
	Server           string `json:"server"`
	Parameterization *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Value   []byte `json:"value"`
	} `json:"parameterization"`
}

func (h *host) listPlugins(ctx context.Context, info *pulumirpc.ProgramInfo) ([]pluginJSON, error) {
	tc, err := h.toolchain(info)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", pluginScript)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing installed Pulumi packages: %w: %s", err, stderr.String())
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("parsing installed Pulumi packages: %w", err)
	}
	return plugins, nil
}

func withV(v string) string {
	if v == "" || strings.HasPrefix(v, "v") {
		return v
	}
	return "v" + v
}

func (h *host) GetRequiredPackages(ctx context.Context,
	req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := h.listPlugins(ctx, req.Info)
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		dep := &pulumirpc.PackageDependency{
			Kind: "resource", Name: p.Name, Version: withV(p.Version), Server: p.Server,
		}
		if p.Parameterization != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Parameterization.Name, Version: p.Parameterization.Version,
				Value: p.Parameterization.Value,
			}
		}
		resp.Packages = append(resp.Packages, dep)
	}
	return resp, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	plugins, err := h.listPlugins(ctx, req.Info)
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		if p.Parameterization != nil {
			continue
		}
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: p.Name, Version: withV(p.Version), Server: p.Server,
		})
	}
	return resp, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := h.toolchain(req.Info)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	program := req.Program
	if req.Info != nil {
		program = req.Info.ProgramDirectory
		if ep := req.Info.EntryPoint; ep != "" && ep != "." {
			program = filepath.Join(program, ep)
		}
	}
	if program == "" {
		program = "."
	}

	args := []string{h.execPath}
	if req.Project != "" {
		args = append(args, "--project", req.Project)
	}
	if req.Info != nil && req.Info.RootDirectory != "" {
		args = append(args, "--root_directory", req.Info.RootDirectory)
	}
	if req.Stack != "" {
		args = append(args, "--stack", req.Stack)
	}
	if req.Pwd != "" {
		args = append(args, "--pwd", req.Pwd)
	}
	if req.DryRun {
		args = append(args, "--dry_run", "true")
	}
	args = append(args, "--parallel", fmt.Sprint(req.Parallel))
	if req.MonitorAddress != "" {
		args = append(args, "--monitor", req.MonitorAddress)
	}
	if h.engineAddress != "" {
		args = append(args, "--engine", h.engineAddress)
	}
	if req.Organization != "" {
		args = append(args, "--organization", req.Organization)
	}
	args = append(args, program)
	args = append(args, req.Args...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	config := req.Config
	if config == nil {
		config = map[string]string{}
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	secretKeys := req.ConfigSecretKeys
	if secretKeys == nil {
		secretKeys = []string{}
	}
	keys, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env = append(env, "PULUMI_CONFIG="+string(cfg), "PULUMI_CONFIG_SECRET_KEYS="+string(keys))
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if req.Pwd != "" {
		cmd.Dir = req.Pwd
	}

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if status, ok := exitErr.Sys().(syscall.WaitStatus); ok && status.ExitStatus() == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d",
				exitErr.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	stdout, stderr := &streamWriter{send: func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: b})
	}}, &streamWriter{send: func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stderr: b})
	}}
	info := req.Info
	if info == nil {
		info = &pulumirpc.ProgramInfo{RootDirectory: req.Directory, ProgramDirectory: req.Directory}
	}
	tc, err := h.toolchain(info)
	if err != nil {
		return err
	}
	ctx := server.Context()
	if err := tc.InstallDependencies(ctx, info.ProgramDirectory, req.UseLanguageVersionTools,
		true /*showOutput*/, stdout, stderr); err != nil {
		return err
	}
	return nil
}

// RunPlugin runs a plugin written in Python (e.g. a policy pack: the engine
// calls this for a directory with a PulumiPolicy.yaml whose runtime is python)
// and streams its output back; the plugin announces its port on stdout.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	ctx := server.Context()
	info := req.Info
	if info == nil {
		return errors.New("RunPlugin: missing program info")
	}
	tc, err := h.toolchain(info)
	if err != nil {
		return err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return err
	}
	program := info.ProgramDirectory
	if ep := info.EntryPoint; ep != "" && ep != "." {
		program = filepath.Join(program, ep)
	}
	cmd, err := tc.Command(ctx, append([]string{"-u", program}, req.Args...)...)
	if err != nil {
		return err
	}
	env := req.Env
	if len(env) == 0 {
		env = os.Environ()
	}
	if venv, err := tc.VirtualEnvPath(ctx); err == nil && venv != "" {
		env = toolchain.ActivateVirtualEnv(env, venv)
	}
	cmd.Env = env
	cmd.Dir = req.Pwd

	var mu sync.Mutex
	send := func(resp *pulumirpc.RunPluginResponse) error {
		mu.Lock()
		defer mu.Unlock()
		return server.Send(resp)
	}
	cmd.Stdout = &streamWriter{send: func(b []byte) error {
		return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}})
	}}
	cmd.Stderr = &streamWriter{send: func(b []byte) error {
		return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}})
	}}
	code := 0
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return fmt.Errorf("running plugin %s: %w", program, err)
		}
		code = exitErr.ExitCode()
	}
	return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

type streamWriter struct{ send func([]byte) error }

func (w *streamWriter) Write(p []byte) (int, error) {
	b := append([]byte(nil), p...)
	if err := w.send(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

var _ io.Writer = (*streamWriter)(nil)

func (h *host) RuntimeOptionsPrompts(context.Context,
	*pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := h.toolchain(req.Info)
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: about.PythonExecutable,
		Version:    about.PythonVersion.String(),
		Metadata:   map[string]string{"toolchain": "selextract-offline-host"},
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := h.toolchain(req.Info)
	if err != nil {
		return nil, err
	}
	deps, err := tc.ListPackages(ctx, req.TransitiveDependencies)
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, d := range deps {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
	}
	return resp, nil
}
