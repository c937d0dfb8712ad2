package clikit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// RunWith checks -o before it connects, releases the connection after the
// call, and prints the call's result in the chosen format.
func TestRunWithOrder(t *testing.T) {
	type result struct {
		Name string `json:"name"`
	}
	var steps []string
	open := func(ctx context.Context) (string, context.Context, func(), error) {
		steps = append(steps, "open")
		return "conn", ctx, func() { steps = append(steps, "done") }, nil
	}
	call := func(_ context.Context, c string) (result, error) {
		steps = append(steps, "call "+c)
		return result{Name: "a"}, nil
	}
	table := Table(func(w io.Writer, r result) error {
		steps = append(steps, "table")
		_, err := io.WriteString(w, "name "+r.Name+"\n")
		return err
	})
	run := func(output string) (string, error) {
		steps = nil
		var out bytes.Buffer
		cmd := &cobra.Command{}
		cmd.SetOut(&out)
		cmd.SetContext(context.Background())
		err := RunWith(cmd, output, open, call, table)
		return out.String(), err
	}

	if _, err := run("xml"); err == nil || !strings.Contains(err.Error(), `-o "xml"`) || len(steps) != 0 {
		t.Fatalf("-o xml: err %v, steps %v (want an error before connecting)", err, steps)
	}
	out, err := run("")
	if err != nil || out != "name a\n" || strings.Join(steps, ",") != "open,call conn,table,done" {
		t.Fatalf("table: %q %v, steps %v", out, err, steps)
	}
	if out, err := run("json"); err != nil || out != "{\n  \"name\": \"a\"\n}\n" {
		t.Fatalf("json: %q %v", out, err)
	}
	if out, err := run("yaml"); err != nil || out != "name: a\n" {
		t.Fatalf("yaml: %q %v", out, err)
	}

	// A failed call prints nothing and still releases the connection.
	boom := errors.New("boom")
	steps = nil
	cmd := &cobra.Command{}
	var buf bytes.Buffer
	cmd.SetOut(&buf)
	cmd.SetContext(context.Background())
	err = RunWith(cmd, "table", open, func(context.Context, string) (result, error) { return result{}, boom }, table)
	if !errors.Is(err, boom) || buf.Len() != 0 || strings.Join(steps, ",") != "open,done" {
		t.Fatalf("failed call: %v, output %q, steps %v", err, buf.String(), steps)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
