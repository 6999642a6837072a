#!/bin/sh
# Installs o3sr from a GitHub release: picks the binary for this OS and CPU,
# checks it against the release's SHA256SUMS, and puts it on disk as `o3sr`.
#
#   curl -fsSL https://raw.githubusercontent.com/OWNER/o3sr/main/install.sh | sh
#   sh install.sh --prefix ~/bin --version v0.1.0
#
# Run with --help for every option. POSIX sh; needs curl or wget (not for
# file:// URLs), and sha256sum or shasum.

set -eu

# The GitHub repository releases are downloaded from (owner/name).
O3SR_REPO="OWNER/o3sr"
# Where the newest release's files are; --version picks another release.
O3SR_DEFAULT_BASE_URL="https://github.com/${O3SR_REPO}/releases/latest/download"

usage() {
  cat <<EOF
Installs o3sr: downloads the release binary for this OS and CPU, verifies it
against the release's SHA256SUMS, and installs it as o3sr.

usage: install.sh [options]

  --prefix DIR        install into DIR (default: \$HOME/.local/bin, or
                      /usr/local/bin when run as root)
  --version vX.Y.Z    install that release (default: the latest)
  --deno              install the Deno build (o3sr-deno-<os>-<arch>) instead
                      of the Bun build (o3sr-<os>-<arch>)
  --base-url URL      download from URL/<file> instead of the GitHub release
                      (also O3SR_BASE_URL; https://, http:// or file://)
  -h, --help          show this help

Supported: Linux and macOS on x64 and arm64. On Windows, download
o3sr-windows-x64.exe from https://github.com/${O3SR_REPO}/releases instead.
EOF
}

# Every failure is one line on stderr and exit status 1.
die() {
  printf 'o3sr install: %s\n' "$*" >&2
  exit 1
}

# ---- Options ----

prefix=""
version=""
flavor=""
base_url="${O3SR_BASE_URL:-}"

# Fails unless option $1 was given a value (its next argument, $2).
need_value() {
  [ -n "${2:-}" ] || die "$1 needs a value; see --help"
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --deno) flavor="deno-" ;;
    --prefix) need_value "$1" "${2:-}"; prefix="$2"; shift ;;
    --prefix=*) prefix="${1#*=}" ;;
    --version) need_value "$1" "${2:-}"; version="$2"; shift ;;
    --version=*) version="${1#*=}" ;;
    --base-url) need_value "$1" "${2:-}"; base_url="$2"; shift ;;
    --base-url=*) base_url="${1#*=}" ;;
    *) die "unknown option $1; see --help" ;;
  esac
  shift
done

case "$version" in
  "" | v[0-9]*.[0-9]*.[0-9]*) ;;
  [0-9]*.[0-9]*.[0-9]*) version="v$version" ;; # 0.1.0 as well as v0.1.0, as tags are named
  *) die "--version $version is not a release tag such as v0.1.0" ;;
esac

# An explicit base URL is the directory holding the files, whatever --version says.
if [ -z "$base_url" ]; then
  if [ -n "$version" ]; then
    base_url="https://github.com/${O3SR_REPO}/releases/download/${version}"
  else
    base_url="$O3SR_DEFAULT_BASE_URL"
  fi
fi
base_url="${base_url%/}"

if [ -z "$prefix" ]; then
  if [ "$(id -u)" = "0" ]; then
    prefix="/usr/local/bin"
  elif [ -n "${HOME:-}" ]; then
    prefix="$HOME/.local/bin"
  else
    die "HOME is not set, so there is no default install directory; pass --prefix DIR"
  fi
fi

# ---- Platform ----

uname_s="$(uname -s)"
uname_m="$(uname -m)"

case "$uname_s" in
  Linux) os="linux" ;;
  Darwin) os="darwin" ;;
  MINGW* | MSYS* | CYGWIN* | Windows_NT)
    die "on Windows, download o3sr-windows-x64.exe (or o3sr-deno-windows-x64.exe) from https://github.com/${O3SR_REPO}/releases and check it against SHA256SUMS"
    ;;
  *) die "no o3sr release binary for the OS $uname_s (there are Linux and macOS ones); run it from source with Bun or Deno instead, see the README" ;;
esac

case "$uname_m" in
  x86_64 | amd64) arch="x64" ;;
  aarch64 | arm64) arch="arm64" ;;
  *) die "no o3sr release binary for the CPU $uname_m on $uname_s (there are x64 and arm64 ones); run it from source with Bun or Deno instead, see the README" ;;
esac

# An x64 shell under Rosetta 2 on Apple silicon: the native binary is better.
if [ "$os" = "darwin" ] && [ "$arch" = "x64" ] && [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || true)" = "1" ]; then
  arch="arm64"
fi

asset="o3sr-${flavor}${os}-${arch}"

# ---- Tools ----

if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
else
  die "neither sha256sum nor shasum is installed, so the download cannot be verified; install coreutils (sha256sum) or perl (shasum) and run this again"
fi

# Copies URL $1 to file $2, or says why it could not.
download() {
  case "$1" in
    file://*)
      cp "${1#file://}" "$2" 2>/dev/null || die "cannot download $1: no such file"
      ;;
    *)
      # The tool's own complaint (such as a 404) goes into our one line.
      if command -v curl >/dev/null 2>&1; then
        why="$(curl -fsSL --retry 2 -o "$2" "$1" 2>&1)" ||
          die "cannot download $1 ($(printf '%s' "${why:-curl failed}" | tail -n 1)): check --version, --base-url and the network"
      elif command -v wget >/dev/null 2>&1; then
        status=0
        wget -q -O "$2" "$1" 2>/dev/null || status=$?
        case "$status" in
          0) why="" ;;
          4) why="wget: network failure" ;;
          8) why="wget: the server answered with an error, such as 404 Not Found" ;;
          *) why="wget exit status $status" ;;
        esac
        [ -z "$why" ] || die "cannot download $1 ($why): check --version, --base-url and the network"
      else
        die "neither curl nor wget is installed; install one of them and run this again"
      fi
      ;;
  esac
}

# ---- Download and verify ----

tmp="$(mktemp -d 2>/dev/null || mktemp -d -t o3sr-install)"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The checksums first: a release without this asset fails before a big download.
download "$base_url/SHA256SUMS" "$tmp/SHA256SUMS"
# sha256sum lines are "<hash>  <name>" ("<hash> *<name>" in binary mode).
expected="$(awk -v name="$asset" '$2 == name || $2 == "*" name { print $1; exit }' "$tmp/SHA256SUMS")"
if [ -z "$expected" ]; then
  hint="pick another --version"
  [ -z "$flavor" ] || hint="install the Bun build without --deno, or $hint"
  die "$base_url/SHA256SUMS lists no $asset, so that release has none: $hint"
fi

download "$base_url/$asset" "$tmp/$asset"
actual="$(sha256 "$tmp/$asset")"
if [ "$actual" != "$expected" ]; then
  rm -f "$tmp/$asset"
  die "checksum mismatch for $asset: SHA256SUMS says $expected, the download is $actual; it is corrupt or was tampered with, so it was deleted and nothing was installed"
fi

# ---- Install ----

mkdir -p "$prefix" 2>/dev/null || die "cannot create $prefix: choose another --prefix, or run as root"
target="$prefix/o3sr"
# Copy beside the target, then rename: a running o3sr is never half overwritten.
staged="$prefix/.o3sr.install.$$"
cp "$tmp/$asset" "$staged" 2>/dev/null || die "cannot write to $prefix: choose another --prefix, or run as root"
chmod 755 "$staged"
mv -f "$staged" "$target" || {
  rm -f "$staged"
  die "cannot replace $target: choose another --prefix, or run as root"
}

if ! installed="$("$target" --version 2>&1)"; then
  die "installed $target, but it does not run here: $installed (on Alpine or other musl systems, add glibc compatibility: apk add gcompat)"
fi
echo "installed $target: $installed"

case ":${PATH:-}:" in
  *":$prefix:"*) ;;
  *) echo "note: $prefix is not on your PATH; add it, e.g. export PATH=\"$prefix:\$PATH\"" ;;
esac
