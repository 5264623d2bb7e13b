# shellcheck shell=bash
# Shared by start-workers.sh, stop-workers.sh and start-master.sh; sourced, not run.
#
# The remote side of every script is one POSIX sh program (lab_remote_program)
# fed to `sh -s` on standard input, over ssh for the workers and locally for
# the master. Settings reach it as shell assignments written at its top, so
# nothing has to survive the remote user's login shell except the words
# `sh -s`. It answers with one line on standard output:
#
#   ZMQMR-RESULT started PID NODE LOGFILE
#   ZMQMR-RESULT running PID NODE LOGFILE
#   ZMQMR-RESULT stopped PID NODE       (exited within the grace period)
#   ZMQMR-RESULT killed PID NODE        (needed SIGKILL)
#   ZMQMR-RESULT stale PID NODE         (pid file of a process that is gone)
#   ZMQMR-RESULT notrunning - NODE
#   ZMQMR-RESULT failed WHY...
#
# NODE is `uname -n` on that machine: pid and log files are named after it, so
# machines that share a home directory (NFS) do not overwrite each other's.

lab_prog=${0##*/}

lab_die() {
    printf '%s: %s\n' "$lab_prog" "$*" >&2
    exit 2
}

lab_usage_error() {
    printf '%s: %s\n' "$lab_prog" "$*" >&2
    printf "Try '%s --help'.\n" "$lab_prog" >&2
    exit 2
}

# lab_need_value OPTION ARGC: an option that takes a value must have one.
lab_need_value() {
    [ "$2" -ge 2 ] || lab_usage_error "$1 needs a value"
}

lab_is_count() { # a positive decimal integer
    case $1 in '' | *[!0-9]* | 0*) return 1 ;; esac
    return 0
}

# shq WORD: WORD quoted for sh (single quotes, with ' written as '\'').
shq() {
    local s=$1
    printf "'%s'" "${s//\'/\'\\\'\'}"
}

# lab_parse_hosts FILE: fills LAB_HOSTS and LAB_SLOTS (empty: the default).
# One host per line, optionally followed by a slot count; '#' starts a comment.
# A malformed line is an error (exit 2) before anything is started.
lab_parse_hosts() {
    local file=$1 line n=0 name slots extra i dup
    LAB_HOSTS=()
    LAB_SLOTS=()
    if [ ! -f "$file" ] || [ ! -r "$file" ]; then lab_die "cannot read the hosts file $file"; fi
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=${line%%#*}
        line=${line//$'\r'/}
        read -r name slots extra <<<"$line" || true
        [ -n "${name:-}" ] || continue
        [ -z "${extra:-}" ] || lab_die "$file:$n: expected 'HOST [SLOTS]', got: $line"
        if [ -n "${slots:-}" ] && ! lab_is_count "$slots"; then
            lab_die "$file:$n: the slot count must be a positive integer, got '$slots'"
        fi
        case $name in -*) lab_die "$file:$n: a host name cannot start with '-': $name" ;; esac
        dup=0
        for i in "${!LAB_HOSTS[@]}"; do
            if [ "${LAB_HOSTS[$i]}" = "$name" ]; then dup=1; fi
        done
        if [ "$dup" = 1 ]; then
            printf '%s: %s:%d: %s is listed twice; using its first line\n' \
                "$lab_prog" "$file" "$n" "$name" >&2
            continue
        fi
        LAB_HOSTS+=("$name")
        LAB_SLOTS+=("${slots:-}")
    done <"$file"
    [ "${#LAB_HOSTS[@]}" -gt 0 ] || lab_die "no hosts in $file"
}

# LAB_SSH: the ssh command as an array, from ZMQMR_SSH (split on blanks) or the default.
lab_ssh_init() {
    local default="ssh -o BatchMode=yes -o ConnectTimeout=10"
    read -r -a LAB_SSH <<<"${ZMQMR_SSH:-$default}"
    [ "${#LAB_SSH[@]}" -gt 0 ] || lab_die "ZMQMR_SSH is blank"
}

# lab_remote_program ACTION [NAME=VALUE...] -- [ARG...]
# The sh program for ACTION (start or stop) with the given settings; the ARGs
# (start only) are the words after `PYTHON -m zmqmr ROLE`.
lab_remote_program() {
    local action=$1 a
    shift
    printf '%s\n' "ACTION=$(shq "$action")"
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        printf '%s=%s\n' "${1%%=*}" "$(shq "${1#*=}")"
        shift
    done
    [ $# -gt 0 ] && shift
    printf 'set --'
    for a in "$@"; do printf ' %s' "$(shq "$a")"; done
    printf '\n'
    cat <<'REMOTE'
{
set -u
result() { printf 'ZMQMR-RESULT %s\n' "$*"; }
fail() { result "failed $*"; exit 3; }
nap() { sleep 0.2 2>/dev/null || sleep 1; }
node=$(uname -n 2>/dev/null) || node=unknown
# shellcheck disable=SC2088 # a literal ~ that the local shell did not expand
case $RUN_DIR in
'') RUN_DIR=$HOME/.zmqmr ;;
'~') RUN_DIR=$HOME ;;
'~/'*) RUN_DIR=$HOME/${RUN_DIR#'~/'} ;;
esac
pidfile=$RUN_DIR/$ROLE-$node.pid
logfile=$RUN_DIR/$ROLE-$node.log
# Is PID alive and a `zmqmr ROLE` process (not a recycled pid, not a zombie)?
is_ours() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/cmdline" ]; then
        cmd=$(tr '\000' ' ' <"/proc/$1/cmdline" 2>/dev/null)
    else
        cmd=$(ps -o args= -p "$1" 2>/dev/null)
    fi
    case $cmd in *"zmqmr $ROLE "* | *"zmqmr $ROLE") return 0 ;; esac
    return 1
}
read_pid() {
    pid=
    [ -f "$pidfile" ] && read -r pid <"$pidfile" 2>/dev/null
    case $pid in '' | *[!0-9]*) pid= ;; esac
}
last_log_line() {
    sed -n "$1,\$p" "$logfile" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 1
}
mkdir -p "$RUN_DIR" 2>/dev/null || fail "cannot create $RUN_DIR on $node"
# One start or stop at a time per machine and role (flock where there is one).
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$RUN_DIR/$ROLE-$node.lock" || fail "cannot write $RUN_DIR on $node"
    flock -w 30 9 || fail "another start or stop holds $RUN_DIR/$ROLE-$node.lock on $node"
fi
read_pid

if [ "$ACTION" = stop ]; then
    if [ -z "$pid" ]; then result "notrunning - $node"; exit 0; fi
    if ! is_ours "$pid"; then rm -f "$pidfile"; result "stale $pid $node"; exit 0; fi
    kill -s TERM "$pid" 2>/dev/null
    ticks=$((GRACE * 5)) # naps of 0.2s
    while is_ours "$pid" && [ "$ticks" -gt 0 ]; do nap; ticks=$((ticks - 1)); done
    if is_ours "$pid"; then
        # The whole process group (setsid made the worker its leader), then the pid.
        kill -s KILL -- "-$pid" 2>/dev/null
        kill -s KILL "$pid" 2>/dev/null
        ticks=25
        while is_ours "$pid" && [ "$ticks" -gt 0 ]; do nap; ticks=$((ticks - 1)); done
        is_ours "$pid" && fail "pid $pid on $node survived SIGKILL"
        rm -f "$pidfile"
        result "killed $pid $node"
    else
        rm -f "$pidfile"
        result "stopped $pid $node"
    fi
    exit 0
fi

# ACTION=start
if [ -n "$pid" ] && is_ours "$pid"; then result "running $pid $node $logfile"; exit 0; fi
rm -f "$pidfile"
case $PY in
*/*) [ -x "$PY" ] || fail "no Python at $PY on $node (use --python)" ;;
*) command -v "$PY" >/dev/null 2>&1 || fail "no $PY on $node in PATH=$PATH (use --python)" ;;
esac
err=$("$PY" -c 'import zmqmr' </dev/null 2>&1) ||
    fail "$PY on $node cannot import zmqmr: $(printf '%s\n' "$err" | tail -n 1)"
if [ -n "$KEYS" ]; then
    [ -d "$KEYS" ] || fail "no key directory $KEYS on $node (copy it there; see docs/operations.md)"
fi
if [ -n "$DATA_DIR" ]; then
    # The worker empties its data directory's subdirectories when it starts.
    real=$(cd "$DATA_DIR" 2>/dev/null && pwd -P) || real=
    for bad in / "$HOME" "$RUN_DIR"; do
        b=$(cd "$bad" 2>/dev/null && pwd -P) || b=
        if [ -n "$real" ] && [ "$real" = "$b" ]; then
            fail "refusing --data-dir $DATA_DIR on $node: the worker empties it; use a directory of its own"
        fi
    done
fi
set -- "$PY" -m zmqmr "$ROLE" "$@"
lines=0
[ -f "$logfile" ] && lines=$(wc -l <"$logfile")
start_line=$((lines + 1))
printf '=== %s on %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$node" "$*" >>"$logfile" ||
    fail "cannot write $logfile on $node"
# The wrapper writes its own pid, then becomes the Python process (same pid).
# shellcheck disable=SC2016 # expanded by that sh -c
set -- sh -c 'echo "$$" >"$0.new" && mv -f "$0.new" "$0" && exec "$@"' "$pidfile" "$@"
if command -v setsid >/dev/null 2>&1; then set -- setsid "$@"; fi
nohup "$@" </dev/null >>"$logfile" 2>&1 9>&- &
# Watch it for a while: a bad flag, a bad key or a refused bind ends it at once.
ticks=$((WAIT * 5)) # naps of 0.2s
while :; do
    nap
    ticks=$((ticks - 1))
    read_pid
    if [ -n "$pid" ] && ! is_ours "$pid"; then
        why=$(last_log_line "$start_line")
        fail "it exited at once: ${why:-no output} (log $node:$logfile)"
    fi
    if [ -n "$pid" ] && [ -n "$READY" ] && sed -n "$start_line,\$p" "$logfile" | grep -q -- "$READY"; then
        break
    fi
    [ "$ticks" -gt 0 ] || break
done
[ -n "$pid" ] || fail "no pid file $pidfile after ${WAIT}s (log $node:$logfile)"
result "started $pid $node $logfile"
exit 0
}
REMOTE
}

# lab_report HOST OUTFILE ERRFILE RC: one line about HOST from a remote run; returns 1 on failure.
lab_report() {
    local host=$1 out=$2 err=$3 rc=$4 line word pid node log why
    line=$(grep '^ZMQMR-RESULT ' "$out" 2>/dev/null | tail -n 1)
    if [ -z "$line" ]; then
        why=$(grep -v -e '^[[:space:]]*$' -e '^Warning: Permanently added' "$err" 2>/dev/null |
            tail -n 1)
        if [ "$rc" = 255 ]; then
            printf '%s: failed: ssh exited 255: %s\n' "$host" "${why:-no message}"
        elif [ "$rc" = 127 ] && [ -z "$why" ]; then
            printf '%s: failed: command not found (exit 127)\n' "$host"
        else
            printf '%s: failed: exit status %s%s\n' "$host" "$rc" "${why:+: $why}"
        fi
        return 1
    fi
    read -r _ word pid node log <<<"$line"
    case $word in
    started) printf '%s: started (pid %s on %s, log %s)\n' "$host" "$pid" "$node" "$log" ;;
    running) printf '%s: already running (pid %s on %s, log %s)\n' "$host" "$pid" "$node" "$log" ;;
    stopped) printf '%s: stopped (pid %s on %s)\n' "$host" "$pid" "$node" ;;
    killed) printf '%s: killed with SIGKILL after the grace period (pid %s on %s)\n' \
        "$host" "$pid" "$node" ;;
    stale) printf '%s: not running (removed the stale pid file of pid %s on %s)\n' \
        "$host" "$pid" "$node" ;;
    notrunning) printf '%s: not running (no pid file on %s)\n' "$host" "$node" ;;
    failed)
        printf '%s: failed: %s\n' "$host" "${line#ZMQMR-RESULT failed }"
        return 1
        ;;
    *)
        printf '%s: failed: unexpected answer: %s\n' "$host" "$line"
        return 1
        ;;
    esac
    return 0
}

# lab_on_hosts PROGRAM_FN: run `PROGRAM_FN INDEX | ssh HOST sh -s` for every
# host at once (at most ZMQMR_PARALLEL at a time, default 32), then print one
# line per host in the order of the hosts file. Returns 1 if any failed.
lab_on_hosts() {
    local program_fn=$1 tmp i max failed=0 rc
    max=${ZMQMR_PARALLEL:-32}
    lab_is_count "$max" || lab_die "ZMQMR_PARALLEL must be a positive integer"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/zmqmr-lab.XXXXXX") || lab_die "cannot make a temporary directory"
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    for i in "${!LAB_HOSTS[@]}"; do
        while [ "$(jobs -pr | wc -l)" -ge "$max" ]; do wait -n 2>/dev/null || sleep 0.2; done
        (
            "$program_fn" "$i" | "${LAB_SSH[@]}" "${LAB_HOSTS[$i]}" sh -s \
                >"$tmp/$i.out" 2>"$tmp/$i.err"
            echo "$?" >"$tmp/$i.rc"
        ) &
    done
    wait
    for i in "${!LAB_HOSTS[@]}"; do
        rc=$(cat "$tmp/$i.rc" 2>/dev/null) || rc=unknown
        lab_report "${LAB_HOSTS[$i]}" "$tmp/$i.out" "$tmp/$i.err" "$rc" || failed=1
    done
    return "$failed"
}
