# Shared helpers for the scripts in this directory. Sourced, not run.

# need_go checks that a recent enough Go toolchain is on PATH.
need_go() {
	export PATH="$PATH:/usr/local/go/bin"
	if ! command -v go >/dev/null 2>&1; then
		echo "error: Go is not installed. Install Go 1.26 or newer from https://go.dev/dl/ into /usr/local/go, then rerun." >&2
		exit 1
	fi
	local v
	v=$(go env GOVERSION | sed 's/^go//')
	case "$v" in
	1.2[6-9]* | 1.[3-9]* | [2-9].*) ;;
	*) echo "error: Go $v is too old; UltraCloud needs Go 1.26 or newer." >&2; exit 1 ;;
	esac
}

# apt_need installs the given Debian packages if any is missing.
apt_need() {
	local missing=()
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "error: packages ${missing[*]} are missing; run as root or: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "==> installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# bench_commit prints "commit <short hash>" (+changes when the tree differs),
# for the header line of a benchmark script's table.
bench_commit() {
	local commit dirty
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+changes" || true)
	echo "commit $commit$dirty"
}

# bench_machine prints the CPUs and the file system the data lives on.
bench_machine() {
	local cpu fs
	cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)
	fs=$(df -PT "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR==2 {print $2}' || true)
	echo "$(nproc) CPUs (${cpu:-unknown CPU}), data on ${fs:-unknown} at ${TMPDIR:-/tmp}"
}
