#!/bin/bash
# End to end: build a busybox bundle from the host's busybox-static and run it
# with kobako-runtime.
set -euo pipefail
bundle=$(mktemp -d /tmp/kobako-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for tool in sh echo ps hostname cat ls; do ln -s busybox "$bundle/rootfs/bin/$tool"; done
( cd "$bundle" && kobako-runtime spec && sed -i 's/"sh"/"echo", "hello from kobako"/; s/"terminal": true/"terminal": false/' config.json )
kobako-runtime run --bundle "$bundle" "demo-$$"
