package rules

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/node"
)

// TestRuntimeImportsNoComponent: the shared runtime (internal/runtime/...)
// is the ground floor; it must not depend on any component, directly or
// through other packages, or every reader of a config would link every
// component's dependencies.
func TestRuntimeImportsNoComponent(t *testing.T) {
	for _, p := range listPackages(t, module+"internal/runtime/...") {
		for _, d := range p.Deps {
			if c := componentOf(d); c != "" {
				t.Errorf("%s depends on %s (component %s): internal/runtime must not import components", p.ImportPath, d, c)
			}
		}
	}
}

// componentOf returns the component an import path belongs to, or "".
func componentOf(path string) string {
	rest, ok := strings.CutPrefix(path, module+"internal/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	switch first {
	case "runtime", "cli", "node", "testkit":
		return ""
	}
	return first
}

// TestEveryPackageHasADocComment: each package says what it owns.
func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t, module+"...") {
		doc := p.Doc
		if doc == "" && len(p.GoFiles) == 0 {
			// A package of tests only: its doc comment is in a test file.
			doc = testPackageDoc(t, p)
		}
		if strings.TrimSpace(doc) == "" {
			t.Errorf("%s has no package doc comment: say what it owns and what it must not do", p.ImportPath)
		}
	}
}

func testPackageDoc(t *testing.T, p pkgInfo) string {
	fset := token.NewFileSet()
	for _, name := range append(append([]string{}, p.TestGoFiles...), p.XTestGoFiles...) {
		f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if f.Doc != nil {
			return f.Doc.Text()
		}
	}
	return ""
}

// TestEveryModuleIsComplete: every component in the node's module list has
// its config section documented, a CLI package, and a row in the
// architecture document.
func TestEveryModuleIsComplete(t *testing.T) {
	root := "../.."
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	configuration, architecture := read("docs/configuration.md"), read("docs/architecture.md")
	roles := node.KnownRoles()
	if len(roles) == 0 {
		t.Fatal("the module list is empty")
	}
	for _, role := range roles {
		if !strings.Contains(configuration, "### `"+role+"` section") {
			t.Errorf("module %s: docs/configuration.md has no generated table for its section", role)
		}
		// A host agent (role <c>-agent) belongs to component <c>: its
		// verbs and its row are the component's.
		comp := strings.TrimSuffix(role, "-agent")
		if fi, err := os.Stat(filepath.Join(root, "internal/cli", comp)); err != nil || !fi.IsDir() {
			t.Errorf("module %s: no CLI package internal/cli/%s", role, comp)
		}
		if !strings.Contains(architecture, "| "+comp+" |") {
			t.Errorf("module %s: docs/architecture.md has no row \"| %s |\" in its status table", role, comp)
		}
	}
}
