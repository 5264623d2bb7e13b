#!/usr/bin/env bash
# Start a zmqmr master in the background on this machine (or stop it: --stop).
set -u

usage() {
    cat <<'EOF'
Usage: start-master.sh [options] [-- MASTER_ARGS...]
       start-master.sh --stop [--grace SECONDS] [--run-dir DIR]

Start `PYTHON -m zmqmr master` in the background on this machine, unless one
started this way is already running, with a pid file and a log. Prints one
line (started, already running, or failed and why) and exits 1 on failure,
2 on a usage error.

Options:
  --bind ADDR         address workers connect to (zmqmr's default:
                      tcp://127.0.0.1:5555, this machine only)
  --client-bind ADDR  address clients connect to (default tcp://127.0.0.1:5556)
  --keys DIR          key directory (zmqmr keygen): CURVE on
  --insecure          bind beyond loopback without keys (anyone who reaches
                      the master can run code on every worker)
  --python PATH       Python that can import zmqmr (default python3)
  --run-dir DIR       where the pid file and log go (default ~/.zmqmr)
  --stop              stop the master started here: SIGTERM, SIGKILL after
                      --grace SECONDS (default 10)
  -h, --help          this help
  -- MASTER_ARGS      further arguments for `zmqmr master`,
                      e.g. -- --worker-timeout 20

Files: RUN_DIR/master-NODE.pid and RUN_DIR/master-NODE.log (appended to),
NODE being `uname -n`.
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || exit 2
# shellcheck source=scripts/lab-common.sh
. "$here/lab-common.sh"

bind="" client_bind="" keys="" insecure=0 python=python3 run_dir="" stop=0 grace=10
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --bind) lab_need_value "$1" $#; bind=$2; shift 2 ;;
    --bind=*) bind=${1#*=}; shift ;;
    --client-bind) lab_need_value "$1" $#; client_bind=$2; shift 2 ;;
    --client-bind=*) client_bind=${1#*=}; shift ;;
    --keys) lab_need_value "$1" $#; keys=$2; shift 2 ;;
    --keys=*) keys=${1#*=}; shift ;;
    --insecure) insecure=1; shift ;;
    --python) lab_need_value "$1" $#; python=$2; shift 2 ;;
    --python=*) python=${1#*=}; shift ;;
    --run-dir) lab_need_value "$1" $#; run_dir=$2; shift 2 ;;
    --run-dir=*) run_dir=${1#*=}; shift ;;
    --stop) stop=1; shift ;;
    --grace) lab_need_value "$1" $#; grace=$2; shift 2 ;;
    --grace=*) grace=${1#*=}; shift ;;
    --) shift; break ;;
    *) lab_usage_error "unknown argument $1" ;;
    esac
done
[ -n "$python" ] || lab_usage_error "--python needs a value"
case $grace in '' | *[!0-9]*) lab_usage_error "--grace needs a whole number of seconds" ;; esac
wait_s=${ZMQMR_START_WAIT:-5}
lab_is_count "$wait_s" || lab_die "ZMQMR_START_WAIT must be a positive integer"

out=$(mktemp "${TMPDIR:-/tmp}/zmqmr-master.XXXXXX") || lab_die "cannot make a temporary file"
err=$(mktemp "${TMPDIR:-/tmp}/zmqmr-master.XXXXXX") || lab_die "cannot make a temporary file"
# shellcheck disable=SC2064 # expand the names now
trap "rm -f '$out' '$err'" EXIT

if [ "$stop" = 1 ]; then
    [ $# -eq 0 ] || lab_usage_error "--stop takes no master arguments"
    lab_remote_program stop ROLE=master RUN_DIR="$run_dir" GRACE="$grace" | sh -s >"$out" 2>"$err"
    lab_report master "$out" "$err" "$?" || exit 1
    exit 0
fi

args=()
[ -z "$bind" ] || args+=(--bind "$bind")
[ -z "$client_bind" ] || args+=(--client-bind "$client_bind")
[ -z "$keys" ] || args+=(--keys "$keys")
[ "$insecure" = 0 ] || args+=(--insecure)
args+=("$@")

# The master logs "master: workers connect to ..." once its sockets are bound.
lab_remote_program start ROLE=master RUN_DIR="$run_dir" PY="$python" KEYS="$keys" DATA_DIR= \
    WAIT="$wait_s" READY="workers connect to" -- ${args[@]+"${args[@]}"} |
    sh -s >"$out" 2>"$err"
lab_report master "$out" "$err" "$?" || exit 1
exit 0
