#!/bin/sh
# The packet-path backends side by side over a veth pair (the NIC stand-in
# of a host without a spare NIC): the node in namespace sfub-node on CPU 0,
# sfu-loadgen in namespace sfub-gen on CPU 1, one run per backend and load,
# all in this one invocation. Needs root and release binaries:
#   cargo build --release -p control -p bench --bins
#   sh bench/scripts/veth-backends.sh [subscribers... | seed] > veth.log
# (`seed`: the seed meeting, sfu-loadgen --scenario seed-meeting).
# IOS="socket xdp" picks backends; PERF=1 records a CPU-0 profile of each
# run into /tmp/veth-perf-IO-LOAD.data.
# Prints one JSON line per run (sfu-loadgen --json, plus the backend, the
# node's CPU-0 busy share from /proc/stat and its AF_XDP counters).
set -eu
BIN=${CARGO_TARGET_DIR:-target}/release
LOADS=${*:-"100 200 300"}
DURATION=${DURATION:-10}
SECRET=veth-bench-secret-0123456789abcdef
NODE=10.210.0.1
GEN=10.210.0.2

cleanup() {
    [ -n "${SFU_PID:-}" ] && kill "$SFU_PID" 2>/dev/null || true
    ip netns del sfub-node 2>/dev/null || true
    ip netns del sfub-gen 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add sfub-node
ip netns add sfub-gen
ip link add vnode type veth peer name vgen
ip link set vnode netns sfub-node
ip link set vgen netns sfub-gen
ip -n sfub-node addr add $NODE/30 dev vnode
ip -n sfub-gen addr add $GEN/30 dev vgen
for ns in sfub-node sfub-gen; do ip -n $ns link set lo up; done
ip -n sfub-node link set vnode up
ip -n sfub-gen link set vgen up
# The load generator's receive softirq on its own core (RPS), as a NIC's
# interrupt would be on the client's host.
ip netns exec sfub-gen sh -c 'echo 2 > /sys/class/net/vgen/queues/rx-0/rps_cpus'

cpu0() { awk '/^cpu0 /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

for io in ${IOS:-socket uring xdp}; do
    for subs in $LOADS; do
        ip netns exec sfub-node taskset -c 0 "$BIN/sfu" --workers 1 --cpus 0 --io $io \
            --media-ip $NODE --control-addr $NODE:7880 --api-secret "$SECRET" \
            > /tmp/veth-sfu-$io.log 2>&1 &
        SFU_PID=$!
        sleep 1.5
        set -- $(cpu0)
        b0=$1; t0=$2
        if [ "$subs" = seed ]; then
            load="--scenario seed-meeting"
        else
            load="--rooms 1 --publishers 10 --subscribers $subs --video-kbps 2000"
        fi
        if [ -n "${PERF:-}" ]; then
            # A CPU-0 profile of the middle of the run (PERF=1).
            (sleep 3; perf record -q -C 0 -g -o /tmp/veth-perf-$io-$subs.data -- sleep 4 \
                >/dev/null 2>&1) &
        fi
        # shellcheck disable=SC2086
        out=$(ip netns exec sfub-gen taskset -c 1 "$BIN/sfu-loadgen" \
            --control http://$NODE:7880 --api-secret "$SECRET" --bind $GEN $load \
            --duration "$DURATION" --cpu 1 --json 2>/tmp/veth-gen-$io.log | tail -1)
        set -- $(cpu0)
        busy=$(awk -v b="$(( $1 - b0 ))" -v t="$(( $2 - t0 ))" 'BEGIN{printf "%.1f", 100*b/t}')
        tok=$("$BIN/sfu" token --api-secret "$SECRET" --room '*' --grant admin)
        xdp=$(ip netns exec sfub-gen curl -s -H "authorization: Bearer $tok" \
            http://$NODE:7880/metrics | grep -E '^sfu_(af_xdp|io_)[a-z_]*(_total)?\{worker="0"\}' \
            | sed 's/{worker="0"}//' | tr '\n' ' ')
        echo "{\"io\":\"$io\",\"load\":\"$subs\",\"cpu0_busy_percent\":$busy,\"node\":\"$xdp\",\"loadgen\":$out}"
        kill $SFU_PID; wait $SFU_PID 2>/dev/null || true
        SFU_PID=
        sleep 0.5
    done
done
