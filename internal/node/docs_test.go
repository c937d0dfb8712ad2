package node

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the generated tables of docs/configuration.md")

const (
	repoRoot   = "../.."
	modulePath = "github.com/ultracloud/ultracloud/"
	configDoc  = "docs/configuration.md"
	beginMark  = "<!-- BEGIN GENERATED FIELD TABLES: go test ./internal/node -run TestConfigurationDoc -update-docs -->"
	endMark    = "<!-- END GENERATED FIELD TABLES -->"
)

// TestConfigurationDocIsCurrent: the field tables of
// docs/configuration.md are generated from the field comments of the core
// and of every module's section; a stale file fails (rerun with
// -update-docs).
func TestConfigurationDocIsCurrent(t *testing.T) {
	path := filepath.Join(repoRoot, configDoc)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	begin, end := strings.Index(doc, beginMark), strings.Index(doc, endMark)
	if begin < 0 || end < begin {
		t.Fatalf("%s lacks the markers %q and %q", configDoc, beginMark, endMark)
	}
	tables := renderFieldTables(t)
	want := doc[:begin+len(beginMark)] + "\n" + tables + doc[end:]
	if want == doc {
		return
	}
	if *updateDocs {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is stale: run go test ./internal/node -run TestConfigurationDoc -update-docs", configDoc)
}

// renderFieldTables renders one table for the core fields and one per
// module section, from the Go field comments.
func renderFieldTables(t *testing.T) string {
	comments := fieldComments{t: t, pkgs: map[string]map[string]map[string]string{}}
	flags := map[string]string{}
	for _, f := range Flags() {
		flags[f.Field] = "`--" + f.Name + "`"
	}
	sections := map[string]bool{}
	for _, m := range modules() {
		sections[m.role] = true
	}
	var core strings.Builder
	bySection := map[string]*strings.Builder{}
	for _, f := range config.Fields(&Config{}) {
		top, rest, nested := strings.Cut(f.Path, ".")
		w := &core
		name := f.Path
		if nested && sections[top] {
			if bySection[top] == nil {
				bySection[top] = &strings.Builder{}
			}
			w, name = bySection[top], rest
		}
		sf := f.Struct.Field(f.Index)
		env := "`" + config.EnvName(f.Path) + "`"
		if k := sf.Type.Kind(); k == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct {
			env = "file only"
		} else if k == reflect.Slice {
			env += " (comma list)"
		}
		flagName := flags[f.Path]
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", name, env, flagName, comments.of(f.Struct, sf.Name))
	}
	var out strings.Builder
	header := "| field | env | flag | meaning |\n|---|---|---|---|\n"
	out.WriteString("### Core fields\n\n" + header + core.String())
	for _, m := range modules() {
		if w := bySection[m.role]; w != nil {
			fmt.Fprintf(&out, "\n### `%s` section (%s)\n\n%s%s", m.role, sectionNote(m), header, w.String())
		}
	}
	return out.String()
}

func sectionNote(m module) string {
	if m.validateWithoutRole {
		return "role `" + m.role + "`; also read by nodes that reach it as clients"
	}
	return "role `" + m.role + "`"
}

// fieldComments reads doc comments of struct fields from the source of
// the package that declares each struct: package -> type -> field -> text.
type fieldComments struct {
	t    *testing.T
	pkgs map[string]map[string]map[string]string
}

func (c fieldComments) of(st reflect.Type, field string) string {
	pkg := st.PkgPath()
	if _, ok := c.pkgs[pkg]; !ok {
		c.pkgs[pkg] = c.parse(pkg)
	}
	text := c.pkgs[pkg][st.Name()][field]
	if text == "" && st != reflect.TypeFor[time.Duration]() {
		c.t.Errorf("%s.%s.%s has no doc comment: every node.yaml field is documented by its comment", pkg, st.Name(), field)
	}
	return text
}

func (c fieldComments) parse(pkg string) map[string]map[string]string {
	rel, ok := strings.CutPrefix(pkg, modulePath)
	if !ok {
		c.t.Fatalf("config type from outside the module: %s", pkg)
	}
	fset := token.NewFileSet()
	dir := filepath.Join(repoRoot, rel)
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.ParseComments)
		if err != nil {
			c.t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			s, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			fields := map[string]string{}
			for _, fl := range s.Fields.List {
				// A comment above a group of fields declared together
				// documents each of them.
				text := strings.Join(strings.Fields(fl.Doc.Text()), " ")
				for _, n := range fl.Names {
					fields[n.Name] = strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(text)
				}
			}
			out[ts.Name.Name] = fields
			return true
		})
	}
	return out
}
