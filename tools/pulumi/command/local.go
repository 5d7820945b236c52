package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

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

// logTo is where a command's stream goes besides its buffer: the engine's
// status log, unless logging is off for that stream or the command is secret.
func (p *commandProvider) logTo(ctx context.Context, urn string, s spec, stream string) io.Writer {
	if p.host == nil || s.secret || s.logging == "none" ||
		(s.logging == "stdout" && stream != "stdout") || (s.logging == "stderr" && stream != "stderr") {
		return io.Discard
	}
	return &lineLogger{emit: func(line string) {
		_ = p.host.LogStatus(ctx, diag.Info, resource.URN(urn), line)
	}}
}

// runError describes a failed command without showing anything secret.
func runError(err error, s spec, where, stdout, stderr string) error {
	if s.secret {
		return fmt.Errorf("%v: running the %s command%s (secret: command and output not shown)", err, s.which, where)
	}
	return fmt.Errorf("%v: running %q%s:\n%s\n%s", err, s.command, where, stdout, stderr)
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
	cmd.Stdout = io.MultiWriter(&stdout, p.logTo(ctx, urn, s, "stdout"))
	cmd.Stderr = io.MultiWriter(&stderr, p.logTo(ctx, urn, s, "stderr"))
	err := cmd.Run()
	out := strings.TrimSuffix(stdout.String(), "\n")
	errOut := strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		return out, errOut, runError(err, s, "", out, errOut)
	}
	return out, errOut, nil
}
