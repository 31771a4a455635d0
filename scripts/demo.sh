#!/bin/bash
# End to end: start kobakod in the background (unless one answers already), build the
# busybox image from the host's busybox-static and import it through the API, then run
# a container with the kobako CLI.
set -euo pipefail
if ! kobako version >/dev/null 2>&1; then
    nohup kobakod >>/var/log/kobakod.log 2>&1 &
    for _ in $(seq 100); do
        kobako version >/dev/null 2>&1 && break
        sleep 0.1
    done
fi
kobako image bootstrap busybox
kobako run --rm busybox echo hello from kobako
