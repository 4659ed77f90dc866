#!/bin/sh
# gen_xen32_layout.sh CLANG SOURCE OUTPUT: compiles SOURCE for i386 with Xen's headers and turns
# each `hvx__<struct>__<field>` constant into a C++ initializer row {"struct.field", value}.
set -eu
clang=$1 src=$2 out=$3
"$clang" -m32 -ffreestanding -I/usr/include -S -emit-llvm -o - "$src" |
  sed -n 's/^@hvx__\([A-Za-z0-9_]*\)__\([A-Za-z0-9_]*\) = .*constant i32 \(-\{0,1\}[0-9]*\).*/{"\1.\2", \3},/p' \
  > "$out.tmp"
test -s "$out.tmp"
mv "$out.tmp" "$out"
