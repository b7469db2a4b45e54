#!/usr/bin/env bash
# install-criu.sh: make sure a working CRIU is there for checkpoint/restore; print its path.
#
# Debian 12's criu 3.17 fails on kernels >= 6.13 ("vdso: Unexpected rt vDSO area bounds",
# fixed in 4.1), and 4.1 cannot dump a TCP socket on kernels >= 6.16 (it asks for
# SO_PASSCRED, now refused outside unix and netlink sockets; fixed in 4.2). Debian's newer
# .debs need a newer glibc, so the upstream tarball of forky's (testing's) source package
# is built here instead:
#   - build dependencies from apt;
#   - the source index through a private apt source list (its lists and cache under the
#     cache directory, the system's apt configuration untouched), signed by Debian's key;
#   - the tarball checked against the SHA256 in that signed index.
# A criu on PATH that passes "criu check" and is new enough is used as it is.
#
# usage: tools/install-criu.sh [--rebuild]     (as root; progress on stderr)
#   stdout: the path of a working criu, for "aioruntime --criu PATH" or AIORUNTIME_CRIU
# env: XDG_CACHE_HOME (cache root, default /var/cache), CRIU_SUITE (default forky),
#      DEBIAN_MIRROR (default: the Debian archive apt already uses)
set -euo pipefail
die() { echo "install-criu: $*" >&2; exit 2; }
log() { echo "install-criu: $*" >&2; }

C=${XDG_CACHE_HOME:-/var/cache}/aioruntime/criu
BIN=$C/bin/criu
SUITE=${CRIU_SUITE:-forky}
[[ $EUID -eq 0 ]] || die "run as root (apt-get, criu check)"
case ${1:-} in --rebuild) rm -f "$BIN" ;; "") ;; *) die "usage: $0 [--rebuild]" ;; esac

# "major minor" of a criu binary, or nothing
version() { "$1" --version 2>/dev/null | awk '/^Version:/ { split($2, v, "."); print v[1] + 0, v[2] + 0; exit }'; }
# the oldest CRIU this kernel works with (as aioruntime/criu/version.py says)
read -r kmaj kmin _ < <(uname -r | awk -F'[.-]' '{ print $1, $2 }')
if ((kmaj > 6 || (kmaj == 6 && kmin >= 16))); then need=(4 2)
elif ((kmaj == 6 && kmin >= 13)); then need=(4 1)
else need=(3 15); fi
works() {
    local v
    v=$(version "$1") && [[ -n $v ]] || return 1
    read -r maj min <<<"$v"
    ((maj > need[0] || (maj == need[0] && min >= need[1]))) && "$1" check >/dev/null 2>&1
}

for candidate in "$BIN" "$(command -v criu || true)"; do
    if [[ -x $candidate ]] && works "$candidate"; then
        log "using $candidate ($("$candidate" --version | awk '/^Version:/ { print $2 }'))"
        echo "$candidate"
        exit 0
    fi
done

deps=(build-essential pkgconf libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler
      libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev libnftables-dev uuid-dev
      python3-protobuf xz-utils iptables)   # iptables: criu's network lock while dumping
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -qq -o Acquire::Retries=3 >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 install -y -qq \
        --no-install-recommends "${missing[@]}" </dev/null >&2 || die "apt-get install failed"
fi

# The Debian archive apt already uses: the first enabled "deb" source for this release.
mirror() {
    local cn uri="" f
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "${DEBIAN_MIRROR%/}"; return; fi
    cn=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $cn ]] || return 1
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        uri=$(awk -v cn="$cn" '
            function take() {
                if (!done && (" " types " ") ~ / deb / && enabled != "no" && uris != "" && (" " suites " ") ~ (" " cn " ")) {
                    split(uris, u, " "); print u[1]; done = 1
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { take(); next }
            { k = tolower($1); $1 = "" }
            k == "types:" { types = $0 } k == "uris:" { uris = $0 } k == "suites:" { suites = $0 }
            k == "enabled:" { enabled = tolower($2) }
            END { take() }' "$f")
        [[ -n $uri ]] && break
    done
    if [[ -z $uri ]]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -f $f ]] || continue
            uri=$(awk -v cn="$cn" '$1 != "deb" { next }
                { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ } }
                $(i + 1) == cn { print $i; exit }' "$f")
            [[ -n $uri ]] && break
        done
    fi
    [[ -n $uri ]] && echo "${uri%/}"
}
MIRROR=$(mirror) || die "found no Debian archive in apt's configuration; set DEBIAN_MIRROR=<Debian archive URL>"
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $KEY ]] || die "no $KEY to check the $SUITE index with (apt-get install debian-archive-keyring)"

A=$C/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$C/dl"
echo "deb-src [signed-by=$KEY] $MIRROR $SUITE main" >"$A/sources.list"
APT=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o Acquire::Languages=none
     -o APT::Sandbox::User=root -o Acquire::Retries=3)
log "reading the $SUITE source index from $MIRROR"
apt-get "${APT[@]}" -qq update >&2 || die "apt-get update with $A/sources.list failed"
# only the upstream tarball is needed: its name and SHA256 from the signed Sources index
STANZA=$(apt-cache "${APT[@]}" showsrc --only-source criu 2>/dev/null | awk 'NF == 0 { exit } { print }')
DIR=$(awk '$1 == "Directory:" { print $2 }' <<<"$STANZA")
read -r SUM ORIG < <(awk '$1 == "Checksums-Sha256:" { f = 1; next } /^[^ ]/ { f = 0 }
                          f && $3 ~ /\.orig\.tar\./ { print $1, $3; exit }' <<<"$STANZA") || true
[[ -n $DIR && -n ${SUM:-} && -n ${ORIG:-} ]] || die "no criu source package in $SUITE at $MIRROR"
F=$C/dl/$ORIG
if ! { [[ -s $F ]] && echo "$SUM  $F" | sha256sum -c --status; }; then
    rm -f "$F"
    log "downloading $ORIG"
    /usr/lib/apt/apt-helper -qq -o APT::Sandbox::User=root download-file \
        "$MIRROR/$DIR/${ORIG//+/%2b}" "$F" "SHA256:$SUM" >&2 || { rm -f "$F"; die "cannot download $ORIG"; }
fi
VER=${ORIG#criu_}
VER=${VER%%.orig.tar.*}
SRC=$C/src
rm -rf "$SRC"
mkdir -p "$SRC"
tar -C "$SRC" -xf "$F" || die "cannot unpack $F"
[[ -d $SRC/criu-$VER ]] || die "unexpected layout in $F"
log "building criu $VER (log: $C/build.log)"
make -C "$SRC/criu-$VER" -j"$(nproc)" criu >"$C/build.log" 2>&1 || die "build failed; see $C/build.log"
install -D -m 755 "$SRC/criu-$VER/criu/criu" "$BIN"
rm -rf "$SRC"
out=$("$BIN" check 2>&1) || die "built criu $VER, but 'criu check' fails: $out"
works "$BIN" || die "built criu $VER, but this kernel needs criu ${need[0]}.${need[1]} or later"
log "criu $VER installed in $BIN"
echo "$BIN"
