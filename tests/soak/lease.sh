#!/usr/bin/env bash
# Lease soak: runs the lease race test (lease::tests::
# never_two_holders_where_the_last_writer_wins in crates/maint/src/lease.rs)
# with CAIRN_LEASE_ROUNDS=2000 instead of the 25 rounds CI runs. Four threads
# reach for the prune lease at the same instant on a store where the last
# writer of a name wins (as on Garage), release it, and reach again; the test
# fails the moment two of them hold it at once. A race between a listing and
# a withdrawn claim (since fixed) failed it once in CI and never on demand,
# so only a long run gives confidence. Takes about 5 minutes.
#
#   tests/soak/lease.sh              # 2000 rounds
#   CAIRN_LEASE_ROUNDS=10000 tests/soak/lease.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CAIRN_LEASE_ROUNDS="${CAIRN_LEASE_ROUNDS:-2000}"
exec cargo nextest run -p cairn-maint \
  -E 'test(=lease::tests::never_two_holders_where_the_last_writer_wins)' --no-capture "$@"
