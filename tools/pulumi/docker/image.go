package main

// docker:index/image:Image: a small implementation of pulumi-docker's
// Go-native Image resource (upstream's is not available here, see go.mod).
// It builds an image with the Docker Engine API on the provider's Docker host
// and, unless skipPush is set, pushes it to `registry`.
//
// Differences from upstream: the build runs on the engine's classic builder
// when BuildKit is not usable through the API (no buildx/session here), so
// Dockerfiles must not need BuildKit-only syntax; `cacheFrom` is passed to the
// engine as-is; the image is not removed on delete (as upstream).
//
// A digest of the build context (honouring .dockerignore) is kept as the
// `contextDigest` input so a changed context rebuilds the image.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/build"
	dimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	pbempty "google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pulumi/pulumi/pkg/v3/resource/provider"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

const imageType = "docker:index/image:Image"

// withImage wraps the bridged provider and handles the Image resource itself.
type withImage struct {
	pulumirpc.ResourceProviderServer
	host *provider.HostClient

	mu         sync.Mutex
	dockerHost string
}

var imgOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}

func typeOf(typ, urn string) string {
	if typ != "" {
		return typ
	}
	return string(resource.URN(urn).Type())
}

func (p *withImage) Configure(ctx context.Context, req *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	host := ""
	if req.Args != nil {
		if v, ok := req.Args.Fields["host"]; ok {
			host = v.GetStringValue()
		}
	}
	if host == "" {
		host = req.Variables["docker:config:host"]
	}
	p.mu.Lock()
	p.dockerHost = host
	p.mu.Unlock()
	return p.ResourceProviderServer.Configure(ctx, req)
}

func (p *withImage) client() (*client.Client, error) {
	p.mu.Lock()
	host := p.dockerHost
	p.mu.Unlock()
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	return client.NewClientWithOpts(opts...)
}

// ---------------------------------------------------------------- inputs

type imageArgs struct {
	imageName, context, dockerfile, platform, target, network, builder string
	args                                                               map[string]*string
	addHosts, cacheFrom                                                []string
	skipPush, buildOnPreview                                           bool
	regServer, regUser, regPass                                        string
	known                                                              bool
}

func plainV(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	if v.IsOutput() {
		v = v.OutputValue().Element
	}
	return v
}

func getS(m resource.PropertyMap, k resource.PropertyKey) string {
	if v, ok := m[k]; ok {
		if v = plainV(v); v.IsString() {
			return v.StringValue()
		}
	}
	return ""
}

func getObj(m resource.PropertyMap, k resource.PropertyKey) resource.PropertyMap {
	if v, ok := m[k]; ok {
		if v = plainV(v); v.IsObject() {
			return v.ObjectValue()
		}
	}
	return resource.PropertyMap{}
}

func getList(m resource.PropertyMap, k resource.PropertyKey) []string {
	var out []string
	if v, ok := m[k]; ok {
		if v = plainV(v); v.IsArray() {
			for _, e := range v.ArrayValue() {
				if e = plainV(e); e.IsString() {
					out = append(out, e.StringValue())
				}
			}
		}
	}
	return out
}

func parseImageArgs(m resource.PropertyMap) imageArgs {
	b := getObj(m, "build")
	a := imageArgs{
		imageName:  getS(m, "imageName"),
		context:    getS(b, "context"),
		dockerfile: getS(b, "dockerfile"),
		platform:   getS(b, "platform"),
		target:     getS(b, "target"),
		network:    getS(b, "network"),
		builder:    getS(b, "builderVersion"),
		addHosts:   getList(b, "addHosts"),
		cacheFrom:  getList(getObj(b, "cacheFrom"), "images"),
		args:       map[string]*string{},
		known:      !m.ContainsUnknowns(),
	}
	for k, v := range getObj(b, "args") {
		if v = plainV(v); v.IsString() {
			s := v.StringValue()
			a.args[string(k)] = &s
		}
	}
	if v, ok := m["skipPush"]; ok && plainV(v).IsBool() {
		a.skipPush = plainV(v).BoolValue()
	}
	if v, ok := m["buildOnPreview"]; ok && plainV(v).IsBool() {
		a.buildOnPreview = plainV(v).BoolValue()
	}
	r := getObj(m, "registry")
	a.regServer, a.regUser, a.regPass = getS(r, "server"), getS(r, "username"), getS(r, "password")
	if a.context == "" {
		a.context = "."
	}
	if a.dockerfile == "" {
		a.dockerfile = filepath.Join(a.context, "Dockerfile")
	}
	return a
}

// ---------------------------------------------------------------- context

func dockerignore(contextDir string) ([]string, error) {
	f, err := os.Open(filepath.Join(contextDir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ignorefile.ReadAll(f)
}

// contextFiles lists the files of the build context (relative, sorted),
// without what .dockerignore excludes; the Dockerfile is always included.
func contextFiles(contextDir, dockerfileRel string) ([]string, error) {
	excludes, err := dockerignore(contextDir)
	if err != nil {
		return nil, err
	}
	pm, err := patternmatcher.New(excludes)
	if err != nil {
		return nil, err
	}
	var files []string
	err = filepath.WalkDir(contextDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(contextDir, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		skip, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if skip && rel != dockerfileRel && rel != ".dockerignore" {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			files = append(files, rel)
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

func contextDigest(contextDir, dockerfileRel string) (string, error) {
	files, err := contextFiles(contextDir, dockerfileRel)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, rel := range files {
		path := filepath.Join(contextDir, filepath.FromSlash(rel))
		fi, err := os.Lstat(path)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%o\x00", rel, fi.Mode())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return "", err
			}
			io.WriteString(h, target)
		case fi.Mode().IsRegular():
			f, err := os.Open(path)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", err
			}
		}
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func writeContextTar(w io.Writer, contextDir string, files []string) error {
	tw := tar.NewWriter(w)
	for _, rel := range files {
		path := filepath.Join(contextDir, filepath.FromSlash(rel))
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func resolvePaths(a imageArgs) (ctxDir, dockerfileRel string, err error) {
	ctxDir, err = filepath.Abs(a.context)
	if err != nil {
		return "", "", err
	}
	df := a.dockerfile
	if !filepath.IsAbs(df) {
		df, err = filepath.Abs(df)
		if err != nil {
			return "", "", err
		}
	}
	rel, err := filepath.Rel(ctxDir, df)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", "", fmt.Errorf("the Dockerfile %s must be inside the build context %s", df, ctxDir)
	}
	return ctxDir, filepath.ToSlash(rel), nil
}

// ---------------------------------------------------------------- CRUD

func (p *withImage) Check(ctx context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if typeOf(req.Type, req.Urn) != imageType {
		return p.ResourceProviderServer.Check(ctx, req)
	}
	news, err := plugin.UnmarshalProperties(req.News, imgOpts)
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	if v, ok := news["imageName"]; !ok || v.IsNull() {
		failures = append(failures, &pulumirpc.CheckFailure{Property: "imageName", Reason: "imageName is required"})
	}
	delete(news, "contextDigest")
	a := parseImageArgs(news)
	if b, ok := news["build"]; !ok || !b.ContainsUnknowns() {
		ctxDir, dfRel, err := resolvePaths(a)
		if err != nil {
			failures = append(failures, &pulumirpc.CheckFailure{Property: "build", Reason: err.Error()})
		} else if digest, err := contextDigest(ctxDir, dfRel); err != nil {
			failures = append(failures, &pulumirpc.CheckFailure{Property: "build", Reason: err.Error()})
		} else {
			news["contextDigest"] = resource.NewStringProperty(digest)
		}
	}
	inputs, err := plugin.MarshalProperties(news, imgOpts)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: inputs, Failures: failures}, nil
}

var imageInputKeys = []resource.PropertyKey{
	"imageName", "build", "registry", "skipPush", "contextDigest",
}

func (p *withImage) Diff(ctx context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	if typeOf(req.Type, req.Urn) != imageType {
		return p.ResourceProviderServer.Diff(ctx, req)
	}
	olds, err := plugin.UnmarshalProperties(req.Olds, imgOpts)
	if err != nil {
		return nil, err
	}
	news, err := plugin.UnmarshalProperties(req.News, imgOpts)
	if err != nil {
		return nil, err
	}
	ignore := map[string]bool{}
	for _, k := range req.IgnoreChanges {
		ignore[k] = true
	}
	var diffs []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for _, k := range imageInputKeys {
		if ignore[string(k)] {
			continue
		}
		o, hasO := olds[k]
		n, hasN := news[k]
		if (!hasO || o.IsNull()) && (!hasN || n.IsNull()) {
			continue
		}
		if hasO && hasN && !n.ContainsUnknowns() && o.DeepEquals(n) {
			continue
		}
		diffs = append(diffs, string(k))
		detailed[string(k)] = &pulumirpc.PropertyDiff{Kind: pulumirpc.PropertyDiff_UPDATE, InputDiff: true}
	}
	changes := pulumirpc.DiffResponse_DIFF_NONE
	if len(diffs) > 0 {
		changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return &pulumirpc.DiffResponse{Changes: changes, Diffs: diffs, DetailedDiff: detailed, HasDetailedDiff: true}, nil
}

func (p *withImage) outputs(news resource.PropertyMap, a imageArgs, repoDigest resource.PropertyValue) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range news {
		out[k] = v
	}
	out["imageName"] = resource.NewStringProperty(a.imageName)
	out["baseImageName"] = resource.NewStringProperty(a.imageName)
	out["context"] = resource.NewStringProperty(a.context)
	out["dockerfile"] = resource.NewStringProperty(a.dockerfile)
	out["platform"] = resource.NewStringProperty(a.platform)
	out["registryServer"] = resource.NewStringProperty(a.regServer)
	out["repoDigest"] = repoDigest
	return out
}

type logWriter struct {
	p   *withImage
	ctx context.Context
	urn string
	buf []byte
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexAny(string(w.buf), "\r\n")
		if i < 0 {
			return len(b), nil
		}
		line := strings.TrimSpace(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
		if line != "" && w.p.host != nil {
			_ = w.p.host.LogStatus(w.ctx, diag.Info, resource.URN(w.urn), line)
		}
	}
}

func (p *withImage) buildAndPush(ctx context.Context, urn string, a imageArgs) (string, error) {
	cli, err := p.client()
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ctxDir, dfRel, err := resolvePaths(a)
	if err != nil {
		return "", err
	}
	files, err := contextFiles(ctxDir, dfRel)
	if err != nil {
		return "", err
	}
	opts := build.ImageBuildOptions{
		Tags:        []string{a.imageName},
		Dockerfile:  dfRel,
		BuildArgs:   a.args,
		Remove:      true,
		Platform:    a.platform,
		Target:      a.target,
		NetworkMode: a.network,
		ExtraHosts:  a.addHosts,
		CacheFrom:   a.cacheFrom,
		Version:     build.BuilderV1,
	}
	if a.regServer != "" && a.regUser != "" {
		opts.AuthConfigs = map[string]registry.AuthConfig{
			a.regServer: {Username: a.regUser, Password: a.regPass, ServerAddress: a.regServer},
		}
	}
	runBuild := func(o build.ImageBuildOptions) error {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeContextTar(pw, ctxDir, files)) }()
		resp, err := cli.ImageBuild(ctx, pr, o)
		if err != nil {
			pr.CloseWithError(err)
			return err
		}
		defer resp.Body.Close()
		return jsonmessage.DisplayJSONMessagesStream(resp.Body, &logWriter{p: p, ctx: ctx, urn: urn}, 0, false, nil)
	}
	if err := runBuild(opts); err != nil {
		return "", fmt.Errorf("building %s: %w", a.imageName, err)
	}
	if a.skipPush {
		return "", nil
	}
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{
		Username: a.regUser, Password: a.regPass, ServerAddress: a.regServer,
	})
	if err != nil {
		return "", err
	}
	rc, err := cli.ImagePush(ctx, a.imageName, dimage.PushOptions{RegistryAuth: auth})
	if err != nil {
		return "", fmt.Errorf("pushing %s: %w", a.imageName, err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, &logWriter{p: p, ctx: ctx, urn: urn}, 0, false, nil); err != nil {
		return "", fmt.Errorf("pushing %s: %w", a.imageName, err)
	}
	insp, err := cli.ImageInspect(ctx, a.imageName)
	if err != nil {
		return "", err
	}
	repo := a.imageName
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	for _, d := range insp.RepoDigests {
		if strings.HasPrefix(d, repo+"@") {
			return d, nil
		}
	}
	if len(insp.RepoDigests) > 0 {
		return insp.RepoDigests[0], nil
	}
	return "", nil
}

func (p *withImage) createOrUpdate(ctx context.Context, urn string, props *structpb.Struct, preview bool) (resource.PropertyMap, error) {
	news, err := plugin.UnmarshalProperties(props, imgOpts)
	if err != nil {
		return nil, err
	}
	a := parseImageArgs(news)
	if preview && (!a.buildOnPreview || !a.known) {
		return p.outputs(news, a, resource.MakeComputed(resource.NewStringProperty(""))), nil
	}
	digest, err := p.buildAndPush(ctx, urn, a)
	if err != nil {
		return nil, err
	}
	return p.outputs(news, a, resource.NewStringProperty(digest)), nil
}

func (p *withImage) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if typeOf(req.Type, req.Urn) != imageType {
		return p.ResourceProviderServer.Create(ctx, req)
	}
	out, err := p.createOrUpdate(ctx, req.Urn, req.Properties, req.Preview)
	if err != nil {
		return nil, err
	}
	props, err := plugin.MarshalProperties(out, imgOpts)
	if err != nil {
		return nil, err
	}
	id := ""
	if !req.Preview {
		id = getS(out, "imageName")
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (p *withImage) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if typeOf(req.Type, req.Urn) != imageType {
		return p.ResourceProviderServer.Update(ctx, req)
	}
	out, err := p.createOrUpdate(ctx, req.Urn, req.News, req.Preview)
	if err != nil {
		return nil, err
	}
	props, err := plugin.MarshalProperties(out, imgOpts)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *withImage) Read(ctx context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if typeOf(req.Type, req.Urn) != imageType {
		return p.ResourceProviderServer.Read(ctx, req)
	}
	return &pulumirpc.ReadResponse{Id: req.Id, Properties: req.Properties, Inputs: req.Inputs}, nil
}

func (p *withImage) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*pbempty.Empty, error) {
	if typeOf(req.Type, req.Urn) != imageType {
		return p.ResourceProviderServer.Delete(ctx, req)
	}
	return &pbempty.Empty{}, nil
}
