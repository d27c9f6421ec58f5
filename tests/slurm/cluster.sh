#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests: Debian's munge, slurmctld and slurmd,
# started by hand (no systemd), with every file under one state directory.
#
#   tests/slurm/cluster.sh install       apt-get the packages when a command is missing
#   tests/slurm/cluster.sh start DIR     write DIR/slurm.conf, start the daemons, wait until
#                                        the node accepts jobs; their pids go to DIR/pids
#   tests/slurm/cluster.sh stop DIR      stop exactly the daemons listed in DIR/pids
#
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf (start prints it) or through
# the link /etc/slurm/slurm.conf -> DIR/slurm.conf that start makes and stop removes.
# No accounting database: `sacct` does not work here, `squeue` and `scontrol` do.
# Ports: SLURM_TEST_CTLD_PORT and SLURM_TEST_D_PORT (default 6817 and 6818).
set -euo pipefail

SYSTEM_CONF=/etc/slurm/slurm.conf

install() {
    local missing=0
    for command in munged slurmctld slurmd sbatch; do
        command -v "$command" >/dev/null || missing=1
    done
    if [ "$missing" = 1 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            munge slurmctld slurmd slurm-client >/dev/null
    fi
}

write_config() {
    local dir=$1 host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # Leave 1 GB to the system; slurmd drains a node that has less than RealMemory.
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$dir/slurm.conf" <<CONF
ClusterName=iishpo-test
SlurmctldHost=$host
SlurmctldPort=${SLURM_TEST_CTLD_PORT:-6817}
SlurmdPort=${SLURM_TEST_D_PORT:-6818}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/slurmd
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# No cgroups in a container: track processes by process group, no task binding.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
# Memory is a consumable resource; a job over its --mem is killed (polled every 2 s).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=2
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 5 minutes; overtime jobs die at once.
MinJobAge=300
KillWait=5
OverTimeLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    local dir
    dir=$(realpath -m "$1")
    if [ -s "$dir/pids" ]; then
        echo "$dir/pids exists: stop that cluster first" >&2
        exit 1
    fi
    mkdir -p "$dir/munge" "$dir/ctld" "$dir/slurmd"
    chmod 700 "$dir/munge"
    if [ ! -s "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$dir/munge/munge.key"
    write_config "$dir"
    # Jobs find the configuration at SLURM's default path only: the jobstep plugin drops
    # SLURM_CONF before its srun. Link it there, never over a file this script did not write.
    if [ -e "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" != "$dir/slurm.conf" ]; then
        echo "$SYSTEM_CONF exists and is not this test cluster's: not touching it" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$dir/slurm.conf" "$SYSTEM_CONF"
    : > "$dir/pids"
    # Each daemon runs in the foreground of its own session, so that $! is its pid.
    setsid munged --foreground --force --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --seed-file="$dir/munge/munge.seed" --log-file="$dir/munge/munged.log" \
        </dev/null >>"$dir/munge/munged.out" 2>&1 &
    echo "munged $!" >> "$dir/pids"
    wait_for "munge" test -S "$dir/munge/munge.socket"
    setsid slurmctld -D -f "$dir/slurm.conf" </dev/null >>"$dir/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >> "$dir/pids"
    setsid slurmd -D -f "$dir/slurm.conf" </dev/null >>"$dir/slurmd.out" 2>&1 &
    echo "slurmd $!" >> "$dir/pids"
    export SLURM_CONF="$dir/slurm.conf"
    if ! wait_for "an idle node" node_idle; then
        stop "$dir"
        exit 1
    fi
    echo "SLURM_CONF=$dir/slurm.conf"
}

node_idle() {
    sinfo --noheader --format=%t 2>/dev/null | grep -qx "idle"
}

wait_for() {
    local what=$1
    shift
    for _ in $(seq 60); do
        if "$@"; then
            return 0
        fi
        sleep 1
    done
    echo "no $what after 60 s; logs:" >&2
    tail -n 20 "$dir"/*.log "$dir"/*.out "$dir"/munge/*.log >&2 || true
    return 1
}

stop() {
    local dir name pid
    dir=$(realpath -m "$1")
    [ -f "$dir/pids" ] || return 0
    # Jobs first (their slurmstepd would outlive slurmd), while slurmctld still answers.
    if SLURM_CONF="$dir/slurm.conf" scancel --full --state=RUNNING,PENDING 2>/dev/null; then
        for _ in $(seq 20); do
            SLURM_CONF="$dir/slurm.conf" squeue --noheader --states=RUNNING,PENDING,COMPLETING \
                2>/dev/null | grep -q . || break
            sleep 0.5
        done
    fi
    # Reverse order: slurmd, slurmctld, then munged; a pid whose process has another name
    # (the daemon died and the pid was reused) is left alone.
    tac "$dir/pids" | while read -r name pid; do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
            kill -TERM "$pid"
            for _ in $(seq 30); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
        fi
        echo "stopped $name ($pid)"
    done
    rm -f "$dir/pids"
    if [ "$(readlink "$SYSTEM_CONF")" = "$dir/slurm.conf" ]; then
        rm -f "$SYSTEM_CONF"
    fi
}

case "${1:-}" in
    install) install ;;
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
