package plasmavmc

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
)

// isTerminal reports whether w is a terminal (a live display fits there;
// anywhere else each update is a plain line).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// clearLine returns a terminal's cursor to the line's start and clears it.
const clearLine = "\r\033[K"

// uploadProgress counts the bytes of one part as the HTTP client reads
// them and shows how far it is. It draws from inside Read (the transport's
// goroutine), so it needs no goroutine of its own: on a terminal it
// redraws one line at most every redrawEvery; elsewhere it prints a line
// at each quarter. The lock is for done, which the command's goroutine
// calls while the transport may still hold the body (an early answer).
type uploadProgress struct {
	mu       sync.Mutex
	r        io.Reader
	w        io.Writer
	live     bool
	label    string
	total    int64
	sent     int64
	start    time.Time
	lastDraw time.Time
	quarter  int64 // the last quarter printed as a plain line
	now      func() time.Time
}

const redrawEvery = 100 * time.Millisecond

func newUploadProgress(r io.Reader, w io.Writer, live bool, label string, total int64) *uploadProgress {
	return &uploadProgress{r: r, w: w, live: live, label: label, total: total, now: time.Now}
}

// reset starts over (the request is sent again after a refused token).
func (p *uploadProgress) reset(r io.Reader) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.r, p.sent, p.quarter, p.start = r, 0, 0, time.Time{}
}

func (p *uploadProgress) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		p.start = p.now()
	}
	n, err := p.r.Read(b)
	p.sent += int64(n)
	now := p.now()
	switch {
	case p.live:
		if now.Sub(p.lastDraw) >= redrawEvery {
			p.lastDraw = now
			fmt.Fprintf(p.w, "%s%s", clearLine, p.line(now))
		}
	case p.total > 0:
		if q := p.sent * 4 / p.total; q > p.quarter && q < 4 {
			p.quarter = q
			fmt.Fprintln(p.w, p.line(now))
		}
	}
	return n, err
}

// line is "kernel: 12.0 MiB of 48.0 MiB (25%), 30.1 MiB/s".
func (p *uploadProgress) line(now time.Time) string {
	pct := 100
	if p.total > 0 {
		pct = int(p.sent * 100 / p.total)
	}
	return fmt.Sprintf("%s: %s of %s (%d%%), %s", p.label, clikit.HumanBytes(p.sent), clikit.HumanBytes(p.total), pct, rate(p.sent, now.Sub(p.start)))
}

// done ends the display with a summary line.
func (p *uploadProgress) done(digest string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	el := p.now().Sub(p.start)
	if p.live {
		fmt.Fprint(p.w, clearLine)
	}
	fmt.Fprintf(p.w, "%s: %s sent in %s (%s), sha256 %s\n", p.label, clikit.HumanBytes(p.sent), seconds(el), rate(p.sent, el), digest)
}

// rate shows bytes per second.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "- /s"
	}
	return clikit.HumanBytes(int64(float64(n)/d.Seconds())) + "/s"
}

// seconds shows an elapsed time to a tenth of a second.
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// phaseDisplay shows a VM's way through its phases: a line per change
// ("Scheduled after 0.4s: placed on w1"); on a terminal also a status line
// with the time passing, redrawn by tick.
type phaseDisplay struct {
	w     io.Writer
	live  bool
	name  string
	start time.Time
	now   func() time.Time
	phase string
	msg   string
	drawn bool
}

func newPhaseDisplay(w io.Writer, live bool, name string, start time.Time) *phaseDisplay {
	return &phaseDisplay{w: w, live: live, name: name, start: start, now: time.Now}
}

var spinner = []string{"|", "/", "-", "\\"}

// show records the VM's phase and message, printing a line if either
// changed.
func (d *phaseDisplay) show(phase, msg string) {
	if phase == d.phase && msg == d.msg {
		return
	}
	d.phase, d.msg = phase, msg
	d.clear()
	line := fmt.Sprintf("%s: %s after %s", d.name, clikit.Dash(phase), seconds(d.now().Sub(d.start)))
	if msg != "" {
		line += ": " + msg
	}
	fmt.Fprintln(d.w, line)
	d.tick()
}

// tick redraws the status line (a terminal only).
func (d *phaseDisplay) tick() {
	if !d.live {
		return
	}
	el := d.now().Sub(d.start)
	s := spinner[int(el/(250*time.Millisecond))%len(spinner)]
	line := fmt.Sprintf("%s %s %s %s", s, d.name, clikit.Dash(d.phase), seconds(el))
	if f, ok := d.w.(*os.File); ok {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 1 && len(line) >= w {
			line = line[:w-1]
		}
	}
	fmt.Fprint(d.w, clearLine+strings.TrimRight(line, " "))
	d.drawn = true
}

// clear removes the status line (a terminal only).
func (d *phaseDisplay) clear() {
	if d.live && d.drawn {
		fmt.Fprint(d.w, clearLine)
		d.drawn = false
	}
}
