# Shell helpers shared by scripts/test.sh and scripts/demo.sh (sourced, not run).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Test helpers run on Debian's Python, where python3-aiosmtpd and friends live.
PY=/usr/bin/python3

say() { printf '\n== %s\n' "$*"; }

# ensure_build DIR [MESON_OPTION ...]: configures DIR once (or applies changed
# options), then builds what is out of date. Output only on failure.
ensure_build() {
	local dir=$1 out
	shift
	if [ -f "$ROOT/$dir/build.ninja" ]; then
		out=$(cd "$ROOT" && meson configure "$dir" "$@" 2>&1) || { echo "$out"; return 1; }
	else
		out=$(cd "$ROOT" && meson setup "$dir" "$@" 2>&1) || { echo "$out"; return 1; }
	fi
	out=$(ninja -C "$ROOT/$dir" 2>&1) || { echo "$out" | tail -60; return 1; }
}
