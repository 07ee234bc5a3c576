#!/usr/bin/env bash
# Installs what the real-KDC tests need, idempotently (safe to run on every `make test`):
#   * MIT krb5 (KDC, kadmin.local, kinit/kvno/ktutil, the GSSAPI library python-gssapi links to) via apt;
#   * Heimdal's KDC and clients, which conflict with MIT's packages, unpacked with `apt-get download` +
#     `dpkg -x` into build/heimdal/ (gitignored) and run from there with LD_LIBRARY_PATH (see tests/support/heimdal.py).
# Override the target with FASTKRB_HEIMDAL_DIR. Needs root (or sudo) only when MIT packages are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HEIMDAL_DIR="${FASTKRB_HEIMDAL_DIR:-$ROOT/build/heimdal}"

MIT_PKGS=(krb5-kdc krb5-admin-server krb5-user libkrb5-dev)
# libfaketime: MIT's acceptor gives its verdict at a moved clock (clock-skew / expiry agreement tests).
EXTRA_PKGS=(faketime)
# Runtime libraries the Heimdal binaries load; they are Debian-installed for everything non-Heimdal.
SYS_PKGS=(libdb5.3 libldap-2.5-0 libsqlite3-0 libedit2 libcap-ng0 libcrypt1 libcom-err2)
HEIMDAL_PKGS=(heimdal-kdc heimdal-clients
              libasn1-8-heimdal libgssapi3-heimdal libhcrypto5-heimdal libhdb9-heimdal libheimbase1-heimdal
              libheimntlm0-heimdal libhx509-5-heimdal libkadm5clnt7-heimdal libkadm5srv8-heimdal
              libkafs0-heimdal libkdc2-heimdal libkrb5-26-heimdal libotp0-heimdal libroken19-heimdal
              libsl0-heimdal libwind0-heimdal)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${MIT_PKGS[@]}" "${EXTRA_PKGS[@]}" "${SYS_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
updated=0
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install_kdc_deps: apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    updated=1
    # krb5-config asks for a default realm through debconf; the tests write their own krb5.conf.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f "$HEIMDAL_DIR/.complete" ] && [ -x "$HEIMDAL_DIR/usr/lib/heimdal-servers/kdc" ]; then
    echo "install_kdc_deps: Heimdal already unpacked in $HEIMDAL_DIR"
    exit 0
fi

echo "install_kdc_deps: unpacking Heimdal into $HEIMDAL_DIR"
debs="$(mktemp -d)"
trap 'rm -rf "$debs"' EXIT
fetch() { (cd "$debs" && apt-get download -qq "${HEIMDAL_PKGS[@]}"); }
if ! fetch 2>/dev/null; then
    if [ "$updated" = 0 ]; then $SUDO apt-get update -qq; fi
    fetch
fi
rm -rf "$HEIMDAL_DIR.tmp"
mkdir -p "$HEIMDAL_DIR.tmp"
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$HEIMDAL_DIR.tmp"
done
touch "$HEIMDAL_DIR.tmp/.complete"
rm -rf "$HEIMDAL_DIR"
mv "$HEIMDAL_DIR.tmp" "$HEIMDAL_DIR"
echo "install_kdc_deps: done"
