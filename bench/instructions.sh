#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of bench-ours (macros) and
# bench-handwired (the same routes without them) under the same fixed load,
# so the macros' cost is settled by a count that does not depend on how busy
# the machine is.
#
#   cargo build --release -p bench && bash bench/instructions.sh [runs]
#
# BIN_DIR=<dir> counts other builds of the two servers, for example one with
# CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 and CARGO_TARGET_DIR=<dir>/.. .
#
# The load, per server: 3 × GET /events/fast?n=100000, then 20 subscribers of
# /events/broadcast receiving 100 events published 30 ms apart (longer than
# the batch window, so each event is its own write in both servers and the
# work does not depend on timing). One Tokio worker thread, so that thread
# scheduling does not change the count. Talks only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2}
bin=${BIN_DIR:-target/release}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)"; exit 1; }
[ -x "$bin/bench-ours" ] && [ -x "$bin/bench-handwired" ] || {
    echo "build first: cargo build --release -p bench"
    exit 1
}
out=${KEEP:-$(mktemp -d)}
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

count() { # server binary name, run number -> prints total instructions
    local name=$1 run=$2 port
    port=$(free_port)
    PORT=$port TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/$name.$run" \
        "$bin/$name" >"$out/$name.$run.log" 2>&1 &
    local server=$!
    for _ in $(seq 1 600); do
        curl -s -o /dev/null "http://127.0.0.1:$port/events/fast?n=1" && break
        sleep 0.1
    done
    # Count each phase on its own: start from zero, dump after each.
    callgrind_control --zero "$server" >/dev/null
    for _ in 1 2 3; do
        curl -s -o /dev/null --max-time 120 "http://127.0.0.1:$port/events/fast?n=100000"
    done
    callgrind_control --dump=fast "$server" >/dev/null
    local subscribers=()
    for _ in $(seq 1 20); do
        curl -sN -o /dev/null --max-time 30 "http://127.0.0.1:$port/events/broadcast" &
        subscribers+=($!)
    done
    # Wait until all 20 are subscribed (the POST answers with the count reached).
    for _ in $(seq 1 300); do
        reached=$(curl -s -X POST --data w "http://127.0.0.1:$port/events/broadcast" || echo 0)
        [ "${reached:-0}" -ge 20 ] 2>/dev/null && break
        sleep 0.1
    done
    for seq in $(seq 1 100); do
        curl -s -o /dev/null -X POST --data "$seq 0" "http://127.0.0.1:$port/events/broadcast"
        sleep 0.03
    done
    kill "${subscribers[@]}" 2>/dev/null || true
    wait "${subscribers[@]}" 2>/dev/null || true
    sleep 0.5
    callgrind_control --dump=fan-out "$server" >/dev/null
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
    # Dumps are numbered in order: .1 the fast phase, .2 the fan-out phase.
    for phase in 1 2; do
        grep -h "^summary:\|^totals:" "$out/$name.$run.$phase" | head -1 | awk '{printf "%s ", $2}'
    done
}

printf '| run | phase | bench-ours (macros) | bench-handwired | ratio |\n|---|---|---|---|---|\n'
for run in $(seq 1 "$runs"); do
    read -r ours_fast ours_fan <<<"$(count bench-ours "$run")"
    read -r hand_fast hand_fan <<<"$(count bench-handwired "$run")"
    for phase in fast fan-out; do
        if [ "$phase" = fast ]; then ours=$ours_fast hand=$hand_fast; else ours=$ours_fan hand=$hand_fan; fi
        ratio=$(python3 -c "print(f'{$ours / $hand:.4f}')")
        printf '| %s | %s | %s | %s | %s× |\n' "$run" "$phase" "$ours" "$hand" "$ratio"
    done
done
