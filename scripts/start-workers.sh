#!/usr/bin/env bash
# Start a zmqmr worker on every host of a hosts file, over ssh.
set -u

usage() {
    cat <<'EOF'
Usage: start-workers.sh HOSTS_FILE --master ADDR [options] [-- WORKER_ARGS...]

Start `PYTHON -m zmqmr worker` in the background on every host listed in
HOSTS_FILE, over ssh, unless one is already running there. Prints one line
per host (started, already running, or failed and why); exits 1 if any host
failed, 2 on a usage error.

HOSTS_FILE: one host per line, as ssh knows it (name, address, user@host or
an alias from ~/.ssh/config), optionally followed by a slot count for that
host; '#' starts a comment. Example:

    # lab room 2
    lab-01        # --slots or the worker's default
    lab-02  4     # four executor processes on this one

Options:
  --master ADDR     the master's worker address, e.g. tcp://lab-00:5555 (required)
  --keys DIR        key directory on the hosts (zmqmr keygen): CURVE on
  --insecure        no keys, beyond loopback (anyone who reaches the workers
                    can run code as you: a network you trust completely only)
  --python PATH     Python on the hosts that can import zmqmr (default python3;
                    give a venv's bin/python as an absolute path)
  --data-dir DIR    where workers keep map outputs (default: a temporary
                    directory); the worker empties it when it starts
  --slots N         executor processes per host without a count in HOSTS_FILE
  --run-dir DIR     where pid and log files go on the hosts (default ~/.zmqmr);
                    give stop-workers.sh the same
  -h, --help        this help
  -- WORKER_ARGS    further arguments for `zmqmr worker`, e.g. -- --set fetch_retries=5

On each host the worker writes RUN_DIR/worker-NODE.pid and appends to
RUN_DIR/worker-NODE.log, NODE being that machine's `uname -n`. A host counts
as running when that pid is alive and is a `zmqmr worker` process.

Environment:
  ZMQMR_SSH         the ssh command, split on blanks (default:
                    "ssh -o BatchMode=yes -o ConnectTimeout=10"); it gets
                    HOST and `sh -s` and must pass standard input through
  ZMQMR_PARALLEL    hosts contacted at once (default 32)
  ZMQMR_START_WAIT  seconds to watch a new worker before calling it started
                    (default 2)
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || exit 2
# shellcheck source=scripts/lab-common.sh
. "$here/lab-common.sh"

hosts_file="" master="" keys="" insecure=0 python=python3 data_dir="" slots="" run_dir=""
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --master) lab_need_value "$1" $#; master=$2; shift 2 ;;
    --master=*) master=${1#*=}; shift ;;
    --keys) lab_need_value "$1" $#; keys=$2; shift 2 ;;
    --keys=*) keys=${1#*=}; shift ;;
    --insecure) insecure=1; shift ;;
    --python) lab_need_value "$1" $#; python=$2; shift 2 ;;
    --python=*) python=${1#*=}; shift ;;
    --data-dir) lab_need_value "$1" $#; data_dir=$2; shift 2 ;;
    --data-dir=*) data_dir=${1#*=}; shift ;;
    --slots) lab_need_value "$1" $#; slots=$2; shift 2 ;;
    --slots=*) slots=${1#*=}; shift ;;
    --run-dir) lab_need_value "$1" $#; run_dir=$2; shift 2 ;;
    --run-dir=*) run_dir=${1#*=}; shift ;;
    --) shift; break ;;
    -*) lab_usage_error "unknown option $1" ;;
    *)
        [ -z "$hosts_file" ] || lab_usage_error "one hosts file only (got $hosts_file and $1)"
        hosts_file=$1
        shift
        ;;
    esac
done
extra=("$@")
[ -n "$hosts_file" ] || lab_usage_error "no hosts file given"
[ -n "$master" ] || lab_usage_error "--master ADDR is required (the master's worker address)"
[ -n "$python" ] || lab_usage_error "--python needs a value"
[ -z "$slots" ] || lab_is_count "$slots" || lab_usage_error "--slots needs a positive integer"
wait_s=${ZMQMR_START_WAIT:-2}
lab_is_count "$wait_s" || lab_die "ZMQMR_START_WAIT must be a positive integer"

lab_parse_hosts "$hosts_file"
lab_ssh_init

# The program for host number $1.
# shellcheck disable=SC2317 # called through lab_on_hosts
worker_program() {
    local n=${LAB_SLOTS[$1]:-$slots}
    local -a args=(--master "$master")
    [ -z "$n" ] || args+=(--slots "$n")
    [ -z "$data_dir" ] || args+=(--data-dir "$data_dir")
    [ -z "$keys" ] || args+=(--keys "$keys")
    [ "$insecure" = 0 ] || args+=(--insecure)
    args+=(${extra[@]+"${extra[@]}"})
    lab_remote_program start ROLE=worker RUN_DIR="$run_dir" PY="$python" KEYS="$keys" \
        DATA_DIR="$data_dir" WAIT="$wait_s" READY= -- "${args[@]}"
}

lab_on_hosts worker_program || exit 1
exit 0
