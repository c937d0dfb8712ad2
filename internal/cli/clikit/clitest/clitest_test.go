package clitest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
)

// TestStableMasksAndRealigns: times, ages, revisions, seconds, rates and
// the masked words are replaced, and a table whose widths came from them
// is aligned again as one table.
func TestStableMasksAndRealigns(t *testing.T) {
	in := "NAME    VNI      AGE\n" +
		"web     4711     3m\n" +
		"db      12       45s\n" +
		"Created:   2024-05-01 10:11:12 UTC (2h ago)\n" +
		"Revision:  4242\n" +
		"vm/a: Running after 1.5s, 12.3 MiB/s\n"
	got := string(Stable(in, "4711", "<vni1>", "12", "<vni2>"))
	want := "NAME  VNI     AGE\n" +
		"web   <vni1>  <age>\n" +
		"db    <vni2>  <age>\n" +
		"Created:   <time>\n" +
		"Revision:  <rev>\n" +
		"vm/a: Running after <secs>, <rate>\n"
	if got != want {
		t.Fatalf("Stable:\n%s\nwant:\n%s", got, want)
	}
}

// TestShellRunsInItsEnvironment: a command sees the shell's variables,
// also those changed after New, and OK and Fails report what it wrote.
func TestShellRunsInItsEnvironment(t *testing.T) {
	main := func(_ context.Context, args []string, env clikit.Env) int {
		if args[0] == "fail" {
			fmt.Fprintln(env.Stderr, "Error: asked to fail")
			return 1
		}
		fmt.Fprintln(env.Stdout, env.Getenv("ULTRACLOUD_ENDPOINT"), env.Getenv("ULTRACLOUD_PROJECT"))
		_, set := env.LookupEnv("ULTRACLOUD_UNSET")
		fmt.Fprintln(env.Stdout, set, strings.HasSuffix(env.Getenv("ULTRACLOUD_CLIENT_CONFIG"), "none.yaml"))
		return 0
	}
	s := New(t, context.Background(), main, "http://127.0.0.1:1", "tok", "demo")
	if out := s.OK("show"); out != "http://127.0.0.1:1 demo\nfalse true\n" {
		t.Fatalf("OK: %q", out)
	}
	s.Vars["ULTRACLOUD_ENDPOINT"] = "http://proxy"
	if out := s.OK("show"); !strings.HasPrefix(out, "http://proxy demo\n") {
		t.Fatalf("after changing Vars: %q", out)
	}
	if errs := s.Fails([]string{"fail"}, "asked to fail"); errs != "Error: asked to fail\n" {
		t.Fatalf("Fails: %q", errs)
	}
}
