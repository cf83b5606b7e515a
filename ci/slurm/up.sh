#!/usr/bin/env bash
# Starts a throw-away Slurm 22.05 cluster on this host for CI: munge, one slurmctld and NNODES
# emulated slurmd nodes n1..nN with NGPU fake GPUs each (gres type "fake"), partition "debug".
# No slurmdbd: the workflow's CI profile checks job status with squeue. Needs root, no systemd.
# Several slurmd on one host as Slurm's FAQ describes (https://slurm.schedmd.com/faq.html#multi_slurmd);
# docs/cluster.md, "The local Slurm of CI". Stop with ci/slurm/down.sh.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "ci/slurm/up.sh: needs root (writes /etc/slurm, /etc/hosts, /dev/fakegpu*)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
NNODES=${NNODES:-2}      # emulated nodes n1..nN (all on this host)
CPUS=${CPUS:-2}          # CPUs advertised per node: a 2x2 cell needs 2 per node (they share the real CPUs)
MEM=${MEM:-4000}         # RealMemory per node, MB
NGPU=${NGPU:-2}          # fake GPUs per node
STATE=${STATE:-/var/lib/slurm-ci}   # pid files and daemon output

# A second start restarts from scratch (fresh job ids, the current configuration).
"$HERE/down.sh"
rm -rf /var/lib/slurm/slurmctld /var/lib/slurm/slurmd-n*
mkdir -p "$STATE" /var/log/slurm /var/lib/slurm/slurmctld /etc/slurm
HOST=$(hostname -s)

# The controller's host name and every node name must resolve (torchrun's rendezvous uses n1).
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
NODE_NAMES=$(seq -f 'n%g' -s ' ' 1 "$NNODES")
grep -q "# slurm-ci-nodes" /etc/hosts || echo "127.0.0.1 $NODE_NAMES # slurm-ci-nodes" >> /etc/hosts

# Fake GPUs must be character devices (plain files are rejected by gres): aliases of /dev/null.
for i in $(seq 0 $((NGPU - 1))); do [ -c /dev/fakegpu$i ] || mknod -m 666 /dev/fakegpu$i c 1 3; done

# DefMemPerCPU keeps a job from taking a node's whole memory (jobs would run one at a time);
# MinJobAge 300 s keeps finished jobs visible to squeue, which the executor plugin requires.
{ cat <<CONF
ClusterName=ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
MinJobAge=300
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
AccountingStorageType=accounting_storage/none
CONF
  for i in $(seq 1 "$NNODES"); do
    echo "NodeName=n$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((6820 + i)) CPUs=$CPUS RealMemory=$MEM Gres=gpu:fake:$NGPU State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=n[1-$NNODES] Default=YES MaxTime=INFINITE State=UP"
} > /etc/slurm/slurm.conf
printf 'AutoDetect=off\nNodeName=n[1-%s] Name=gpu Type=fake File=/dev/fakegpu[0-%s]\n' "$NNODES" $((NGPU - 1)) \
  > /etc/slurm/gres.conf

# munge: the key comes with the package (created here if missing); munged daemonises itself.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

# -i: start without saved state (it was wiped above).
/usr/sbin/slurmctld -D -i > "$STATE/slurmctld.log" 2>&1 &
echo $! > "$STATE/slurmctld.pid"
for i in $(seq 1 "$NNODES"); do
  mkdir -p "/var/lib/slurm/slurmd-n$i"
  /usr/sbin/slurmd -D -N "n$i" > "$STATE/slurmd-n$i.log" 2>&1 &
  echo $! > "$STATE/slurmd-n$i.pid"
done

# Ready when every node is idle. sinfo blocks ~10 s per call while slurmctld is down: timeout 3.
for _ in $(seq 60); do
  kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || { echo "slurmctld died:"; cat "$STATE/slurmctld.log"; exit 1; }
  states=$(timeout 3 sinfo -h -N -o %T 2>/dev/null || true)
  if [ -n "$states" ] && ! grep -qv '^idle$' <<<"$states"; then
    timeout 3 sinfo -N
    exit 0
  fi
  sleep 0.5
done
echo "slurm nodes did not become idle:"
timeout 3 sinfo -N || true
tail -n 20 "$STATE"/*.log
exit 1
