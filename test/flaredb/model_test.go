//go:build linux

package flaredb_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability model: a register per key (partitioned by key, which
// is sound because operations touch one key each) with get, put and
// compare-and-swap. A key's state is its value, "" when it does not exist
// (the workload never writes empty values).
//
// Writes whose outcome is unknown (the client lost the connection or timed
// out after sending) may or may not have been applied. They are given a
// return time after every other operation, so the checker may place them
// anywhere after their call: placed before an operation that observes
// them, they took effect; placed at the very end, nobody saw them, which
// is indistinguishable from never having been applied. Their step accepts
// every state. Reads that failed and writes that definitely did not apply
// have no effect and are left out.

type linInput struct {
	Op    string // get, put, cas
	Key   string
	Value string // put/cas
	Old   string // cas
}

type linOutputValue struct {
	Unknown bool   // the write may or may not have applied
	Found   bool   // get
	Value   string // get
	OK      bool   // cas
}

var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(linInput), output.(linOutputValue)
		switch in.Op {
		case "get":
			if out.Found {
				return s != "" && out.Value == s, s
			}
			return s == "", s
		case "put":
			return true, in.Value
		case "cas":
			match := s == in.Old
			if !out.Unknown && out.OK != match {
				return false, s
			}
			if match {
				return true, in.Value
			}
			return true, s
		}
		return false, s
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutputValue)
		res := ""
		switch {
		case out.Unknown:
			res = "?"
		case in.Op == "get" && out.Found:
			res = out.Value
		case in.Op == "get":
			res = "missing"
		case in.Op == "cas":
			res = fmt.Sprint(out.OK)
		default:
			res = "ok"
		}
		switch in.Op {
		case "get":
			return fmt.Sprintf("get(%s) -> %s", in.Key, res)
		case "put":
			return fmt.Sprintf("put(%s, %s) -> %s", in.Key, in.Value, res)
		default:
			old := in.Old
			if old == "" {
				old = "missing"
			}
			return fmt.Sprintf("cas(%s, %s -> %s) -> %s", in.Key, old, in.Value, res)
		}
	},
	DescribeState: func(state any) string {
		if state.(string) == "" {
			return "missing"
		}
		return state.(string)
	},
}

// linOperations turns a worker's records into porcupine operations:
// failed operations are dropped, unknown writes end after everything else.
// It also returns how many of each outcome it saw.
func linOperations(records []linRecord) (ops []porcupine.Operation, counts map[string]int) {
	counts = map[string]int{}
	var end int64
	for _, r := range records {
		end = max(end, r.Return)
	}
	for _, r := range records {
		counts[r.Op+"/"+r.Outcome]++
		if r.Outcome == "failed" {
			continue
		}
		op := porcupine.Operation{
			ClientId: r.Client,
			Input:    linInput{Op: r.Op, Key: r.Key, Value: r.Value, Old: r.Old},
			Call:     r.Call,
			Return:   r.Return,
			Output:   linOutputValue{Found: r.Found, Value: r.Got, OK: r.OK},
		}
		if r.Outcome == "unknown" {
			op.Output = linOutputValue{Unknown: true}
			op.Return = end + 1
		}
		ops = append(ops, op)
	}
	return ops, counts
}

// checkLinearizable checks ops and fails t on a violation, or when the
// checker runs out of time (it then proved nothing), writing porcupine's
// HTML visualisation to a file that outlives the test.
func checkLinearizable(t *testing.T, ops []porcupine.Operation, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, timeout)
	t.Logf("porcupine: %s for %d operations in %s", res, len(ops), time.Since(start).Round(time.Millisecond))
	if res == porcupine.Ok {
		return res
	}
	dir, err := os.MkdirTemp("", "flaredb-linearizability-")
	if err != nil {
		t.Errorf("keeping the visualisation: %v", err)
		return res
	}
	path := filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(linModel, info, path); err != nil {
		t.Errorf("writing the visualisation: %v", err)
	} else {
		t.Logf("porcupine visualisation: %s", path)
	}
	return res
}

// op builds a completed operation for the model tests.
func op(client int, call, ret int64, in linInput, out linOutputValue) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Return: ret, Output: out}
}

// TestModel checks the checker itself, without a cluster: it must accept
// linearizable histories, including ones with writes of unknown outcome,
// and reject the anomalies the cluster test is there to catch.
func TestModel(t *testing.T) {
	put := func(k, v string) linInput { return linInput{Op: "put", Key: k, Value: v} }
	get := func(k string) linInput { return linInput{Op: "get", Key: k} }
	cas := func(k, old, v string) linInput { return linInput{Op: "cas", Key: k, Old: old, Value: v} }
	ok := linOutputValue{}
	unknown := linOutputValue{Unknown: true}
	val := func(v string) linOutputValue { return linOutputValue{Found: true, Value: v} }
	missing := linOutputValue{}
	casRes := func(b bool) linOutputValue { return linOutputValue{OK: b} }
	const end = 1000

	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"sequential", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(1, 2, 3, get("x"), val("a")),
			op(0, 4, 5, cas("x", "a", "b"), casRes(true)), op(1, 6, 7, get("x"), val("b")),
		}, true},
		{"concurrent put, either read", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(0, 2, 10, put("x", "b"), ok),
			op(1, 3, 4, get("x"), val("b")), op(2, 5, 6, get("x"), val("b")),
		}, true},
		{"keys are independent", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(1, 2, 3, get("y"), missing),
		}, true},
		{"unknown put seen", []porcupine.Operation{
			op(0, 0, end, put("x", "a"), unknown), op(1, 5, 6, get("x"), val("a")),
		}, true},
		{"unknown put never seen", []porcupine.Operation{
			op(0, 0, end, put("x", "a"), unknown), op(1, 5, 6, get("x"), missing), op(1, 7, 8, get("x"), missing),
		}, true},
		{"unknown cas applied late", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(1, 2, end, cas("x", "a", "b"), unknown),
			op(2, 3, 4, get("x"), val("a")), op(2, 5, 6, get("x"), val("b")),
		}, true},

		{"lost write", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(1, 2, 3, get("x"), missing),
		}, false},
		{"stale read", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(0, 2, 3, put("x", "b"), ok), op(1, 4, 5, get("x"), val("a")),
		}, false},
		{"value never written", []porcupine.Operation{
			op(1, 4, 5, get("x"), val("z")),
		}, false},
		{"read goes back in time", []porcupine.Operation{
			op(0, 0, 10, put("x", "a"), ok), op(1, 1, 2, get("x"), val("a")), op(2, 3, 4, get("x"), missing),
		}, false},
		{"cas fails although it matches", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(1, 2, 3, cas("x", "a", "b"), casRes(false)),
		}, false},
		{"cas succeeds on a stale value", []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok), op(0, 2, 3, put("x", "b"), ok), op(1, 4, 5, cas("x", "a", "c"), casRes(true)),
		}, false},
		{"unknown put seen, then unseen", []porcupine.Operation{
			op(0, 0, end, put("x", "a"), unknown), op(1, 5, 6, get("x"), val("a")), op(1, 7, 8, get("x"), missing),
		}, false},
	} {
		res := porcupine.CheckOperationsTimeout(linModel, tc.ops, 10*time.Second)
		if (res == porcupine.Ok) != tc.want {
			t.Errorf("%s: porcupine says %s, want linearizable=%v", tc.name, res, tc.want)
		}
	}

	// linOperations must turn an unknown write into one that may take
	// effect at any time after its call.
	ops, _ := linOperations([]linRecord{
		{Client: 0, Op: "put", Key: "x", Value: "a", Call: 0, Return: 1, Outcome: "unknown"},
		{Client: 1, Op: "get", Key: "x", Call: 5, Return: 6, Outcome: "ok", Found: true, Got: "a"},
		{Client: 1, Op: "put", Key: "x", Value: "b", Call: 7, Return: 8, Outcome: "failed"},
		{Client: 1, Op: "get", Key: "x", Call: 9, Return: 10, Outcome: "ok", Found: true, Got: "a"},
	})
	if len(ops) != 3 || ops[0].Return != 11 {
		t.Fatalf("linOperations = %+v", ops)
	}
	if res := porcupine.CheckOperationsTimeout(linModel, ops, 10*time.Second); res != porcupine.Ok {
		t.Errorf("history with an unknown write seen late: %s", res)
	}
}
