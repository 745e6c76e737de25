#!/bin/bash
# build.sh: build Cube's guest kernel from Debian's linux-source-6.1 into
# $CACHE/kernel/<hash>/{vmlinux,config,release}.
#
# <hash> is the first 16 hex digits of sha256(config.fragment, this script,
# "linux-source-6.1 <version>\n"), the same as kernel.Hash() in Go. The
# result appears atomically (a staging dir renamed into place), so a
# half-built kernel is never found. Progress goes to stdout as
# "cube-kernel: phase <name>" lines, then make's own "  CC ..." lines.
#
# Environment:
#   CACHE              cache root (default /var/cache/cube)
#   FRAGMENT           config fragment (default: config.fragment beside this script)
#   LINUX_SOURCE       source tarball (default /usr/src/linux-source-6.1.tar.xz)
#   JOBS               make -j (default: nproc)
#   CUBE_KERNEL_LOCKED set to 1 by a caller that already holds the build lock
#   CUBE_KERNEL_HASH   the hash the caller expects (checked)
# Arguments: --print-hash prints the hash and exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
script="$here/$(basename "$0")"
CACHE=${CACHE:-/var/cache/cube}
FRAGMENT=${FRAGMENT:-$here/config.fragment}
LINUX_SOURCE=${LINUX_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
JOBS=${JOBS:-$(nproc)}

say() { echo "cube-kernel: $*"; }
die() { echo "cube-kernel: error: $*" >&2; exit 1; }

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) ||
	die "linux-source-6.1 is not installed (apt-get install linux-source-6.1)"
hash=$({ cat "$FRAGMENT" "$script"; printf 'linux-source-6.1 %s\n' "$srcver"; } |
	sha256sum | cut -c1-16)
if [ "${1:-}" = "--print-hash" ]; then
	echo "$hash"
	exit 0
fi
# The Go side (kernel.Hash) computes the same key; a mismatch would cache
# the kernel where no one looks for it.
if [ -n "${CUBE_KERNEL_HASH:-}" ] && [ "$CUBE_KERNEL_HASH" != "$hash" ]; then
	die "hash mismatch: script says $hash, caller expects $CUBE_KERNEL_HASH"
fi

[ -r "$LINUX_SOURCE" ] || die "$LINUX_SOURCE is missing (apt-get install linux-source-6.1)"
for tool in make gcc flex bison bc; do
	command -v "$tool" >/dev/null || die "$tool is missing (make deps installs the kernel build packages)"
done

kdir="$CACHE/kernel"
dest="$kdir/$hash"
mkdir -p "$kdir"

# One build per cache dir at a time, across processes.
if [ "${CUBE_KERNEL_LOCKED:-}" != 1 ]; then
	exec 9>>"$kdir/.lock"
	say "phase lock"
	flock 9
fi
if [ -f "$dest/vmlinux" ]; then
	say "phase done $dest/vmlinux (cached)"
	exit 0
fi

work=$(mktemp -d "$kdir/.build-$hash.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "hash $hash source $srcver work $work"

say "phase unpack"
tar -xJf "$LINUX_SOURCE" -C "$work"
src="$work/linux-source-6.1"
[ -d "$src" ] || die "unexpected layout in $LINUX_SOURCE (no linux-source-6.1/)"

say "phase config"
make -C "$src" -s tinyconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$FRAGMENT" >/dev/null
make -C "$src" -s olddefconfig

# Every option the fragment asks for must have stuck: Kconfig silently
# drops an option whose dependencies are unmet.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*)
		grep -qxF -- "$line" "$src/.config" || { echo "cube-kernel: option did not stick: $line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$src/.config" || echo unset))" >&2; bad=1; }
		;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		if grep -qE "^$opt=" "$src/.config"; then
			echo "cube-kernel: option should be off: $(grep -E "^$opt=" "$src/.config")" >&2; bad=1
		fi
		;;
	esac
done <"$FRAGMENT"
[ "$bad" = 0 ] || die "the config fragment did not apply; fix guest/kernel/config.fragment"

say "phase compile"
# Reproducible, and the build host's name does not reach /proc/version.
export KBUILD_BUILD_USER=cube KBUILD_BUILD_HOST=cube KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 1970"
make -C "$src" -j"$JOBS" vmlinux
release=$(make -C "$src" -s kernelrelease)

say "phase install"
stage="$work/out"
mkdir "$stage"
cp "$src/vmlinux" "$stage/vmlinux"
cp "$src/.config" "$stage/config"
echo "$release" >"$stage/release"
sync "$stage/vmlinux" "$stage/config" "$stage/release"
if ! mv -T "$stage" "$dest" 2>/dev/null; then
	[ -f "$dest/vmlinux" ] || die "cannot install into $dest"
fi
sync "$kdir"
say "phase done $dest/vmlinux release $release"
