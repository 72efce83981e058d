#!/usr/bin/env bash
# Starts a Garage cluster on loopback for the benchmarks: N nodes (one
# process each, replication factor min(N, 3)), one key, the buckets named.
#   bench/garage.sh DIR N BUCKET...
# Writes DIR/env (AWS_* for node 0's endpoint, and GARAGE_PIDS), which
# callers source; `kill $GARAGE_PIDS` stops the cluster. Needs `garage`
# (cargo install garage --locked --no-default-features --features bundled-libs,lmdb).
set -euo pipefail
dir=$1; n=$2; shift 2
garage=${CAIRN_GARAGE:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$garage" ] || { echo "needs garage: cargo install garage --locked --no-default-features --features bundled-libs,lmdb"; exit 1; }
rm -rf "$dir"; mkdir -p "$dir"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
key_id=GK0123456789abcdef01234567
key_secret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
# 2N free ports, all different: the sockets are held until all are chosen.
read -r -a ports <<< "$(python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' $((2 * n)))"
pids=()
s3_ports=()
for i in $(seq 0 $((n - 1))); do
  d=$dir/node$i; mkdir -p "$d/meta" "$d/data"
  s3=${ports[$((2 * i))]}; rpc=${ports[$((2 * i + 1))]}
  s3_ports+=("$s3")
  cat > "$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "lmdb"
replication_factor = $(( n < 3 ? n : 3 ))
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOF
  RUST_LOG=garage=warn "$garage" -c "$d/garage.toml" server > "$d/log" 2>&1 &
  pids+=($!)
done
g() { "$garage" -c "$dir/node0/garage.toml" "$@"; }
for _ in $(seq 100); do g status >/dev/null 2>&1 && break; sleep 0.2; done
ids=()
for i in $(seq 0 $((n - 1))); do
  for _ in $(seq 100); do
    id=$("$garage" -c "$dir/node$i/garage.toml" node id -q 2>/dev/null) && break
    sleep 0.2
  done
  ids+=("$id")
done
for id in "${ids[@]:1}"; do g node connect "$id" >/dev/null; done
for id in "${ids[@]}"; do g layout assign -z dc1 -c 10G "${id%%@*}" >/dev/null; done
g layout apply --version 1 >/dev/null
g key import --yes -n bench "$key_id" "$key_secret" >/dev/null
for b in "$@"; do
  for _ in $(seq 100); do g bucket create "$b" >/dev/null 2>&1 && break; sleep 0.3; done
  g bucket allow --read --write --owner "$b" --key bench >/dev/null
done
cat > "$dir/env" <<EOF
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export AWS_REGION=garage
export AWS_DEFAULT_REGION=garage
export AWS_ENDPOINT_URL=http://127.0.0.1:${s3_ports[0]}
export GARAGE_ENDPOINT=http://127.0.0.1:${s3_ports[0]}
export GARAGE_PIDS="${pids[*]}"
EOF
