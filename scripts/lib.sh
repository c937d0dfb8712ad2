# Shared helpers for the scripts in this directory. Sourced, not run.

# go_ok reports whether the go on PATH is 1.26 or newer.
go_ok() {
	command -v go >/dev/null 2>&1 || return 1
	local v
	v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
	case "$v" in
	1.2[6-9]* | 1.[3-9]* | [2-9].*) return 0 ;;
	esac
	return 1
}

# need_go makes a Go 1.26+ toolchain available: the one on PATH (or in
# /usr/local/go), else the one this script installed earlier, else it
# installs the go.mod version from the Go module proxy (the
# golang.org/toolchain module, the way `go` itself fetches toolchains),
# verified against the checksum database (sum.golang.org, reached through
# the proxy), into $ULTRACLOUD_CACHE/go (default ~/.cache/ultracloud/go).
need_go() {
	# ULTRACLOUD_SYSTEM_GO="" hides /usr/local/go (the bootstrap test).
	local sys=${ULTRACLOUD_SYSTEM_GO-/usr/local/go}
	[ -n "$sys" ] && export PATH="$PATH:$sys/bin"
	go_ok && return 0
	local cache=${ULTRACLOUD_CACHE:-$HOME/.cache/ultracloud}
	local root=$cache/go
	if [ -x "$root/bin/go" ]; then
		export PATH="$root/bin:$PATH"
		go_ok && return 0
	fi
	local ver arch proxy v zip want got
	ver=$(awk '$1 == "go" {print $2; exit}' "$(dirname "${BASH_SOURCE[0]}")/../go.mod")
	case "$(uname -m)" in
	x86_64) arch=amd64 ;;
	aarch64) arch=arm64 ;;
	*) echo "error: no Go toolchain for $(uname -m); install Go 1.26+ and rerun" >&2; exit 1 ;;
	esac
	apt_need curl unzip coreutils ca-certificates
	proxy=${GOPROXY:-https://proxy.golang.org}
	proxy=${proxy%%,*}
	[ "$proxy" = direct ] || [ "$proxy" = off ] && proxy=https://proxy.golang.org
	v=v0.0.1-go$ver.linux-$arch
	zip=$cache/go-$v.zip
	mkdir -p "$cache"
	echo "==> installing Go $ver from $proxy (golang.org/toolchain@$v) into $root"
	curl -fsSL --retry 3 -o "$zip.part" "$proxy/golang.org/toolchain/@v/$v.zip"
	want=$(curl -fsSL --retry 3 "$proxy/sumdb/sum.golang.org/lookup/golang.org/toolchain@$v" | awk -v v="$v" '$1 == "golang.org/toolchain" && $2 == v {print $3}')
	rm -rf "$root.new" && mkdir -p "$root.new"
	unzip -q "$zip.part" -d "$root.new"
	got=$(go_tree_hash "$root.new")
	rm -f "$zip.part"
	if [ -z "$want" ] || [ "$got" != "$want" ]; then
		rm -rf "$root.new"
		echo "error: the Go toolchain zip does not match the checksum database (got ${got:-nothing}, want ${want:-no entry}); not installed" >&2
		exit 1
	fi
	rm -rf "$root" && mv "$root.new/golang.org/toolchain@$v" "$root" && rm -rf "$root.new"
	export PATH="$root/bin:$PATH"
	go_ok || { echo "error: the installed Go in $root does not run" >&2; exit 1; }
}

# go_tree_hash prints the h1: hash of an unpacked module zip (Go's
# dirhash.Hash1: the SHA-256 of the sorted lines "<sha256 of file>  <name>",
# names as in the zip, in base64), the hash the checksum database holds.
go_tree_hash() {
	(cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs -d '\n' sha256sum) |
		sha256sum | cut -d' ' -f1 | tr a-f A-F | basenc --base16 -d | base64 | sed 's/^/h1:/'
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

# bench_vs_etcd BENCHMARK SYSTEM runs BENCHMARK (test/bench, one of the
# comparisons with Debian's standalone etcd) in $ROUNDS interleaved rounds of
# $BENCHTIME operations per row and prints its markdown table: SYSTEM's and
# etcd's throughput, p50, p99 and server CPU per op, with the SYSTEM/etcd
# ratios, averaged over the rounds.
bench_vs_etcd() {
	local bench=$1 sys=$2 raw etcdv
	raw=$(mktemp)
	echo "==> BENCH_ROUNDS=$ROUNDS go test ./test/bench -run '^\$' -bench '$bench' -benchtime=$BENCHTIME" >&2
	if ! BENCH_ROUNDS=$ROUNDS go test ./test/bench -run '^$' -bench "$bench" -benchtime="$BENCHTIME" -timeout 30m | tee "$raw" >&2; then
		rm -f "$raw"
		return 1
	fi
	etcdv=$(/usr/bin/etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}')
	echo
	echo "$bench, $(date -u +%Y-%m-%d), $(bench_commit), $(go env GOVERSION), etcd $etcdv, $(bench_machine), load average $(cut -d' ' -f1-3 /proc/loadavg) after the run, $BENCHTIME operations per row, mean of $ROUNDS round(s):"
	echo
	awk -v bench="$bench" -v sys="$sys" '
index($1, bench "/op=") == 1 {
	name = substr($1, length(bench) + 2)
	sub(/-[0-9]+$/, "", name)
	sub(/#[0-9]+$/, "", name)
	split(name, parts, "/")
	op = parts[1]; sub(/^op=/, "", op)
	cl = parts[2]; sub(/^clients=/, "", cl)
	s = parts[3]; sub(/^system=/, "", s)
	delete m
	for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
	key = op SUBSEP cl
	if (!(key in seen)) { seen[key] = 1; order[++n] = key }
	ops[key, s] += m["ops/s"]; p50[key, s] += m["p50-us"]; p99[key, s] += m["p99-us"]; cpu[key, s] += m["server-cpu-us/op"]; runs[key, s]++
}
function avg(a, k, s) { return runs[k, s] ? a[k, s] / runs[k, s] : 0 }
function ratio(x, y) { return y ? sprintf("%.2f", x / y) : "-" }
END {
	if (n == 0) { print "no " bench " results found" > "/dev/stderr"; exit 1 }
	printf "| op | clients | %s ops/s | etcd ops/s | ratio | %s p50 (µs) | etcd p50 (µs) | %s p99 (µs) | etcd p99 (µs) | p99 ratio | %s server CPU/op (µs) | etcd server CPU/op (µs) |\n", sys, sys, sys, sys
	print "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	for (i = 1; i <= n; i++) {
		k = order[i]; split(k, kk, SUBSEP)
		so = avg(ops, k, sys); eo = avg(ops, k, "etcd")
		s99 = avg(p99, k, sys); e99 = avg(p99, k, "etcd")
		printf "| %s | %s | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %.0f |\n", kk[1], kk[2], so, eo, ratio(so, eo), avg(p50, k, sys), avg(p50, k, "etcd"), s99, e99, ratio(s99, e99), avg(cpu, k, sys), avg(cpu, k, "etcd")
	}
}
' "$raw"
	local rc=$?
	rm -f "$raw"
	return $rc
}

# guest_assets unpacks, without installing them on this machine, the Debian
# packages guests are made of: the cloud kernel with its modules (a guest
# kernel; installing it would change what this machine boots) and
# cloud-init's Python modules (installing it would run cloud-init at this
# machine's next boot). They go under $ULTRACLOUD_CACHE (default
# ~/.cache/ultracloud), reused by later runs, and the tests find them
# through ULTRACLOUD_GUEST_KERNEL, ULTRACLOUD_GUEST_MODULES and
# ULTRACLOUD_CLOUDINIT_PYTHONPATH. Python libraries cloud-init imports are
# installed normally (libraries only).
guest_assets() {
	local cache=${ULTRACLOUD_CACHE:-$HOME/.cache/ultracloud}/debs
	mkdir -p "$cache"
	apt_need python3-yaml python3-jinja2 python3-jsonschema python3-configobj python3-requests \
		python3-jsonpatch python3-netifaces python3-oauthlib python3-serial
	local kpkg
	kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$kpkg" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	for pkg in "$kpkg" cloud-init; do
		if [ ! -f "$cache/$pkg.done" ]; then
			echo "==> unpacking $pkg into $cache (not installed)"
			rm -rf "$cache/$pkg" && mkdir -p "$cache/$pkg"
			(cd "$cache" && rm -f "${pkg}"_*.deb && apt-get download -qq -o APT::Sandbox::User=root "$pkg" && dpkg -x "${pkg}"_*.deb "$cache/$pkg" && rm -f "${pkg}"_*.deb)
			touch "$cache/$pkg.done"
		fi
	done
	ULTRACLOUD_GUEST_KERNEL=$(ls "$cache/$kpkg"/boot/vmlinuz-* | head -1)
	ULTRACLOUD_GUEST_MODULES=$(ls -d "$cache/$kpkg"/lib/modules/* | head -1)
	ULTRACLOUD_CLOUDINIT_PYTHONPATH="$cache/cloud-init/usr/lib/python3/dist-packages"
	export ULTRACLOUD_GUEST_KERNEL ULTRACLOUD_GUEST_MODULES ULTRACLOUD_CLOUDINIT_PYTHONPATH
}
