package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func conn(host string, extra resource.PropertyMap) resource.PropertyValue {
	m := resource.PropertyMap{
		"host":       resource.NewStringProperty(host),
		"port":       resource.NewNumberProperty(22),
		"user":       resource.NewStringProperty("deploy"),
		"privateKey": resource.MakeSecret(resource.NewStringProperty("KEY-1")),
	}
	for k, v := range extra {
		m[k] = v
	}
	return resource.MakeSecret(resource.NewObjectProperty(m))
}

func diff(t *testing.T, olds, news resource.PropertyMap) *pulumirpc.DiffResponse {
	t.Helper()
	o, err := marshal(olds)
	if err != nil {
		t.Fatal(err)
	}
	n, err := marshal(news)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&commandProvider{}).Diff(context.Background(), &pulumirpc.DiffRequest{
		Type: remoteCommand, Urn: "urn:pulumi:s::p::command:remote:Command::c", Olds: o, News: n,
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestDiffRemote(t *testing.T) {
	base := resource.PropertyMap{
		"connection": conn("203.0.113.5", nil),
		"create":     resource.NewStringProperty("true"),
		"triggers":   resource.NewArrayProperty([]resource.PropertyValue{resource.NewStringProperty("a")}),
		"stdout":     resource.NewStringProperty("out"),
	}
	with := func(k resource.PropertyKey, v resource.PropertyValue) resource.PropertyMap {
		m := base.Copy()
		delete(m, "stdout")
		m[k] = v
		return m
	}
	unknown := resource.MakeComputed(resource.NewStringProperty(""))
	cases := []struct {
		name            string
		news            resource.PropertyMap
		diffs, replaces []string
	}{
		{"no change", with("create", resource.NewStringProperty("true")), nil, nil},
		{"connection not secret in news", with("connection", deepPlain(conn("203.0.113.5", nil))), nil, nil},
		{"command changed", with("create", resource.NewStringProperty("false")), []string{"create"}, nil},
		{"host changed", with("connection", conn("203.0.113.6", nil)), []string{"connection"}, []string{"connection"}},
		{"port changed", with("connection", conn("203.0.113.5", resource.PropertyMap{"port": resource.NewNumberProperty(2222)})),
			[]string{"connection"}, []string{"connection"}},
		{"key changed", with("connection", conn("203.0.113.5", resource.PropertyMap{
			"privateKey": resource.MakeSecret(resource.NewStringProperty("KEY-2")),
		})), []string{"connection"}, nil},
		{"host unknown", with("connection", conn("", resource.PropertyMap{"host": unknown})),
			[]string{"connection"}, []string{"connection"}},
		{"connection unknown", with("connection", resource.MakeSecret(unknown)), []string{"connection"}, []string{"connection"}},
		{"triggers changed", with("triggers", resource.NewArrayProperty([]resource.PropertyValue{resource.NewStringProperty("b")})),
			[]string{"triggers"}, []string{"triggers"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := diff(t, base, c.news)
			if strings.Join(resp.Diffs, ",") != strings.Join(c.diffs, ",") ||
				strings.Join(resp.Replaces, ",") != strings.Join(c.replaces, ",") {
				t.Errorf("diffs %v replaces %v, want %v %v", resp.Diffs, resp.Replaces, c.diffs, c.replaces)
			}
		})
	}
}

func TestRemoteScriptQuotesEnvironment(t *testing.T) {
	s := spec{command: `printf '%s|%s|%s' "$A" "$B" "$PULUMI_COMMAND_STDOUT"`, env: map[string]string{
		"A": `it's $HOME "x" ` + "`id`", "B": "line1\nline2",
	}}
	script, warnings, err := remoteScript(s, map[string]string{"PULUMI_COMMAND_STDOUT": "prev'out", "PULUMI_COMMAND_STDERR": ""})
	if err != nil || len(warnings) > 0 {
		t.Fatal(err, warnings)
	}
	if strings.Contains(script, "PULUMI_COMMAND_STDERR") {
		t.Errorf("an empty previous output must not be exported: %s", script)
	}
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := `it's $HOME "x" ` + "`id`" + "|line1\nline2|prev'out"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if _, _, err := remoteScript(spec{env: map[string]string{"A;rm": "x"}}, nil); err == nil {
		t.Error("an invalid variable name must be refused")
	}
	if script, _, _ := remoteScript(spec{command: "true"}, nil); script != "true" {
		t.Errorf("no environment: the command as is, got %q", script)
	}
	big := strings.Repeat("x", maxPreviousOutputEnv+1)
	script, warnings, _ = remoteScript(spec{command: "true"}, map[string]string{"PULUMI_COMMAND_STDOUT": big})
	if script != "true" || len(warnings) != 1 {
		t.Errorf("an oversized previous output is left out with a warning: %d bytes, %v", len(script), warnings)
	}
}

func TestCheckRemote(t *testing.T) {
	check := func(m resource.PropertyMap) []string {
		var props []string
		for _, f := range checkRemote(m) {
			props = append(props, f[0]+": "+f[1])
		}
		return props
	}
	if f := check(resource.PropertyMap{"connection": conn("h", nil)}); len(f) != 0 {
		t.Errorf("valid: %v", f)
	}
	if f := check(resource.PropertyMap{}); len(f) != 1 || !strings.Contains(f[0], "connection is required") {
		t.Errorf("missing connection: %v", f)
	}
	unknownHost := conn("", resource.PropertyMap{"host": resource.MakeComputed(resource.NewStringProperty(""))})
	if f := check(resource.PropertyMap{"connection": unknownHost}); len(f) != 0 {
		t.Errorf("an unknown connection is checked later: %v", f)
	}
	bad := conn("h", resource.PropertyMap{
		"port":       resource.NewNumberProperty(70000),
		"privateKey": resource.MakeSecret(resource.NewStringProperty("SECRET-KEY-TEXT")),
	})
	f := check(resource.PropertyMap{"connection": bad, "environment": resource.NewObjectProperty(resource.PropertyMap{
		"OK": resource.NewStringProperty("1"), "NOT OK": resource.NewStringProperty("2"),
	})})
	if len(f) != 2 || strings.Contains(strings.Join(f, " "), "SECRET-KEY-TEXT") {
		t.Errorf("bad port and variable name: %v", f)
	}
	if _, err := parseConnection(conn("h", resource.PropertyMap{"hostKey": resource.NewStringProperty("nope")})); err == nil {
		t.Error("an invalid hostKey must be refused")
	}
}

func TestClientConfigNeverShowsTheKey(t *testing.T) {
	c, err := parseConnection(conn("h", resource.PropertyMap{
		"privateKey": resource.MakeSecret(resource.NewStringProperty("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETBODY\n")),
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.clientConfig()
	if err == nil || strings.Contains(err.Error(), "SECRETBODY") {
		t.Errorf("an unparsable key: an error without its text, got %v", err)
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	noAuth := conn("h", nil)
	delete(noAuth.SecretValue().Element.ObjectValue(), "privateKey")
	c, _ = parseConnection(noAuth)
	if _, _, err := c.clientConfig(); err == nil || !strings.Contains(err.Error(), "no way to authenticate") {
		t.Errorf("no credentials: %v", err)
	}
}

func TestSchemaIsJSON(t *testing.T) {
	var doc struct {
		Name      string                     `json:"name"`
		Version   string                     `json:"version"`
		Resources map[string]json.RawMessage `json:"resources"`
	}
	if err := json.Unmarshal([]byte(schemaJSON), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Name != "command" || doc.Version != Version || doc.Resources[remoteCommand] == nil {
		t.Errorf("schema: %s %s %v", doc.Name, doc.Version, len(doc.Resources))
	}
}

func TestCopyToRemoteIsRefusedClearly(t *testing.T) {
	_, err := (&commandProvider{}).Check(context.Background(), &pulumirpc.CheckRequest{
		Type: "command:remote:CopyToRemote", Urn: "urn:pulumi:s::p::command:remote:CopyToRemote::c",
	})
	if err == nil || !strings.Contains(err.Error(),
		"command:remote:CopyToRemote is not supported by this offline build of the command provider") {
		t.Errorf("got %v", err)
	}
}
