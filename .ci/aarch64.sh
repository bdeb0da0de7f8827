#!/usr/bin/env bash
# aarch64 CI job: run edgernn's device-side tests on 64-bit Arm, under qemu-user emulation.
#
#   .ci/aarch64.sh               (as root; called by .ci/run)
#   .ci/aarch64.sh --setup-only  (only build/refresh the cached userland and venv)
#
# What it does
#   1. installs qemu-user-static, binfmt-support and debootstrap (apt) when missing, and makes sure the
#      kernel has a qemu-aarch64 binfmt handler (mounting binfmt_misc if needed);
#   2. builds an arm64 Debian userland with debootstrap into a cache directory OUTSIDE the checkout
#      (${EDGERNN_ARM_CACHE:-/var/cache/edgernn-arm64}); the Debian mirror and release come from this
#      machine's own apt configuration (override: EDGERNN_ARM_MIRROR, EDGERNN_ARM_SUITE);
#   3. creates a venv inside it with the core dependencies (numpy, numba, safetensors) + pytest, and
#      installs the package from the checkout (only changed files are copied in, so numba's on-disk
#      cache, kept in the cache directory too, stays valid between runs);
#   4. writes artifacts and their expected outputs on the host (x86-64) with the host's python
#      (${EDGERNN_HOST_PYTHON:-python3}, edgernn installed), then runs the aarch64 test selection in the
#      chroot: every cell type against the numpy reference, load/step/run/streams, int8, the x86-64
#      artifacts giving the same outputs, and (unless EDGERNN_ARM_AOT=0) aarch64 per-model AOT modules
#      (`edgernn aot MODEL.ernn` for tests/arm_cases.py's AOT_CASES, cached under /var/cache/edgernn/aot
#      in the userland, one directory per kernel version) giving the same outputs without the JIT.
#
# Later runs reuse the userland, the pip cache and numba's cache: they take seconds to a few minutes.
# Timings under emulation say nothing about a real board: this job never reports them as benchmarks.
# Exit status: 0 when every step and test passed, non-zero otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGERNN_ARM_CACHE:-/var/cache/edgernn-arm64}
ROOT=$CACHE/rootfs
HOST_PY=${EDGERNN_HOST_PYTHON:-python3}
# Debian packages of the userland (g++ too: numba.pycc checks for a C++ compiler). Adding one to an
# existing userland installs it with apt; bump "v1" to force a fresh debootstrap.
ROOTFS_PKGS="python3 python3-venv python3-dev gcc g++ libc6-dev ca-certificates"
ROOTFS_STAMP="v1"
VENV=/opt/edgernn-venv           # inside the chroot
SRC=/opt/edgernn-src             # inside the chroot
FIX=/opt/edgernn-fixtures        # inside the chroot
VENV_REQS='numpy>=1.24 numba>=0.68 safetensors>=0.4 pytest>=8 setuptools>=68'

T0=$(date +%s)
log() { printf '[aarch64 %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { printf '[aarch64] FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount); run it as root or with sudo"
[ "$(uname -m)" = x86_64 ] || log "host is $(uname -m), not x86_64: running anyway"

# ---------------------------------------------------------------- 1. tools and binfmt
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc (container without privileges?)"
fi
if ! grep -qs '^enabled' "$BINFMT/qemu-aarch64"; then
    log "registering the qemu-aarch64 binfmt handler"
    update-binfmts --enable qemu-aarch64 2>/dev/null || update-binfmts --import qemu-aarch64 || true
fi
grep -qs '^enabled' "$BINFMT/qemu-aarch64" || die "no qemu-aarch64 binfmt handler registered"
QEMU_INTERP=$(sed -n 's/^interpreter //p' "$BINFMT/qemu-aarch64")
QEMU_FLAGS=$(sed -n 's/^flags: //p' "$BINFMT/qemu-aarch64")
log "binfmt qemu-aarch64: $QEMU_INTERP (flags $QEMU_FLAGS)"

# ---------------------------------------------------------------- 2. the arm64 userland
apt_mirror() {  # prints "MIRROR SUITE" from this machine's apt configuration
    local suite=${EDGERNN_ARM_SUITE:-}
    if [ -z "$suite" ]; then
        suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    fi
    [ -n "$suite" ] || return 1
    if [ -n "${EDGERNN_ARM_MIRROR:-}" ]; then echo "$EDGERNN_ARM_MIRROR $suite"; return 0; fi
    local f uri=""
    # deb822 files: a stanza with Types: deb and the release itself in Suites
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$suite" '
            function flush() { if (deb && hasSuite && uris != "" && out == "") out = uris; deb = 0; hasSuite = 0; uris = "" }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hasSuite = 1 }
            END { flush(); print out }' "$f")
        [ -n "$uri" ] && break
    done
    # one-line format
    if [ -z "$uri" ]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            uri=$(awk -v suite="$suite" '
                $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                              if ($(i + 1) == suite) { print $i; exit } }' "$f")
            [ -n "$uri" ] && break
        done
    fi
    [ -n "$uri" ] || return 1
    echo "$uri $suite"
}

rootfs_ready() { [ -f "$ROOT/.edgernn-rootfs" ] && [ "$(head -1 "$ROOT/.edgernn-rootfs")" = "$ROOTFS_STAMP" ]; }

umount_all() {  # unmount everything below $1, deepest first
    local m
    for m in $(awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "another aarch64 job holds $CACHE/.lock"

if ! rootfs_ready; then
    read -r MIRROR SUITE < <(apt_mirror) || die "no Debian mirror/release found in /etc/apt (set EDGERNN_ARM_MIRROR and EDGERNN_ARM_SUITE)"
    log "cold: debootstrap --arch=arm64 $SUITE from $MIRROR into $ROOT"
    for d in "$ROOT.tmp" "$ROOT"; do
        umount_all "$d"
        if awk -v r="$d" 'index($2, r) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
            die "$d still has mounts; not deleting it"
        fi
        rm -rf "$d"
    done
    debootstrap --arch=arm64 --variant=minbase \
        --include="${ROOTFS_PKGS// /,}" \
        "$SUITE" "$ROOT.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    printf '%s\n%s\n' "$ROOTFS_STAMP" "$ROOTFS_PKGS" >"$ROOT.tmp/.edgernn-rootfs"
    mv "$ROOT.tmp" "$ROOT"
    log "userland ready ($(du -sh "$ROOT" | cut -f1))"
else
    log "warm: reusing the userland in $ROOT"
fi

# Without the F (fix-binary) flag the interpreter must exist inside the chroot.
case "$QEMU_FLAGS" in
    *F*) ;;
    *) mkdir -p "$ROOT$(dirname "$QEMU_INTERP")"; cp -f "$QEMU_INTERP" "$ROOT$QEMU_INTERP" ;;
esac
cp -fL /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# pip inside the chroot trusts what the host trusts (a CI host may sit behind a TLS-inspecting proxy
# whose CA only the host's bundle holds).
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
if [ -f "$HOST_CA" ]; then
    cp -fL "$HOST_CA" "$ROOT/etc/ssl/certs/edgernn-host-ca.crt"
fi

umount_all "$ROOT"
mount -t proc proc "$ROOT/proc"
trap 'umount_all "$ROOT"' EXIT
if [ ! -c "$ROOT/dev/null" ] || [ ! -c "$ROOT/dev/urandom" ]; then
    mount --bind /dev "$ROOT/dev"
fi
mkdir -p "$ROOT/dev/shm" "$ROOT/var/cache/edgernn/pip" "$ROOT/var/cache/edgernn/numba"

# A clean environment inside the chroot: nothing from the host's pip configuration leaks in except
# what a user sets explicitly for this job (index/proxy variables).
CHROOT_ENV=(HOME=/root LANG=C.UTF-8 PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin"
    PIP_CACHE_DIR=/var/cache/edgernn/pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
    NUMBA_CACHE_DIR=/var/cache/edgernn/numba)
[ -f "$ROOT/etc/ssl/certs/edgernn-host-ca.crt" ] && CHROOT_ENV+=(PIP_CERT=/etc/ssl/certs/edgernn-host-ca.crt)
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && CHROOT_ENV+=("$v=${!v}")
done
in_arm() { chroot "$ROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" "$@"; }

arch=$(in_arm uname -m)
[ "$arch" = aarch64 ] || die "the chroot reports machine '$arch', expected aarch64"
log "chroot runs: $(in_arm /usr/bin/python3 -c 'import platform, sys; print(platform.machine(), "Python", sys.version.split()[0])')"

if [ "$(sed -n 2p "$ROOT/.edgernn-rootfs")" != "$ROOTFS_PKGS" ]; then
    log "apt-get install $ROOTFS_PKGS (package list changed)"
    in_arm /usr/bin/apt-get update -qq >/dev/null && in_arm /usr/bin/env DEBIAN_FRONTEND=noninteractive \
        /usr/bin/apt-get install -y -qq --no-install-recommends $ROOTFS_PKGS >/dev/null \
        || die "apt-get install in the userland failed"
    printf '%s\n%s\n' "$ROOTFS_STAMP" "$ROOTFS_PKGS" >"$ROOT/.edgernn-rootfs"
fi

# ---------------------------------------------------------------- 3. venv + package
if [ ! -f "$ROOT$VENV/.edgernn-venv" ] || [ "$(cat "$ROOT$VENV/.edgernn-venv")" != "$VENV_REQS" ]; then
    # Wheels are fetched by the host's pip (native TLS and network, the host's index configuration),
    # for the userland's Python and arm64, then installed inside without any index.
    pyver=$(in_arm /usr/bin/python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
    WHEELS=$ROOT/var/cache/edgernn/wheels
    mkdir -p "$WHEELS"
    log "host pip download: $VENV_REQS (cp$pyver, aarch64 wheels)"
    # shellcheck disable=SC2086
    "$HOST_PY" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$WHEELS" \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        --implementation cp --python-version "$pyver" $VENV_REQS 2>"$CACHE/pip-download.log" \
        || { tail -20 "$CACHE/pip-download.log" >&2; die "downloading the aarch64 wheels failed"; }
    log "venv: pip install from the downloaded wheels (emulated)"
    in_arm /usr/bin/python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    in_arm "$VENV/bin/pip" install -q --no-compile --no-index --find-links /var/cache/edgernn/wheels $VENV_REQS \
        || die "pip install in the aarch64 venv failed"
    echo "$VENV_REQS" >"$ROOT$VENV/.edgernn-venv"
fi

if [ "${1:-}" = --setup-only ]; then
    log "userland + venv ready (--setup-only) in $(($(date +%s) - T0)) s"
    exit 0
fi

# Copy the checkout in, rewriting only files whose content changed (their mtime is what numba's
# cache index checks), and removing files that are gone.
"$HOST_PY" - "$REPO" "$ROOT$SRC" <<'EOF'
import os, shutil, sys
src, dst = sys.argv[1:3]
keep = ["pyproject.toml", "README.md", "LICENSE", "edgernn", "kernels", "export", "tests"]
skip_dirs = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
wanted = set()
for top in keep:
    p = os.path.join(src, top)
    if os.path.isfile(p):
        wanted.add(top)
    for root, dirs, files in os.walk(p):
        dirs[:] = [d for d in dirs if d not in skip_dirs and not d.endswith(".egg-info")]
        for f in files:
            if not f.endswith((".pyc", ".so")):
                wanted.add(os.path.relpath(os.path.join(root, f), src))
changed = 0
for rel in sorted(wanted):
    a, b = os.path.join(src, rel), os.path.join(dst, rel)
    with open(a, "rb") as fh:
        data = fh.read()
    if os.path.isfile(b):
        with open(b, "rb") as fh:
            if fh.read() == data:
                continue
    os.makedirs(os.path.dirname(b), exist_ok=True)
    with open(b, "wb") as fh:
        fh.write(data)
    changed += 1
removed = 0
for root, dirs, files in os.walk(dst, topdown=False):
    for f in files:
        rel = os.path.relpath(os.path.join(root, f), dst)
        if rel not in wanted and "egg-info" not in rel and "__pycache__" not in rel:
            os.remove(os.path.join(root, f))
            removed += 1
print(f"checkout -> chroot: {len(wanted)} files, {changed} written, {removed} removed")
EOF

pyhash=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$ROOT$VENV/.edgernn-installed" ] || [ "$(cat "$ROOT$VENV/.edgernn-installed")" != "$pyhash" ]; then
    log "pip install -e the checkout (no dependencies pulled: they are in the venv)"
    in_arm "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$SRC" || die "installing edgernn failed"
    echo "$pyhash" >"$ROOT$VENV/.edgernn-installed"
fi
in_arm "$VENV/bin/python" -c 'import edgernn, numba, numpy; print("edgernn", edgernn.__version__, "numba", numba.__version__, "numpy", numpy.__version__)'

# ---------------------------------------------------------------- 4. fixtures on x86-64, tests on aarch64
rm -rf "$ROOT$FIX"
mkdir -p "$ROOT$FIX"
host_pkg=$("$HOST_PY" -c 'import edgernn, os; print(os.path.dirname(os.path.dirname(os.path.realpath(edgernn.__file__))))' 2>/dev/null) \
    || die "$HOST_PY cannot import edgernn: set EDGERNN_HOST_PYTHON to the python of the CI venv"
[ "$host_pkg" = "$(realpath "$REPO")" ] || log "warning: host edgernn comes from $host_pkg, not from $REPO"
log "host ($(uname -m)): writing artifacts + expected outputs with $HOST_PY"
"$HOST_PY" "$REPO/tests/arm_cases.py" write "$ROOT$FIX" || die "writing the x86-64 fixtures failed"

log "aarch64: pytest (emulated; timings are not benchmarks)"
rc=0
timeout "${EDGERNN_ARM_TIMEOUT:-3000}" chroot "$ROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" \
    EDGERNN_ARM_FIXTURES="$FIX" EDGERNN_ARM_AOT="${EDGERNN_ARM_AOT:-1}" EDGERNN_ARM_AOT_DIR=/var/cache/edgernn/aot \
    sh -c "cd $SRC && exec $VENV/bin/python -m pytest -v --tb=short -p no:cacheprovider tests/test_arm_device.py" \
    || rc=$?
[ $rc -eq 124 ] && log "pytest hit the ${EDGERNN_ARM_TIMEOUT:-3000} s limit (EDGERNN_ARM_TIMEOUT)"

if [ $rc -ne 0 ]; then
    log "FAILED (pytest exit $rc) after $(($(date +%s) - T0)) s"
    exit $rc
fi
log "PASSED in $(($(date +%s) - T0)) s (cache: $CACHE)"
