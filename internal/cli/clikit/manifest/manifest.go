// Package manifest reads the resource files of `ultracloud apply -f` and
// `delete -f`: YAML or JSON, one or more "---"-separated documents, each a
// resource (api.Object) with a kind and a name.
//
// It owns only the parsing. It must stay small (pkg/api and yaml, nothing
// else) because it is fuzzed, and the fuzzer instruments everything the
// test binary links.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// maxStdin bounds a manifest read from stdin.
const maxStdin = 64 << 20

// Read parses a YAML or JSON file (or "-" for stdin) holding one or more
// resources ("---"-separated YAML documents).
func Read(path string, stdin io.Reader) ([]api.Object, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, maxStdin))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []api.Object
	for i := 1; ; i++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if doc == nil {
			continue
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w (YAML that has no JSON form, such as non-string keys)", path, i, err)
		}
		jd := json.NewDecoder(bytes.NewReader(b))
		jd.DisallowUnknownFields()
		var o api.Object
		if err := jd.Decode(&o); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if o.Kind == "" {
			return nil, fmt.Errorf("%s: document %d: missing kind (e.g. kind: Project)", path, i)
		}
		if o.Metadata.Name == "" {
			return nil, fmt.Errorf("%s: document %d: missing metadata.name", path, i)
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no resources", path)
	}
	return out, nil
}
