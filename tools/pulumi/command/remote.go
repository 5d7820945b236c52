package main

// command:remote:Command: runs create/update/delete over SSH.
//
// Connection (as pulumi_command.remote.ConnectionArgs sends it): host, port
// (22), user (root), privateKey, privateKeyPassword, password,
// agentSocketPath (default $SSH_AUTH_SOCK), dialErrorLimit (10; -1 is
// unlimited), perDialTimeout (15 s; 0 is no limit), hostKey (authorized_keys
// format, e.g. "ssh-ed25519 AAAA..."; without it any host key is accepted) and
// proxy (a bastion with the same fields but proxy). A failed dial (refused,
// timed out, handshake or authentication failure: a freshly booted server
// refuses SSH for a while, and cloud-init may not have installed the key
// yet) is retried with a growing pause (1 s doubling to 10 s) until
// dialErrorLimit failures.
//
// Environment variables (and PULUMI_COMMAND_STDOUT/STDERR) are passed by
// prefixing the command with `export K='v';` (sshd usually refuses setenv
// requests), so the remote login shell must be POSIX-like. The command itself
// runs as the exec request of an SSH session, like `ssh host 'command'`, with a
// keep-alive request every 30 s while it runs.
//
// privateKey, privateKeyPassword and password are never logged or put into
// an error message; the connection is kept secret in the resource's outputs.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

const (
	defaultPort           = 22
	defaultUser           = "root"
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15 * time.Second
	// A single argument (sshd runs `$SHELL -c <command>`) is limited to 128 KiB
	// on Linux; previous outputs are passed only while the command stays well
	// below that.
	maxPreviousOutputEnv = 64 * 1024
)

// Pauses between dial attempts.
var (
	firstRetryDelay = time.Second
	maxRetryDelay   = 10 * time.Second
	// keep-alive requests while a command runs
	keepAliveInterval = 30 * time.Second
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// endpoint is one SSH hop (the target or its proxy), resolved and defaulted.
type endpoint struct {
	field              string // "connection" or "connection.proxy", for messages
	host               string
	port               int
	user               string
	password           *string
	privateKey         *string
	privateKeyPassword *string
	agentSocketPath    *string
	hostKey            *string
	dialErrorLimit     int
	perDialTimeout     time.Duration
}

type connection struct {
	endpoint
	proxy *endpoint
}

func (e *endpoint) addr() string { return net.JoinHostPort(e.host, strconv.Itoa(e.port)) }

func (e *endpoint) String() string { return e.user + "@" + e.addr() }

func optString(m resource.PropertyMap, k resource.PropertyKey) *string {
	v, ok := m[k]
	if !ok {
		return nil
	}
	if v = plain(v); v.IsString() {
		s := v.StringValue()
		return &s
	}
	return nil
}

func optNumber(m resource.PropertyMap, field string, k resource.PropertyKey, def float64) (float64, error) {
	v, ok := m[k]
	if !ok {
		return def, nil
	}
	switch v = plain(v); {
	case v.IsNull():
		return def, nil
	case v.IsNumber():
		return v.NumberValue(), nil
	case v.IsString():
		f, err := strconv.ParseFloat(v.StringValue(), 64)
		if err != nil {
			return 0, fmt.Errorf("%s.%s must be a number", field, k)
		}
		return f, nil
	}
	return 0, fmt.Errorf("%s.%s must be a number", field, k)
}

func parseEndpoint(field string, m resource.PropertyMap) (endpoint, error) {
	e := endpoint{
		field:              field,
		user:               defaultUser,
		password:           optString(m, "password"),
		privateKey:         optString(m, "privateKey"),
		privateKeyPassword: optString(m, "privateKeyPassword"),
		agentSocketPath:    optString(m, "agentSocketPath"),
		hostKey:            optString(m, "hostKey"),
	}
	if h := optString(m, "host"); h != nil && *h != "" {
		e.host = *h
	} else {
		return e, fmt.Errorf("%s.host is required", field)
	}
	if u := optString(m, "user"); u != nil && *u != "" {
		e.user = *u
	}
	port, err := optNumber(m, field, "port", defaultPort)
	if err != nil {
		return e, err
	}
	if port < 1 || port > 65535 || port != float64(int(port)) {
		return e, fmt.Errorf("%s.port must be a port number (1-65535)", field)
	}
	e.port = int(port)
	limit, err := optNumber(m, field, "dialErrorLimit", defaultDialErrorLimit)
	if err != nil {
		return e, err
	}
	e.dialErrorLimit = int(limit)
	timeout, err := optNumber(m, field, "perDialTimeout", defaultPerDialTimeout.Seconds())
	if err != nil {
		return e, err
	}
	e.perDialTimeout = time.Duration(timeout * float64(time.Second))
	if e.hostKey != nil && *e.hostKey != "" {
		if _, err := parseHostKey(*e.hostKey); err != nil {
			return e, fmt.Errorf("%s.hostKey: %w", field, err)
		}
	}
	return e, nil
}

// parseConnection resolves a known connection input.
func parseConnection(v resource.PropertyValue) (*connection, error) {
	if v.ContainsUnknowns() {
		return nil, errors.New("connection is not known yet")
	}
	v = deepPlain(v)
	if !v.IsObject() {
		return nil, errors.New("connection is required (an object with at least host)")
	}
	m := v.ObjectValue()
	e, err := parseEndpoint("connection", m)
	if err != nil {
		return nil, err
	}
	c := &connection{endpoint: e}
	if pv, ok := m["proxy"]; ok && !pv.IsNull() {
		if !pv.IsObject() {
			return nil, errors.New("connection.proxy must be an object")
		}
		pe, err := parseEndpoint("connection.proxy", pv.ObjectValue())
		if err != nil {
			return nil, err
		}
		c.proxy = &pe
	}
	return c, nil
}

// checkRemote validates remote.Command inputs (as far as they are known);
// it returns (property, reason) pairs. Reasons never quote secret values.
func checkRemote(news resource.PropertyMap) [][2]string {
	var failures [][2]string
	conn, ok := news["connection"]
	switch {
	case !ok || conn.IsNull():
		failures = append(failures, [2]string{"connection", "connection is required"})
	case conn.ContainsUnknowns():
		// checked again when it is known (before anything runs)
	default:
		if _, err := parseConnection(conn); err != nil {
			failures = append(failures, [2]string{"connection", err.Error()})
		}
	}
	if v, ok := news["environment"]; ok {
		if v = plain(v); v.IsObject() {
			for k := range v.ObjectValue() {
				if !envName.MatchString(string(k)) {
					failures = append(failures, [2]string{"environment",
						fmt.Sprintf("environment variable name %q is not a valid shell name", string(k))})
				}
			}
		}
	}
	return failures
}

// connectionTargetChanged says whether a connection change points the command
// at another machine or account (host, port, user, proxy): that replaces the
// resource; other changes (credentials, timeouts, host key) are updates.
func connectionTargetChanged(o, n resource.PropertyValue) bool {
	target := func(v resource.PropertyValue) (resource.PropertyValue, bool) {
		if v.ContainsUnknowns() {
			v = plain(v)
			if !v.IsObject() {
				return v, false
			}
			for _, k := range []resource.PropertyKey{"host", "port", "user", "proxy"} {
				if e, ok := v.ObjectValue()[k]; ok && e.ContainsUnknowns() {
					return v, false
				}
			}
		}
		v = deepPlain(v)
		if !v.IsObject() {
			return v, true
		}
		m := v.ObjectValue()
		t := resource.PropertyMap{
			"host": resource.NewStringProperty(""),
			"port": resource.NewNumberProperty(defaultPort),
			"user": resource.NewStringProperty(defaultUser),
		}
		for _, k := range []resource.PropertyKey{"host", "port", "user"} {
			if e, ok := m[k]; ok && !e.IsNull() {
				t[k] = e
			}
		}
		if p, ok := m["proxy"]; ok && p.IsObject() {
			pm := p.ObjectValue()
			t["proxy"] = resource.NewObjectProperty(resource.PropertyMap{
				"host": pm["host"], "port": pm["port"], "user": pm["user"],
			})
		}
		return resource.NewObjectProperty(t), true
	}
	ot, okO := target(o)
	nt, okN := target(n)
	if !okO || !okN {
		return true // not known yet: assume another machine
	}
	return !ot.DeepEquals(nt)
}

func parseHostKey(s string) (ssh.PublicKey, error) {
	if key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s)); err == nil {
		return key, nil
	}
	if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s)); err == nil {
		if key, err := ssh.ParsePublicKey(raw); err == nil {
			return key, nil
		}
	}
	return nil, errors.New(`not a public key in authorized_keys format ("ssh-ed25519 AAAA...")`)
}

// clientConfig builds the SSH client configuration of one hop; the returned
// function releases the SSH agent connection, if any.
func (e *endpoint) clientConfig() (*ssh.ClientConfig, func(), error) {
	cfg := &ssh.ClientConfig{User: e.user, HostKeyCallback: ssh.InsecureIgnoreHostKey()}
	release := func() {}
	if e.hostKey != nil && *e.hostKey != "" {
		key, err := parseHostKey(*e.hostKey)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.hostKey: %w", e.field, err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(key)
		if key.Type() == ssh.KeyAlgoRSA {
			cfg.HostKeyAlgorithms = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		} else {
			cfg.HostKeyAlgorithms = []string{key.Type()}
		}
	}
	// All public keys go into one method: the client tries each method once.
	var signers []ssh.Signer
	if e.privateKey != nil && *e.privateKey != "" {
		var signer ssh.Signer
		var err error
		if e.privateKeyPassword != nil && *e.privateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*e.privateKey), []byte(*e.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*e.privateKey))
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s.privateKey cannot be used: %v", e.field, err)
		}
		signers = append(signers, signer)
	}
	var agentClient agent.ExtendedAgent
	sock, explicit := os.Getenv("SSH_AUTH_SOCK"), false
	if e.agentSocketPath != nil && *e.agentSocketPath != "" {
		sock, explicit = *e.agentSocketPath, true
	}
	if sock != "" {
		ac, err := net.Dial("unix", sock)
		if err != nil && explicit {
			return nil, nil, fmt.Errorf("%s.agentSocketPath: cannot reach the SSH agent: %v", e.field, err)
		}
		if err == nil {
			agentClient = agent.NewClient(ac)
			release = func() { _ = ac.Close() }
		}
	}
	if len(signers) > 0 || agentClient != nil {
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			all := append([]ssh.Signer{}, signers...)
			if agentClient != nil {
				if more, err := agentClient.Signers(); err == nil {
					all = append(all, more...)
				}
			}
			return all, nil
		}))
	}
	if e.password != nil && *e.password != "" {
		pw := *e.password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if len(cfg.Auth) == 0 {
		release()
		return nil, nil, fmt.Errorf("%s: no way to authenticate as %s: set privateKey or password, "+
			"or run an SSH agent (SSH_AUTH_SOCK or agentSocketPath)", e.field, e.user)
	}
	return cfg, release, nil
}

type dialFunc func(ctx context.Context, addr string) (net.Conn, error)

func tcpDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// dialOnce opens one SSH client connection; dial and handshake each get at
// most timeout (0: no limit).
func dialOnce(ctx context.Context, addr string, cfg *ssh.ClientConfig, dial dialFunc, timeout time.Duration) (*ssh.Client, error) {
	dctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := dial(dctx, addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("dial tcp %s: timed out after %s", addr, timeout)
		}
		return nil, err
	}
	var timedOut atomic.Bool
	var timer *time.Timer
	if timeout > 0 {
		timer = time.AfterFunc(timeout, func() { timedOut.Store(true); _ = conn.Close() })
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if timer != nil && !timer.Stop() {
		if err == nil {
			_ = c.Close()
		}
		return nil, fmt.Errorf("ssh handshake with %s: timed out after %s", addr, timeout)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}

func (p *commandProvider) status(ctx context.Context, urn string, sev diag.Severity, msg string) {
	if p.host != nil {
		_ = p.host.LogStatus(ctx, sev, resource.URN(urn), msg)
	}
}

// dialRetry dials e until it answers or dialErrorLimit dials have failed.
func (p *commandProvider) dialRetry(ctx context.Context, urn string, e *endpoint, dial dialFunc) (*ssh.Client, func(), error) {
	cfg, release, err := e.clientConfig()
	if err != nil {
		return nil, nil, err
	}
	delay := firstRetryDelay
	for failures := 1; ; failures++ {
		client, err := dialOnce(ctx, e.addr(), cfg, dial, e.perDialTimeout)
		if err == nil {
			return client, func() { _ = client.Close(); release() }, nil
		}
		if ctx.Err() != nil {
			release()
			return nil, nil, ctx.Err()
		}
		if e.dialErrorLimit >= 0 && failures > e.dialErrorLimit {
			release()
			return nil, nil, fmt.Errorf("cannot connect to %s over SSH (%d failed attempts): %w", e, failures, err)
		}
		of := ""
		if e.dialErrorLimit >= 0 {
			of = fmt.Sprintf(" of %d", e.dialErrorLimit+1)
		}
		p.status(ctx, urn, diag.Info, fmt.Sprintf("SSH to %s: attempt %d%s failed (%v); retrying in %s",
			e, failures, of, err, delay))
		select {
		case <-ctx.Done():
			release()
			return nil, nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay *= 2; delay > maxRetryDelay {
			delay = maxRetryDelay
		}
	}
}

// connect returns an SSH client for c (through its proxy, if any) and a
// function that closes everything it opened.
func (p *commandProvider) connect(ctx context.Context, urn string, c *connection) (*ssh.Client, func(), error) {
	dial := dialFunc(tcpDial)
	closeProxy := func() {}
	if c.proxy != nil {
		proxyClient, closeP, err := p.dialRetry(ctx, urn, c.proxy, tcpDial)
		if err != nil {
			return nil, nil, err
		}
		closeProxy = closeP
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return proxyClient.DialContext(ctx, "tcp", addr)
		}
	}
	client, closeC, err := p.dialRetry(ctx, urn, &c.endpoint, dial)
	if err != nil {
		closeProxy()
		return nil, nil, err
	}
	return client, func() { closeC(); closeProxy() }, nil
}

// keepAlive pings the server while a command runs, so a long silent command
// (`cloud-init status --wait`) does not lose its connection to an idle timeout.
func keepAlive(client *ssh.Client, done <-chan struct{}) {
	ticker := time.NewTicker(keepAliveInterval)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
			_, _, _ = client.SendRequest("keepalive@openssh.com", true, nil)
		}
	}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// remoteScript is the command line sent to the server: the environment as
// `export K='v';` statements, then the command.
func remoteScript(s spec, extraEnv map[string]string) (string, []string, error) {
	var exports []string
	var warnings []string
	keys := make([]string, 0, len(s.env))
	for k := range s.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !envName.MatchString(k) {
			return "", nil, fmt.Errorf("environment variable name %q is not a valid shell name", k)
		}
		exports = append(exports, "export "+k+"="+shellQuote(s.env[k])+";")
	}
	keys = keys[:0]
	for k, v := range extraEnv {
		if v != "" { // like upstream: only a non-empty previous output is passed
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	size := 0
	for _, k := range keys {
		size += len(shellQuote(extraEnv[k]))
	}
	if size > maxPreviousOutputEnv {
		warnings = append(warnings, fmt.Sprintf("the previous stdout/stderr (%d bytes) are too large to pass "+
			"as PULUMI_COMMAND_STDOUT/PULUMI_COMMAND_STDERR over SSH; not set", size))
	} else {
		for _, k := range keys {
			exports = append(exports, "export "+k+"="+shellQuote(extraEnv[k])+";")
		}
	}
	if len(exports) == 0 {
		return s.command, warnings, nil
	}
	return strings.Join(exports, " ") + "\n" + s.command, warnings, nil
}

func (p *commandProvider) runRemote(ctx context.Context, urn string, c *connection, s spec,
	extraEnv map[string]string,
) (string, string, error) {
	script, warnings, err := remoteScript(s, extraEnv)
	if err != nil {
		return "", "", err
	}
	for _, w := range warnings {
		if p.host != nil {
			_ = p.host.Log(ctx, diag.Warning, resource.URN(urn), w)
		}
	}
	client, closeAll, err := p.connect(ctx, urn, c)
	if err != nil {
		return "", "", err
	}
	defer closeAll()
	session, err := client.NewSession()
	if err != nil {
		return "", "", fmt.Errorf("opening an SSH session on %s: %w", &c.endpoint, err)
	}
	defer session.Close()
	if s.stdin != "" {
		session.Stdin = strings.NewReader(s.stdin)
	}
	var stdout, stderr bytes.Buffer
	session.Stdout = io.MultiWriter(&stdout, p.logTo(ctx, urn, s, "stdout"))
	session.Stderr = io.MultiWriter(&stderr, p.logTo(ctx, urn, s, "stderr"))
	stop := context.AfterFunc(ctx, func() { _ = client.Close() })
	done := make(chan struct{})
	go keepAlive(client, done)
	err = session.Run(script)
	close(done)
	stop()
	out := strings.TrimSuffix(stdout.String(), "\n")
	errOut := strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return out, errOut, runError(err, s, " on "+c.endpoint.String(), out, errOut)
	}
	return out, errOut, nil
}
