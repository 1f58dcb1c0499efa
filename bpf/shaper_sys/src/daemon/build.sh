#!/bin/sh
# lqos.bpf reference pipeline: written for this project (see bpf/README.md).
# Build shaperd against one build of the reference pipeline (module lqos.bpf.pipeline, spec reference):
#   build.sh BUILD_DIR OUTPUT
# BUILD_DIR holds wrapper.h, shaper_kern_skel.h and libshaperwrap.a; OUTPUT is written atomically.
# CC (default clang) and ARCHIVE (default BUILD_DIR/libshaperwrap.a) may be set in the environment.
set -eu
if [ $# -ne 2 ]; then
	echo "usage: $0 BUILD_DIR OUTPUT" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
build=$1
out=$2
archive=${ARCHIVE:-$build/libshaperwrap.a}
for f in "$build/wrapper.h" "$build/shaper_kern_skel.h" "$archive"; do
	if [ ! -f "$f" ]; then
		echo "$0: $f is missing: give a build folder of the reference pipeline (e.g. .../current)" >&2
		exit 2
	fi
done
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"${CC:-clang}" -O2 -g -Wall -Wextra -Werror -std=gnu11 -I "$build" -I "$here" \
	-o "$tmp" "$here/shaperd.c" "$here/hooks.c" "$here/config.c" "$archive" -lbpf
mv -f "$tmp" "$out"
trap - EXIT
