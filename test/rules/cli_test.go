package rules

import (
	"fmt"
	"strings"
	"testing"
)

// cliRoot holds the CLI: the shell itself, clikit (what the commands share)
// and one package per component, internal/cli/<component>.
const cliRoot = module + "internal/cli/"

// cliViolations checks the module-internal imports of the CLI's packages:
//   - internal/cli/<c> (and below it) imports only pkg/..., clikit and
//     component c's client packages, internal/<c>/client and
//     internal/<c>/wire: never the component itself (internal/<c>), another
//     component's CLI or any other internal package;
//   - clikit (and below it) imports only pkg/..., clikit and
//     internal/runtime/...: it knows no component.
//
// It returns one message per forbidden import and the components whose CLI
// packages it saw.
func cliViolations(pkgs []pkgInfo) (bad []string, components map[string]bool) {
	components = map[string]bool{}
	under := func(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }
	for _, p := range pkgs {
		rest, ok := strings.CutPrefix(p.ImportPath, cliRoot)
		if !ok {
			continue // the shell, which wires everything
		}
		c, _, _ := strings.Cut(rest, "/")
		var allowed []string
		var rule string
		if c == "clikit" {
			allowed = []string{"pkg", "internal/cli/clikit", "internal/runtime"}
			rule = "clikit imports only pkg/, clikit and internal/runtime/ (it knows no component)"
		} else {
			components[c] = true
			allowed = []string{"pkg", "internal/cli/clikit", "internal/" + c + "/client", "internal/" + c + "/wire"}
			rule = fmt.Sprintf("internal/cli/%s imports only pkg/, internal/cli/clikit and %s's client packages (internal/%s/client, internal/%s/wire)", c, c, c, c)
		}
		for _, imp := range p.Imports {
			rel, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			okImport := false
			for _, a := range allowed {
				okImport = okImport || under(rel, a)
			}
			if !okImport {
				bad = append(bad, fmt.Sprintf("%s imports %s: %s", p.ImportPath, imp, rule))
			}
		}
	}
	return bad, components
}

// TestComponentCLIsImportOnlyClients: a component's verbs reach its members
// through the SDK or the component's client packages, never through the
// member's own code, so the CLI of one component can change without
// touching another and a new component's CLI is one package of its own.
func TestComponentCLIsImportOnlyClients(t *testing.T) {
	bad, components := cliViolations(listPackages(t, cliRoot+"..."))
	for _, b := range bad {
		t.Error(b)
	}
	// The rule must have had something to check.
	for _, c := range []string{"chainfire", "flaredb", "iam"} {
		if !components[c] {
			t.Errorf("no package internal/cli/%s was checked", c)
		}
	}
}

// TestCLIRuleCatchesViolations: the check above reports a component CLI
// that imports its member or another internal package, and clikit
// importing a component, and accepts what is allowed.
func TestCLIRuleCatchesViolations(t *testing.T) {
	pkgs := []pkgInfo{
		{ImportPath: cliRoot + "flaredb", Imports: []string{
			"fmt", module + "pkg/api", module + "internal/cli/clikit", module + "internal/cli/clikit/manifest",
			module + "internal/flaredb/client", module + "internal/flaredb/wire",
			module + "internal/flaredb",        // the member itself
			module + "internal/runtime/config", // another internal package
			module + "internal/chainfire/client",
		}},
		{ImportPath: cliRoot + "clikit", Imports: []string{module + "internal/runtime/config", module + "internal/iam"}},
	}
	bad, _ := cliViolations(pkgs)
	want := []string{"imports " + module + "internal/flaredb:", "imports " + module + "internal/runtime/config:",
		"imports " + module + "internal/chainfire/client:", "clikit imports " + module + "internal/iam:"}
	if len(bad) != len(want) {
		t.Fatalf("got %d violations, want %d:\n%s", len(bad), len(want), strings.Join(bad, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(bad[i], w) {
			t.Errorf("violation %d = %q, want it to mention %q", i, bad[i], w)
		}
	}
}
