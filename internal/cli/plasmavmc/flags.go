package plasmavmc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// The flag parsers check syntax only and name the flag, what they want
// and an example; whether a value makes sense (within the limits, an image
// that exists) is the server's to say.

// parseMemory reads an amount of memory as MiB: 512Mi, 2Gi, 1.5Gi, 512M,
// 2G, 2GiB, or a plain number of MiB.
func parseMemory(flag, s string) (int, error) {
	bad := fmt.Errorf("%s: %q is not an amount of memory such as 512Mi, 2Gi or 1024 (MiB)", flag, s)
	t := strings.TrimSpace(s)
	num, unit := t, ""
	if i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }); i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, bad
	}
	switch unit {
	case "", "m", "mi", "mib":
	case "g", "gi", "gib":
		f *= 1024
	case "t", "ti", "tib":
		f *= 1024 * 1024
	default:
		return 0, bad
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("%s: %q is not a whole number of MiB", flag, s)
	}
	if f < 1 || f > math.MaxInt32 {
		return 0, fmt.Errorf("%s: %q is outside 1 MiB to 2 PiB", flag, s)
	}
	return int(f), nil
}

// isKeyText reports whether s looks like an OpenSSH public key itself
// rather than a file name.
func isKeyText(s string) bool {
	for _, p := range []string{"ssh-", "ecdsa-", "sk-"} {
		if strings.HasPrefix(s, p) && strings.ContainsAny(s, " \t") {
			return true
		}
	}
	return false
}

// checkKey checks that key is one OpenSSH public key line.
func checkKey(flag, from, key string) error {
	fields := strings.Fields(key)
	if len(fields) < 2 || !(strings.HasPrefix(fields[0], "ssh-") || strings.HasPrefix(fields[0], "ecdsa-") || strings.HasPrefix(fields[0], "sk-")) {
		short := key
		if len(short) > 40 {
			short = short[:40] + "..."
		}
		return fmt.Errorf("%s: %s: %q is not an OpenSSH public key (want \"ssh-ed25519 AAAA... comment\", e.g. ~/.ssh/id_ed25519.pub)", flag, from, short)
	}
	return nil
}

// readKeys reads the --ssh-key values: a key itself, or a file of keys one
// a line (as authorized_keys, comments and blank lines skipped). A
// private key file given by mistake is named as such, never sent.
func readKeys(flag string, values []string) ([]string, error) {
	var keys []string
	for _, v := range values {
		if isKeyText(v) {
			k := strings.TrimSpace(v)
			if err := checkKey(flag, "the key given", k); err != nil {
				return nil, err
			}
			keys = append(keys, k)
			continue
		}
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is neither a public key (\"ssh-ed25519 AAAA...\") nor a readable file: %w", flag, v, err)
		}
		if strings.Contains(string(b), "PRIVATE KEY") {
			return nil, fmt.Errorf("%s: %s is a private key: give the public one (%s.pub)", flag, v, v)
		}
		n := 0
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := checkKey(flag, v, line); err != nil {
				return nil, err
			}
			keys = append(keys, line)
			n++
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", flag, v, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: %s holds no public key", flag, v)
		}
	}
	return keys, nil
}

// maxUserDataRead bounds what --user-data reads; the server's limit is
// lower and its refusal names it.
const maxUserDataRead = 1 << 20

// readUserData reads --user-data: a file, or stdin for "-".
func readUserData(flag, v string, stdin io.Reader) (string, error) {
	var r io.Reader
	what := v
	if v == "-" {
		r, what = stdin, "stdin"
	} else {
		f, err := os.Open(v)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxUserDataRead+1))
	if err != nil {
		return "", fmt.Errorf("%s: reading %s: %w", flag, what, err)
	}
	if len(b) > maxUserDataRead {
		return "", fmt.Errorf("%s: %s is larger than 1 MiB; user data is at most 64 KiB", flag, what)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("%s: %s is empty", flag, what)
	}
	return string(b), nil
}

// nicFlags collect --network, --port and --sg in the order given: --sg
// belongs to the --network before it, so `--network a --sg web --network
// b` gives a's port the group web and b's none. pflag calls Set in
// command-line order, which is what makes the shared state work.
type nicFlags struct {
	nics []plasmavmcv1.NIC
	err  error // the first misplaced --sg
}

func (n *nicFlags) fail(err error) {
	if n.err == nil {
		n.err = err
	}
}

// nicValue is one of the three flags over the shared state.
type nicValue struct {
	n    *nicFlags
	flag string
}

func (v nicValue) String() string { return "" }
func (v nicValue) Type() string {
	switch v.flag {
	case "sg":
		return "GROUP"
	case "port":
		return "PORT"
	}
	return "NETWORK"
}

func (v nicValue) Set(s string) error {
	if s == "" {
		return fmt.Errorf("--%s needs a name", v.flag)
	}
	switch v.flag {
	case "network":
		v.n.nics = append(v.n.nics, plasmavmcv1.NIC{Network: s})
	case "port":
		v.n.nics = append(v.n.nics, plasmavmcv1.NIC{Port: s})
	case "sg":
		if len(v.n.nics) == 0 {
			v.n.fail(errors.New("--sg applies to the --network before it: put it after that --network (e.g. --network web --sg ssh)"))
			return nil
		}
		last := &v.n.nics[len(v.n.nics)-1]
		if last.Port != "" {
			v.n.fail(fmt.Errorf("--sg %s follows --port %s: an existing port keeps its own security groups (ultracloud secgroup, port set --sg)", s, last.Port))
			return nil
		}
		last.SecurityGroups = append(last.SecurityGroups, s)
	}
	return nil
}
