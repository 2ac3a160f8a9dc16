#!/usr/bin/env bash
# `make demo-cluster`: SMLT on a real local Redis Cluster.
#
# Starts 3 masters and 3 replicas (redis-server --cluster-enabled yes on free loopback ports),
# `smlt serve` for the whole cluster, and trains digits on it. Mid-run it kills the master of the
# job's home lane (its replica takes over), then adds a 7th node and rebalances slots onto it
# (redis-cli --cluster add-node / rebalance), while training goes on. At the end it compares the
# run's param_digest with the same job computed in one process (--reference).
# Everything it starts is stopped on exit, on error and on Ctrl-C.
set -euo pipefail

SMLT=${SMLT:-.build/debug/smlt}
STEPS=${STEPS:-600}
DIR=$(mktemp -d /tmp/smlt-demo-cluster.XXXXXX)
PIDS=()
declare -A PORT_PID

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_node() { # name: starts a node, sets NODE_PORT
    local bus
    NODE_PORT=$(free_port)
    bus=$(free_port)
    mkdir -p "$DIR/$1"
    redis-server --port "$NODE_PORT" --bind 127.0.0.1 --cluster-enabled yes --cluster-port "$bus" \
        --cluster-config-file "$DIR/$1/nodes.conf" --cluster-node-timeout 1000 --dir "$DIR/$1" \
        --save "" --appendonly no --logfile "$DIR/$1/redis.log" </dev/null >/dev/null 2>&1 &
    PIDS+=($!)
    PORT_PID[$NODE_PORT]=$!
}

wait_ok() { # port
    for _ in $(seq 100); do
        redis-cli -p "$1" cluster info 2>/dev/null | grep -q cluster_state:ok && return 0
        sleep 0.2
    done
    echo "the cluster did not become healthy" >&2
    exit 1
}

version() { # the lowest parameter version of job $JOB's chunks (or -1)
    "$SMLT" admin chunks --redis "$SEEDS" --job "$JOB" --json 2>/dev/null |
        python3 -c 'import json,sys
try: v = [c["version"] for c in json.load(sys.stdin) if c.get("version") is not None]
except ValueError: v = []
print(min(v) if v else -1)'
}

PORTS=()
for i in 0 1 2 3 4 5; do
    start_node "node$i"
    PORTS+=("$NODE_PORT")
done
for p in "${PORTS[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "== creating a 3-master / 3-replica cluster on ports ${PORTS[*]}"
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 1 --cluster-yes \
    >"$DIR/create.log"
wait_ok "${PORTS[0]}"
SEEDS="cluster://127.0.0.1:${PORTS[0]}"
JOB=demo-cluster

"$SMLT" serve --redis "$SEEDS" </dev/null >/dev/null 2>"$DIR/serve.log" &
PIDS+=($!)
echo "== smlt train --redis $SEEDS --job $JOB --dataset digits --workers 4 --steps $STEPS --chunk-elements 128"
"$SMLT" train --redis "$SEEDS" --job "$JOB" --dataset digits --workers 4 --steps "$STEPS" --chunk-elements 128 --json \
    </dev/null >"$DIR/train.json" 2>"$DIR/train.err" &
TRAIN=$!
PIDS+=("$TRAIN")

until [ "$(version)" -ge $((STEPS / 5)) ]; do
    kill -0 "$TRAIN" 2>/dev/null || { cat "$DIR/train.err"; exit 1; }
    sleep 0.2
done
echo
"$SMLT" admin shards --redis "$SEEDS"
HOME_LANE=$("$SMLT" admin jobs --redis "$SEEDS" --json |
    python3 -c 'import json,sys; print([j for j in json.load(sys.stdin) if j["job"]==sys.argv[1]][0]["shards"][0].rsplit("/",1)[1])' "$JOB")
MASTER=$("$SMLT" admin shards --redis "$SEEDS" --json |
    python3 -c 'import json,sys; print([n for n in json.load(sys.stdin)["nodes"] if sys.argv[1] in n["lanes"]][0]["endpoint"].rsplit(":",1)[1])' "$HOME_LANE")
echo
echo "== at version $(version): killing 127.0.0.1:$MASTER, the master of the home lane $HOME_LANE"
kill -9 "${PORT_PID[$MASTER]}"
wait "${PORT_PID[$MASTER]}" 2>/dev/null || true
ALIVE=$(for p in "${PORTS[@]}"; do [ "$p" != "$MASTER" ] && echo "$p"; done | head -1)
SEEDS="cluster://127.0.0.1:$ALIVE"
until [ "$(version)" -ge $((STEPS / 2)) ]; do
    kill -0 "$TRAIN" 2>/dev/null || break
    sleep 0.2
done
start_node node6
NEW=$NODE_PORT
for _ in $(seq 50); do redis-cli -p "$NEW" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "== at version $(version): adding 127.0.0.1:$NEW and rebalancing slots onto it"
redis-cli --cluster add-node "127.0.0.1:$NEW" "127.0.0.1:$ALIVE" >"$DIR/add.log"
sleep 2
redis-cli --cluster rebalance "127.0.0.1:$ALIVE" --cluster-use-empty-masters >"$DIR/rebalance.log" 2>&1 ||
    { echo "rebalance failed:"; tail -5 "$DIR/rebalance.log"; }
wait "$TRAIN" || { echo "training failed:"; tail -20 "$DIR/train.err"; exit 1; }
echo
"$SMLT" admin shards --redis "cluster://127.0.0.1:$ALIVE" || true
DIGEST=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["param_digest"], d["restarts"], round(d["test_accuracy"], 4))' "$DIR/train.json")
REFERENCE=$("$SMLT" train --reference --dataset digits --workers 4 --steps "$STEPS" --chunk-elements 128 --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["param_digest"])')
read -r D RESTARTS ACC <<<"$DIGEST"
echo
echo "cluster run: param_digest $D, test accuracy $ACC, $RESTARTS worker restarts"
echo "reference:   param_digest $REFERENCE"
[ "$D" = "$REFERENCE" ] && echo "identical: the failover and the rebalance changed nothing" || { echo "DIFFERENT"; exit 1; }
