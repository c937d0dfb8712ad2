package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// outputFormat is the -o flag.
type outputFormat string

func parseOutput(s string) (outputFormat, error) {
	switch s {
	case "", "table":
		return "table", nil
	case "json", "yaml":
		return outputFormat(s), nil
	}
	return "", fmt.Errorf("-o %q is not supported (use table, json or yaml)", s)
}

// printData prints v as JSON or YAML.
func printData(w io.Writer, f outputFormat, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if f == "json" {
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	// Via a generic value so YAML shows the JSON field names.
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return err
	}
	return writeYAML(w, generic)
}

// writeYAML writes v as YAML with two-space indentation, as kubectl does.
func writeYAML(w io.Writer, v any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

// printObjects prints objects of one kind as a table, JSON or YAML.
func printObjects(w io.Writer, f outputFormat, info api.KindInfo, items []api.Object, revision int64, showProject bool) error {
	switch f {
	case "json", "yaml":
		return printData(w, f, api.List{Kind: info.Kind + "List", Items: items, Metadata: api.ListMeta{Revision: revision}})
	}
	if len(items) == 0 {
		fmt.Fprintf(w, "No %s found.\n", info.Collection)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	head := []string{}
	if showProject {
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
		if showProject {
			row = append(row, o.Metadata.Project)
		}
		row = append(row, o.Metadata.Name)
		for _, c := range info.Columns {
			row = append(row, columnValue(o, c.Path))
		}
		row = append(row, fmt.Sprint(o.Metadata.Revision), age(o.Metadata.CreatedAt))
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

// age renders a duration since t the way operators read it: 45s, 12m, 3h, 5d.
func age(t *time.Time) string {
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
