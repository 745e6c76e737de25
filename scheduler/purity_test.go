package scheduler_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The scheduler must stay pure (see the package comment): its non-test
// files import only these packages and never read the clock or a global
// random source.
func TestPackageStaysPure(t *testing.T) {
	allowed := map[string]bool{
		"cmp": true, "errors": true, "fmt": true, "math": true, "math/bits": true,
		"slices": true, "strconv": true, "strings": true, "time": true,
	}
	forbidden := map[string]bool{"time.Now": true, "time.Since": true, "time.Until": true,
		"time.Sleep": true, "time.After": true, "time.Tick": true, "time.NewTimer": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %q; the scheduler may only use %v", name, path, allowed)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && forbidden[id.Name+"."+sel.Sel.Name] {
					t.Errorf("%s: %s reads the clock; time must be a parameter", fset.Position(sel.Pos()), id.Name+"."+sel.Sel.Name)
				}
			}
			return true
		})
	}
}
