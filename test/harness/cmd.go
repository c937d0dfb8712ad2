//go:build linux

package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// run runs name with args, feeding stdin if non-empty, and returns its
// combined output. A failure names the command and includes its output.
func run(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), &cmdError{cmd: name + " " + strings.Join(args, " "), err: err, out: strings.TrimSpace(out.String())}
	}
	return out.Bytes(), nil
}

// cmdError is a failed external command.
type cmdError struct {
	cmd string
	err error
	out string
}

func (e *cmdError) Error() string {
	if e.out == "" {
		return fmt.Sprintf("harness: %s: %v", e.cmd, e.err)
	}
	return fmt.Sprintf("harness: %s: %v: %s", e.cmd, e.err, e.out)
}

func (e *cmdError) Unwrap() error { return e.err }

// output returns the failed command's output, or "" if err is not one.
func cmdOutput(err error) string {
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce.out
	}
	return ""
}

// ip runs `ip args...`.
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, "", "ip", args...)
	return err
}

// ipIn runs `ip -n ns args...`.
func ipIn(ctx context.Context, ns string, args ...string) error {
	return ip(ctx, append([]string{"-n", ns}, args...)...)
}

// inNS runs a command inside namespace ns.
func inNS(ctx context.Context, ns, stdin, name string, args ...string) ([]byte, error) {
	return run(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// commandIn returns a command that runs in dir.
func commandIn(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	return c
}
