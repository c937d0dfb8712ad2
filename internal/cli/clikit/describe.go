package clikit

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Desc writes a describe block: aligned "Key:  value" lines, and indented
// tables under a heading. Write errors are kept for Flush.
type Desc struct {
	w   io.Writer
	tw  *tabwriter.Writer
	err error
}

// NewDesc starts a describe block on w.
func NewDesc(w io.Writer) *Desc {
	return &Desc{w: w, tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

// KV writes one "Key:  value" line ("-" for an empty value).
func (d *Desc) KV(key, value string) {
	fmt.Fprintf(d.tw, "%s:\t%s\n", key, Dash(value))
}

// Table writes a heading and, indented, a table with head; without rows it
// is one KV line that says none.
func (d *Desc) Table(heading string, head []string, rows [][]string, none string) {
	if len(rows) == 0 {
		d.KV(heading, none)
		return
	}
	d.flushTW()
	fmt.Fprintf(d.w, "%s:\n", heading)
	tw := tabwriter.NewWriter(d.w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "  "+strings.Join(head, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = Dash(c)
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil && d.err == nil {
		d.err = err
	}
}

// flushTW ends a run of aligned KV lines (a table's lines are not aligned
// with them) and starts the next.
func (d *Desc) flushTW() {
	if err := d.tw.Flush(); err != nil && d.err == nil {
		d.err = err
	}
	d.tw = tabwriter.NewWriter(d.w, 0, 4, 2, ' ', 0)
}

// Flush writes what is pending and returns the first write error.
func (d *Desc) Flush() error {
	d.flushTW()
	return d.err
}

// TimeAgo shows a time and how long ago it was ("" for none).
func TimeAgo(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format("2006-01-02 15:04:05 MST"), Age(t))
}

// Dash shows an empty value as "-".
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// JoinOr joins values with ", ", or returns none.
func JoinOr(values []string, none string) string {
	if len(values) == 0 {
		return none
	}
	return strings.Join(values, ", ")
}
