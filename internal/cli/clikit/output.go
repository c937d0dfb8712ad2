package clikit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// Format is the value of the -o flag.
type Format string

// The output formats.
const (
	FormatTable Format = "table"
	FormatJSON  Format = "json"
	FormatYAML  Format = "yaml"
)

// ParseOutput checks a -o value; empty means table.
func ParseOutput(s string) (Format, error) {
	switch s {
	case "", "table":
		return FormatTable, nil
	case "json", "yaml":
		return Format(s), nil
	}
	return "", fmt.Errorf("-o %q is not supported (use table, json or yaml)", s)
}

// OutputFlag adds the -o flag to cmd, stored in out.
func OutputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "table", "output format: table, json or yaml")
}

// PrintData prints v as JSON or YAML.
func PrintData(w io.Writer, f Format, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if f == FormatJSON {
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	// Via a generic value so YAML shows the JSON field names.
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return err
	}
	return WriteYAML(w, generic)
}

// WriteYAML writes v as YAML with two-space indentation, as kubectl does.
func WriteYAML(w io.Writer, v any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

// Objects are objects of one kind as a list verb prints them.
type Objects struct {
	Kind  api.KindInfo
	Items []api.Object
	// Revision is the list's revision (shown in JSON and YAML).
	Revision int64
	// ShowProject adds a PROJECT column (a list across projects).
	ShowProject bool
}

// PrintObjects prints objects of one kind as a table, or as an api.List in
// JSON or YAML.
func PrintObjects(w io.Writer, f Format, l Objects) error {
	info, items := l.Kind, l.Items
	switch f {
	case FormatJSON, FormatYAML:
		return PrintData(w, f, api.List{Kind: info.Kind + "List", Items: items, Metadata: api.ListMeta{Revision: l.Revision}})
	}
	if len(items) == 0 {
		fmt.Fprintf(w, "No %s found.\n", info.Collection)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	head := []string{}
	if l.ShowProject {
		head = append(head, "PROJECT")
	}
	head = append(head, "NAME")
	for _, c := range info.Columns {
		head = append(head, c.Name)
	}
	head = append(head, "REVISION", "AGE")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, o := range items {
		row := []string{}
		if l.ShowProject {
			row = append(row, o.Metadata.Project)
		}
		row = append(row, o.Metadata.Name)
		for _, c := range info.Columns {
			row = append(row, columnValue(o, c.Path))
		}
		row = append(row, fmt.Sprint(o.Metadata.Revision), Age(o.Metadata.CreatedAt))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// columnValue reads a dotted path ("spec.displayName") from an object.
func columnValue(o api.Object, path string) string {
	b, err := json.Marshal(o)
	if err != nil {
		return ""
	}
	var cur any
	if json.Unmarshal(b, &cur) != nil {
		return ""
	}
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[part]
	}
	switch v := cur.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Age renders a duration since t the way operators read it: 45s, 12m, 3h, 5d.
func Age(t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := time.Since(*t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// HumanBytes renders a size as operators read it.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
