// Package clitest runs the ultracloud CLI in-process for the tests of the
// CLI's packages: a Shell with the environment a user's shell would have
// (ULTRACLOUD_ENDPOINT, _TOKEN, _PROJECT, no client config), commands that
// must succeed or fail, and Stable, which masks what changes from run to
// run so that output can be a golden file.
//
// Like clikit it knows no component, and it imports only pkg/, clikit and
// the standard library: the command tree (internal/cli.Main) and the node
// the commands talk to are the test's to pass in. Only tests import it.
package clitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Main runs the CLI with args in env and returns its exit code, as
// internal/cli.Main does.
type Main func(ctx context.Context, args []string, env clikit.Env) int

// Shell runs commands as a shell with Vars set would, one at a time or
// concurrently.
type Shell struct {
	T   *testing.T
	Ctx context.Context
	// Vars is the environment; a test may change it between commands
	// (e.g. point ULTRACLOUD_ENDPOINT at a proxy).
	Vars map[string]string
	main Main
}

// New returns a shell whose commands run main against endpoint as token,
// in project, with a client config that does not exist (so nothing of the
// user's own config is read).
func New(t *testing.T, ctx context.Context, main Main, endpoint, token, project string) *Shell {
	return &Shell{T: t, Ctx: ctx, main: main, Vars: map[string]string{
		"ULTRACLOUD_ENDPOINT":      endpoint,
		"ULTRACLOUD_TOKEN":         token,
		"ULTRACLOUD_PROJECT":       project,
		"ULTRACLOUD_CLIENT_CONFIG": filepath.Join(t.TempDir(), "none.yaml"),
	}}
}

// NewInProject creates project with admin (a node's break-glass client)
// and returns New's shell in it, whose commands are bounded by within.
func NewInProject(t *testing.T, within time.Duration, main Main, admin *client.Client, endpoint, token, project string) *Shell {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	if _, err := admin.Resources("projects", "").Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: project}, Spec: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	return New(t, ctx, main, endpoint, token, project)
}

// Env is the shell's environment with the given standard streams.
func (s *Shell) Env(stdin io.Reader, stdout, stderr io.Writer) clikit.Env {
	getenv := func(k string) string { return s.Vars[k] }
	lookup := func(k string) (string, bool) { v, ok := s.Vars[k]; return v, ok }
	return clikit.Env{Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: getenv, LookupEnv: lookup}
}

// RunIn runs one command in env and returns its exit code.
func (s *Shell) RunIn(env clikit.Env, args ...string) int {
	return s.main(s.Ctx, args, env)
}

// Run runs one command with an empty stdin and returns its exit code,
// stdout and stderr.
func (s *Shell) Run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := s.RunIn(s.Env(strings.NewReader(""), &out, &errb), args...)
	return code, out.String(), errb.String()
}

// OK runs a command that must succeed and returns its stdout.
func (s *Shell) OK(args ...string) string {
	s.T.Helper()
	code, out, errs := s.Run(args...)
	if code != 0 {
		s.T.Fatalf("ultracloud %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// Fails runs a command that must fail and checks that stderr mentions
// every want; it returns stderr.
func (s *Shell) Fails(args []string, want ...string) string {
	s.T.Helper()
	code, out, errs := s.Run(args...)
	if code == 0 {
		s.T.Fatalf("ultracloud %s succeeded:\n%s", strings.Join(args, " "), out)
	}
	for _, w := range want {
		if !strings.Contains(errs, w) {
			s.T.Fatalf("ultracloud %s: stderr %q does not mention %q", strings.Join(args, " "), errs, w)
		}
	}
	return errs
}

// DecodeInto decodes raw (a spec or a status) as a T, failing the test if
// it cannot.
func DecodeInto[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return v
}

var (
	cellSep = regexp.MustCompile(`\s{2,}`)
	timeRE  = regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S+ \(\d+[smhd] ago\)`)
	ageRE   = regexp.MustCompile(`^\d+[smhd]( ago)?$`)
	revRE   = regexp.MustCompile(`Revision:\s+\d+`)
	secsRE  = regexp.MustCompile(`\b\d+\.\ds\b`)
	rateRE  = regexp.MustCompile(`[\d.]+ [KMG]?i?B/s`)
)

// Stable masks what changes from run to run (times, ages, revisions,
// elapsed seconds, rates, and the words in mask, given as pairs of a word
// and what stands for it) and re-aligns the columns, whose widths depend
// on the masked values, so the output can be a golden file. A run of lines
// with the same indentation and number of cells is aligned as one table,
// as the verbs align them.
func Stable(s string, mask ...string) []byte {
	s = timeRE.ReplaceAllString(s, "<time>")
	s = revRE.ReplaceAllString(s, "Revision:  <rev>")
	s = secsRE.ReplaceAllString(s, "<secs>")
	s = rateRE.ReplaceAllString(s, "<rate>")
	for i := 0; i+1 < len(mask); i += 2 {
		s = strings.ReplaceAll(s, mask[i], mask[i+1])
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	lastShape := ""
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		body := strings.TrimLeft(line, " ")
		indent := line[:len(line)-len(body)]
		cells := cellSep.Split(body, -1)
		for i, c := range cells {
			if ageRE.MatchString(c) {
				cells[i] = "<age>"
			}
		}
		if shape := fmt.Sprintf("%q/%d", indent, len(cells)); shape != lastShape {
			tw.Flush()
			lastShape = shape
		}
		fmt.Fprintln(tw, indent+strings.Join(cells, "\t"))
	}
	tw.Flush()
	return b.Bytes()
}
