// Package rules holds tests that enforce the project's structural rules, so
// they hold by construction rather than by review.
package rules

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

type pkgInfo struct {
	ImportPath   string
	Doc          string
	Dir          string
	GoFiles      []string
	TestGoFiles  []string
	XTestGoFiles []string
	Imports      []string
	Deps         []string
}

func listPackages(t *testing.T, pattern string) []pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", pattern).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkgInfo
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

const module = "github.com/ultracloud/ultracloud/"

// TestSDKNeverImportsInternal: the public SDK must build without any
// internal package, directly or through dependencies.
func TestSDKNeverImportsInternal(t *testing.T) {
	for _, p := range listPackages(t, "github.com/ultracloud/ultracloud/pkg/...") {
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"internal/") {
				t.Errorf("%s depends on %s: pkg/ must not import internal/", p.ImportPath, d)
			}
		}
	}
}

// TestComponentsDoNotImportEachOther: components talk through the SDK or
// explicit interfaces, never by importing another component's package.
// Only the process wiring (internal/node) and the CLI know every component.
func TestComponentsDoNotImportEachOther(t *testing.T) {
	components := []string{"chainfire", "flaredb", "iam", "prismnet", "flashdns", "fiberlb", "plasmavmc", "coronafs",
		"lightningstor", "k8shost", "apigateway", "nightlight", "creditservice", "deployer", "fleetscheduler", "nodeagent", "nixagent"}
	owner := func(path string) string {
		rest, ok := strings.CutPrefix(path, module+"internal/")
		if !ok {
			return ""
		}
		first, _, _ := strings.Cut(rest, "/")
		for _, c := range components {
			if first == c {
				return c
			}
		}
		return ""
	}
	for _, p := range listPackages(t, "github.com/ultracloud/ultracloud/internal/...") {
		self := owner(p.ImportPath)
		if self == "" {
			continue
		}
		for _, imp := range p.Imports {
			if o := owner(imp); o != "" && o != self {
				t.Errorf("%s imports %s: components must not import each other", p.ImportPath, imp)
			}
		}
	}
}
