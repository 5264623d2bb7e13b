#!/usr/bin/env bash
# Stop the zmqmr workers that start-workers.sh started, over ssh.
set -u

usage() {
    cat <<'EOF'
Usage: stop-workers.sh HOSTS_FILE [--grace SECONDS] [--run-dir DIR]

On every host of HOSTS_FILE (the file given to start-workers.sh), send
SIGTERM to the worker named by its pid file; a worker hands back its running
attempts and exits. One still running after the grace period gets SIGKILL
(with its process group). Prints one line per host (stopped, killed, not
running, or failed and why); exits 1 if any host failed, 2 on a usage error.

Only a pid that is alive and is a `zmqmr worker` process is signalled; a pid
file left by a process that is gone is removed.

Options:
  --grace SECONDS   time between SIGTERM and SIGKILL (default 10)
  --run-dir DIR     where the pid files are on the hosts (default ~/.zmqmr;
                    the same as given to start-workers.sh)
  -h, --help        this help

Environment: ZMQMR_SSH and ZMQMR_PARALLEL as for start-workers.sh.
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || exit 2
# shellcheck source=scripts/lab-common.sh
. "$here/lab-common.sh"

hosts_file="" grace=10 run_dir=""
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --grace) lab_need_value "$1" $#; grace=$2; shift 2 ;;
    --grace=*) grace=${1#*=}; shift ;;
    --run-dir) lab_need_value "$1" $#; run_dir=$2; shift 2 ;;
    --run-dir=*) run_dir=${1#*=}; shift ;;
    --)
        shift
        if [ $# -gt 1 ] || [ -n "$hosts_file" ]; then lab_usage_error "one hosts file only"; fi
        hosts_file=${1:-}
        break
        ;;
    -*) lab_usage_error "unknown option $1" ;;
    *)
        [ -z "$hosts_file" ] || lab_usage_error "one hosts file only (got $hosts_file and $1)"
        hosts_file=$1
        shift
        ;;
    esac
done
[ -n "$hosts_file" ] || lab_usage_error "no hosts file given"
case $grace in '' | *[!0-9]*) lab_usage_error "--grace needs a whole number of seconds" ;; esac

lab_parse_hosts "$hosts_file"
lab_ssh_init

# shellcheck disable=SC2317 # called through lab_on_hosts
stop_program() {
    lab_remote_program stop ROLE=worker RUN_DIR="$run_dir" GRACE="$grace"
}

lab_on_hosts stop_program || exit 1
exit 0
