package apiserver

import (
	"net/http"
	"regexp"
	"sort"
	"strings"
)

// wildcard matches a path parameter of an OpenAPI path.
var wildcard = regexp.MustCompile(`\{[^/}]+\}`)

// CheckRoutes compares route patterns mounted on a mux (http.ServeMux
// syntax, "METHOD /path") with the operations of an OpenAPI document (the
// value of OpenAPI, or /openapi.json decoded into a map). undocumented are
// the patterns no documented operation reaches; unserved are the
// operations ("METHOD /path") no pattern serves. Tests use it to keep
// /openapi.json complete.
func CheckRoutes(doc map[string]any, patterns []string) (undocumented, unserved []string) {
	mux := http.NewServeMux()
	seen := map[string]bool{}
	for _, p := range patterns {
		if !seen[p] {
			seen[p] = true
			mux.Handle(p, http.NotFoundHandler())
		}
	}
	reached := map[string]bool{}
	paths, _ := doc["paths"].(map[string]any)
	for path, item := range paths {
		ops, _ := item.(map[string]any)
		for method := range ops {
			m := strings.ToUpper(method)
			// Any value fits a wildcard; "x" is a valid name and project.
			req, err := http.NewRequest(m, "http://api"+wildcard.ReplaceAllString(path, "x"), nil)
			if err != nil {
				unserved = append(unserved, m+" "+path)
				continue
			}
			if _, pattern := mux.Handler(req); pattern != "" {
				reached[pattern] = true
			} else {
				unserved = append(unserved, m+" "+path)
			}
		}
	}
	for p := range seen {
		if !reached[p] {
			undocumented = append(undocumented, p)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unserved)
	return undocumented, unserved
}
