#!/usr/bin/env bash
# Windows build and tests of Osprey, run from Linux (called by .ci/run; see docs/windows.md).
#
#   1. cargo check for x86_64-pc-windows-msvc: sensor-etw and protocol (crates with C parts,
#      e.g. ring under async-nats, cannot be checked for msvc without its toolchain);
#   2. cargo build for x86_64-pc-windows-gnu: the collector, sensor-etw and the `osprey` CLI,
#      linked by Debian's mingw-w64;
#   3. the Windows build's unit tests of sensor-etw and protocol, and of the collector's ETW
#      adapter (source::etw), run under Debian's wine.
#
# Idempotent; installs what it needs on a fresh Debian 12 machine (as root). Uses the usual
# target dir (CARGO_TARGET_DIR, default target/), and keeps the wine prefix under it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target_dir"
target_dir="$(cd "$target_dir" && pwd)"

say() { printf '== windows: %s\n' "$*"; }
started=$SECONDS

# --- toolchain -----------------------------------------------------------------------------
missing=()
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    # A fresh machine has no package lists yet.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
installed_targets="$(rustup target list --installed)"
for t in x86_64-pc-windows-gnu x86_64-pc-windows-msvc; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done

# --- ProcessPrng shim for wine ---------------------------------------------------------------
# Rust >= 1.78 binaries import ProcessPrng from bcryptprimitives.dll, which Debian's wine 8.0
# lacks. This DLL provides it on top of RtlGenRandom (advapi32's SystemFunction036), only in the
# test prefix. Real Windows (10+) has the genuine DLL; the shim never ships.
wine_dir="$target_dir/wine"
shim="$wine_dir/bcryptprimitives.dll"
mkdir -p "$wine_dir"
cat >"$wine_dir/processprng.c.new" <<'EOF'
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
EOF
if ! cmp -s "$wine_dir/processprng.c.new" "$wine_dir/processprng.c" || [ ! -f "$shim" ]; then
    mv "$wine_dir/processprng.c.new" "$wine_dir/processprng.c"
    say "building the ProcessPrng shim"
    x86_64-w64-mingw32-gcc -shared -O2 -o "$shim" "$wine_dir/processprng.c" -ladvapi32
else
    rm -f "$wine_dir/processprng.c.new"
fi

export WINEPREFIX="$wine_dir/prefix"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    say "creating the wine prefix"
    /usr/lib/wine/wine64 wineboot --init >/dev/null 2>&1 || true
    /usr/lib/wine/wineserver -w || true
fi
system32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -d "$system32" ]; then
    echo "windows.sh: wine prefix $WINEPREFIX has no system32" >&2
    exit 1
fi
cmp -s "$shim" "$system32/bcryptprimitives.dll" || cp "$shim" "$system32/bcryptprimitives.dll"

# --- builds and tests ------------------------------------------------------------------------
say "cargo check --target x86_64-pc-windows-msvc (sensor-etw, protocol)"
cargo check --target x86_64-pc-windows-msvc -p osprey-sensor-etw -p osprey-protocol

say "cargo build --target x86_64-pc-windows-gnu (collector, sensor-etw, the osprey CLI)"
cargo build --target x86_64-pc-windows-gnu -p osprey-collector -p osprey-sensor-etw -p osprey-cli

say "unit tests of the Windows build under wine (sensor-etw, protocol, the collector's ETW adapter)"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=/usr/lib/wine/wine64
cargo test --target x86_64-pc-windows-gnu -p osprey-sensor-etw -p osprey-protocol --lib
cargo test --target x86_64-pc-windows-gnu -p osprey-collector --lib source::etw::

say "done in $((SECONDS - started)) s"
