#!/usr/bin/env bash
# Install NVIDIA's perf_analyzer (PyPI perf-analyzer==2.60.0) into a virtual environment and leave
# an executable wrapper at <venv>/bin/perf_analyzer.
#
# Usage: scripts/install_perf_analyzer.sh [VENV]
#   VENV defaults to the repository's .venv. Safe to run again: a working install is detected
#   and the script exits at once.
#
# Why there are two routes:
#   The only perf-analyzer wheel that contains the binary is tagged manylinux_2_38: it needs
#   glibc >= 2.38 and GLIBCXX_3.4.32.
#   - Debian 13 (glibc 2.41) satisfies that: pip installs the wheel into the venv as usual.
#   - Debian 12 (glibc 2.36) does not: pip skips the wheel and installs an unrelated 0.1.0 release
#     with no binary. So we download the manylinux_2_38 wheel explicitly, fetch Debian 13's
#     libc6 / libstdc++6 / libgcc-s1 with a private apt state (the system's apt configuration and
#     state are never touched), unpack them with `dpkg -x` under <venv>/opt/perf_analyzer/, and
#     start the binary through that newer dynamic loader. Everything lives inside the venv and
#     is removed with it.
#
# perf_analyzer 2.60.0 has no --help option (it rejects it, exit 99) and prints its usage on
# stderr when started without arguments; the wrapper maps a lone -h/--help to that usage, on
# stdout, with exit status 0.
#
# Environment: PERF_ANALYZER_DEBIAN_MIRROR overrides the Debian mirror found in the apt sources.
set -euo pipefail

readonly PA_VERSION=2.60.0
readonly PA_PLATFORM=manylinux_2_38_x86_64
readonly MIN_GLIBC=2.38
readonly DEBIAN_SUITE=trixie
readonly BASE_DEBS=(libc6 libstdc++6 libgcc-s1)
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly MARKER="installed by install_perf_analyzer.sh: perf-analyzer==${PA_VERSION}"

# Debian 13 packages that provide libraries perf_analyzer links, used only where the system
# lacks them (Debian 12 normally has zlib1g and libssl3 installed).
declare -rA PACKAGE_FOR_LIB=(
    [libz.so.1]=zlib1g
    [libssl.so.3]=libssl3t64
    [libcrypto.so.3]=libssl3t64
)

APT_OPTS=()  # apt-get options for the private apt state, set by setup_private_apt

log() { printf '[perf_analyzer] %s\n' "$*"; }
die() { printf '[perf_analyzer] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

resolve_venv() {
    local repo_root
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local venv=${1:-$repo_root/.venv}
    [[ -x $venv/bin/python ]] \
        || die "no virtual environment at '$venv' (create it first: python3 -m venv $venv)"
    (cd "$venv" && pwd)
}

# True when the wrapper was written by this script for this version and actually runs.
already_installed() {
    local wrapper=$1
    [[ -x $wrapper ]] && grep -qF "$MARKER" "$wrapper" 2>/dev/null \
        && "$wrapper" --version >/dev/null 2>&1
}

glibc_version() {
    getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}'
}

# version_at_least A B: true when A >= B.
version_at_least() {
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

# write_wrapper PATH CMD...: write a bash wrapper that runs CMD with the caller's arguments.
write_wrapper() {
    local path=$1; shift
    local cmd tmp
    printf -v cmd '%q ' "$@"
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp" <<EOF
#!/usr/bin/env bash
# perf_analyzer wrapper, ${MARKER}
# perf_analyzer has no --help option: it prints its usage on stderr (exit 99) when started
# without arguments, so a lone -h/--help shows that usage on stdout and exits 0.
set -euo pipefail
cmd=(${cmd% })
if [[ \$# -eq 1 && ( \$1 == --help || \$1 == -h ) ]]; then
    usage=\$("\${cmd[@]}" 2>&1) || true
    if [[ \$usage == Usage:* ]]; then
        printf '%s\n' "\$usage"
        exit 0
    fi
    printf '%s\n' "\$usage" >&2
    exit 1
fi
exec "\${cmd[@]}" "\$@"
EOF
    chmod 755 "$tmp"
    mv -f "$tmp" "$path"
}

verify() {
    local wrapper=$1
    "$wrapper" --help >/dev/null || die "$wrapper --help failed"
    log "ready: $wrapper ($("$wrapper" --version 2>&1 | head -n1))"
}

# ---------------------------------------------------------------------------------------------
# Route 1: glibc >= 2.38 (Debian 13): plain pip install
# ---------------------------------------------------------------------------------------------

install_native() {
    local venv=$1 pkg_dir binary
    log "pip install perf-analyzer==$PA_VERSION"
    "$venv/bin/python" -m pip install --quiet "perf-analyzer==$PA_VERSION" \
        || die "pip install perf-analyzer==$PA_VERSION failed"
    pkg_dir=$("$venv/bin/python" -c 'import perf_analyzer; print(perf_analyzer.__path__[0])')
    binary=$pkg_dir/bin/perf_analyzer
    [[ -f $binary ]] || die "the installed perf-analyzer has no binary at $binary"
    chmod +x "$binary"
    # pip's console script runs the binary through Python and drops its exit status: replace it.
    write_wrapper "$venv/bin/perf_analyzer" "$binary"
}

# ---------------------------------------------------------------------------------------------
# Route 2: older glibc (Debian 12): Debian 13's loader and runtime libraries in a private folder
# ---------------------------------------------------------------------------------------------

# Print "URI SUITE" for every enabled `deb` entry of the system's apt sources, in apt's order
# (one-line *.list files and deb822 *.sources files).
apt_source_entries() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
        [[ -f $f ]] || continue
        case $f in
            *.list)
                awk '$1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    print $i, $(i + 1)
                }' "$f" ;;
            *.sources)
                awk '
                    function flush(   nu, ns, a, b, u, s) {
                        if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
                            nu = split(uris, u); ns = split(suites, s)
                            for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print u[a], s[b]
                        }
                        types = uris = suites = enabled = ""
                    }
                    /^[ \t]*#/ { next }
                    /^[ \t]*$/ { flush(); next }
                    /^[A-Za-z0-9-]+:/ {
                        key = tolower($0); sub(/:.*/, "", key)
                        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                        if (key == "types") types = val
                        else if (key == "uris") uris = val
                        else if (key == "suites") suites = val
                        else if (key == "enabled") enabled = val
                    }
                    END { flush() }
                ' "$f" ;;
        esac
    done
}

# The mirror of the system's main Debian entry (a plain suite such as "bookworm", not
# "-security" or "-updates"), e.g. http://deb.debian.org/debian.
debian_mirror() {
    if [[ -n ${PERF_ANALYZER_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "${PERF_ANALYZER_DEBIAN_MIRROR%/}"
        return
    fi
    local uri suite
    while read -r uri suite; do
        if [[ $uri =~ ^https?:// && $suite != *-* && $uri != *security* ]]; then
            printf '%s\n' "${uri%/}"
            return
        fi
    done < <(apt_source_entries)
    die "found no Debian mirror in /etc/apt/sources.list{,.d/}; set PERF_ANALYZER_DEBIAN_MIRROR"
}

# Fetch the manylinux_2_38 wheel, unpack it into $1/wheel and print the binary's path.
fetch_wheel() {
    local venv=$1 opt=$2 tmp binary
    tmp=$opt/download
    mkdir -p "$tmp" "$opt/wheel"
    log "downloading the perf-analyzer==$PA_VERSION wheel ($PA_PLATFORM)" >&2
    "$venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform "$PA_PLATFORM" -d "$tmp" "perf-analyzer==$PA_VERSION" >&2 \
        || die "pip download perf-analyzer==$PA_VERSION failed"
    "$venv/bin/python" -m zipfile -e "$tmp"/perf_analyzer-"$PA_VERSION"-*.whl "$opt/wheel"
    binary=$opt/wheel/perf_analyzer/bin/perf_analyzer
    [[ -f $binary ]] || die "the wheel has no binary at perf_analyzer/bin/perf_analyzer"
    chmod +x "$binary"
    rm -rf "$tmp"
    printf '%s\n' "$binary"
}

# Set up a private apt configuration and state under $1 listing Debian 13 only.
# The apt options used with it are in APT_OPTS.
setup_private_apt() {
    local dir=$1 mirror
    mirror=$(debian_mirror)
    [[ -r $KEYRING ]] || die "$KEYRING missing (apt-get install debian-archive-keyring)"
    mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial"
    : >"$dir/state/status"
    printf 'deb [arch=amd64 lang=none targets=Packages signed-by=%s] %s %s main\n' \
        "$KEYRING" "$mirror" "$DEBIAN_SUITE" >"$dir/sources.list"
    # Never run the system's apt hooks (they act on the system, e.g. refresh AppStream caches).
    cat >"$dir/apt.conf" <<'EOF'
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
EOF
    APT_OPTS=(
        -c "$dir/apt.conf"
        -o "Dir::Etc::SourceList=$dir/sources.list"
        -o Dir::Etc::SourceParts=/dev/null
        -o Dir::Etc::Preferences=/dev/null
        -o Dir::Etc::PreferencesParts=/dev/null
        -o "Dir::State=$dir/state"
        -o "Dir::State::status=$dir/state/status"
        -o "Dir::Cache=$dir/cache"
        -o APT::Architecture=amd64
        -o APT::Architectures=amd64
    )
    # As root, apt drops to the _apt user to download, which cannot write into the venv.
    if [[ $EUID -eq 0 ]]; then
        APT_OPTS+=(-o APT::Sandbox::User=root)
    fi
    log "apt-get update ($mirror $DEBIAN_SUITE, private state)"
    apt-get "${APT_OPTS[@]}" -qq update || die "apt-get update of $mirror $DEBIAN_SUITE failed"
}

# fetch_debs APTDIR SYSROOT PKG...: download Debian 13 packages and unpack them into SYSROOT.
fetch_debs() {
    local aptdir=$1 sysroot=$2; shift 2
    local debs=$aptdir/debs deb
    mkdir -p "$debs"
    log "apt-get download $*"
    (cd "$debs" && apt-get "${APT_OPTS[@]}" -qq download "$@") \
        || die "apt-get download $* failed"
    for deb in "$debs"/*.deb; do
        dpkg -x "$deb" "$sysroot"
    done
    rm -f "$debs"/*.deb
}

# missing_libs LOADER LIBPATH BINARY: print the sonames the loader cannot resolve.
missing_libs() {
    local out
    out=$("$1" --library-path "$2" --list "$3" 2>&1) || true
    awk '/=> not found/ {print $1}' <<<"$out"
}

# Add Debian 13 packages for libraries the system lacks; fail on any that cannot be mapped.
add_missing_libs() {
    local aptdir=$1 sysroot=$2 loader=$3 libpath=$4 binary=$5
    local lib pkgs=() unknown=()
    while read -r lib; do
        [[ -n $lib ]] || continue
        if [[ -n ${PACKAGE_FOR_LIB[$lib]:-} ]]; then
            pkgs+=("${PACKAGE_FOR_LIB[$lib]}")
        else
            unknown+=("$lib")
        fi
    done < <(missing_libs "$loader" "$libpath" "$binary")
    ((${#unknown[@]} == 0)) || die "perf_analyzer needs libraries not found: ${unknown[*]}"
    ((${#pkgs[@]} == 0)) && return 0
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    fetch_debs "$aptdir" "$sysroot" "${pkgs[@]}"
    [[ -z $(missing_libs "$loader" "$libpath" "$binary") ]] \
        || die "perf_analyzer still misses libraries: $(missing_libs "$loader" "$libpath" "$binary")"
}

install_with_private_glibc() {
    local venv=$1
    local opt=$venv/opt/perf_analyzer
    local aptdir=$opt/apt sysroot=$opt/sysroot
    local libdir=$sysroot/usr/lib/x86_64-linux-gnu
    local loader=$libdir/ld-linux-x86-64.so.2
    local libpath=$libdir:/lib/x86_64-linux-gnu
    local binary

    if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
        die "glibc < $MIN_GLIBC and no apt-get/dpkg: this route needs Debian (12)"
    fi
    [[ $(uname -m) == x86_64 ]] || die "perf-analyzer==$PA_VERSION is built for x86_64 only"

    rm -rf "$opt"
    mkdir -p "$sysroot"
    binary=$(fetch_wheel "$venv" "$opt")
    setup_private_apt "$aptdir"
    fetch_debs "$aptdir" "$sysroot" "${BASE_DEBS[@]}"
    [[ -x $loader ]] || die "no loader at $loader after unpacking ${BASE_DEBS[*]}"
    add_missing_libs "$aptdir" "$sysroot" "$loader" "$libpath" "$binary"
    rm -rf "$aptdir"
    write_wrapper "$venv/bin/perf_analyzer" "$loader" --library-path "$libpath" "$binary"
}

main() {
    local venv wrapper glibc
    venv=$(resolve_venv "${1:-}")
    wrapper=$venv/bin/perf_analyzer
    if already_installed "$wrapper"; then
        log "already installed: $wrapper"
        return 0
    fi
    glibc=$(glibc_version)
    [[ -n $glibc ]] || die "cannot determine the glibc version (getconf GNU_LIBC_VERSION)"
    if version_at_least "$glibc" "$MIN_GLIBC"; then
        log "glibc $glibc >= $MIN_GLIBC: installing the wheel with pip"
        install_native "$venv"
    else
        log "glibc $glibc < $MIN_GLIBC: using Debian $DEBIAN_SUITE's loader inside the venv"
        install_with_private_glibc "$venv"
    fi
    verify "$wrapper"
}

main "$@"
