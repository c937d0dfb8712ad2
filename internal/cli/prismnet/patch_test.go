package prismnet

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// TestPatchSpecKeepsUnknownFields: a read-modify-write rewrites the fields
// the CLI knows (also clearing one that became empty) and keeps the fields
// of a newer server that it does not know.
func TestPatchSpecKeepsUnknownFields(t *testing.T) {
	raw := json.RawMessage(`{"network":"web","securityGroups":["a"],"owner":{"kind":"VM","name":"v"},"futureField":{"x":1}}`)
	out, err := patchSpec(raw, func(s *prismnetv1.PortSpec) error {
		s.SecurityGroups = nil
		s.Binding.Host = "w1"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["securityGroups"]; ok {
		t.Errorf("securityGroups was cleared but is still there: %s", out)
	}
	if string(got["futureField"]) != `{"x":1}` || string(got["network"]) != `"web"` || string(got["binding"]) != `{"host":"w1"}` {
		t.Errorf("patched spec %s", out)
	}
	if string(got["owner"]) != `{"kind":"VM","name":"v"}` {
		t.Errorf("owner changed: %s", out)
	}

	boom := errors.New("boom")
	if _, err := patchSpec(raw, func(*prismnetv1.PortSpec) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("a failing change: %v", err)
	}
}
