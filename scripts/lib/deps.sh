# Sourced by scripts/setup and scripts/test: what a fresh Debian/Ubuntu machine lacks, found and
# installed with apt, each named before it is installed.
#
# EDEN_SYSROOT (default: /) is where the library checks look, so that a test can point them at
# a made-up layout.

# bindgen loads libclang.so or libclang-N.so itself; libclang-cpp (which LLVM installs on its own)
# is another library and does not do.
has_libclang() {
  local root="${EDEN_SYSROOT:-/}" f
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  for f in "$root"/usr/lib/llvm-*/lib/libclang.so* "$root"/usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
    "$root"/usr/lib/*-linux-gnu/libclang.so* "$root"/usr/lib/*-linux-gnu/libclang-[0-9]*.so* \
    "$root"/usr/lib64/libclang.so* "$root"/usr/lib/libclang.so*; do
    [ -e "$f" ] && return 0
  done
  return 1
}

# install_missing WHAT PACKAGE [WHAT PACKAGE ...]: installs each PACKAGE whose WHAT is missing.
# WHAT is a command name, or `libclang`, or `python3-venv` / `python3-pip` (modules).
install_missing() {
  local need=() what pkg missing
  while [ $# -ge 2 ]; do
    what=$1 pkg=$2 missing=0
    shift 2
    case "$what" in
      libclang) has_libclang || missing=1 ;;
      python3-venv) python3 -c 'import ensurepip, venv' 2>/dev/null || missing=1 ;;
      python3-pip) python3 -m pip --version >/dev/null 2>&1 || missing=1 ;;
      *) command -v "$what" >/dev/null 2>&1 || missing=1 ;;
    esac
    # One package can cover several missing things: name it once.
    if [ $missing = 1 ] && [[ " ${need[*]-} " != *" $pkg "* ]]; then
      need+=("$pkg")
    fi
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$(basename "$0"): missing ${need[*]}, and there is no apt-get to install them with: install them, then run this again" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "$(basename "$0"): missing ${need[*]}: install them as root (no sudo here)" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "$(basename "$0"): installing ${need[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || {
    echo "$(basename "$0"): apt-get could not install ${need[*]}" >&2
    exit 1
  }
}
