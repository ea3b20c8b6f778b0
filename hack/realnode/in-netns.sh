#!/usr/bin/env bash
# Run a command (the real-node tier) inside fresh network, mount and PID namespaces, so that
# everything it starts - control plane, S3 server, containerd, kubelet, kube-proxy, pods - has
# addresses that exist only there: loopback (with the node's address on it) and the pods' bridge, no route off the
# machine, no NAT to the outside. When the command ends, PID 1 of the namespace exits, the
# kernel kills whatever is left, and the namespaces go with their interfaces, bridges, iptables
# chains and mounts. The kubelet's cgroups (under one cgroupRoot) are removed here afterwards.
#
# The kubelet insists on host-wide sysctls (kernel.panic=10, kernel.panic_on_oops=1,
# vm.overcommit_memory=1) that network namespaces do not isolate; inside the private mount
# namespace those /proc/sys files are covered with files holding the values it wants, so the
# host's settings stay untouched.
#
# Usage: hack/realnode/in-netns.sh COMMAND...   (env LORAPACK_REALNODE_NETNS=1 inside)
set -euo pipefail

NODE_IP=${LORAPACK_REALNODE_NODE_IP:-10.250.255.1}
NODE_NAME=${LORAPACK_REALNODE_NODE_NAME:-realnode-0}
CGROUP_ROOT=${LORAPACK_REALNODE_CGROUP_ROOT:-lorapack-realnode}

if ((EUID != 0)); then   # namespaces, mounts and the kubelet need root
    exec sudo --preserve-env "$0" "$@"
fi
if [[ "${LORAPACK_REALNODE_NETNS:-}" != 1 ]]; then
    # The kubelet's cgroupRoot must exist in every hierarchy before it starts.
    for h in /sys/fs/cgroup/*/; do
        [[ -L ${h%/} ]] || mkdir -p "$h$CGROUP_ROOT"
    done
    rc=0
    LORAPACK_REALNODE_NETNS=1 unshare --net --mount --pid --fork --mount-proc --propagation private \
        "$0" "$@" || rc=$?
    # cgroup v1 hierarchies are shared with the host: remove the kubelet's, deepest first.
    for h in /sys/fs/cgroup/*/; do
        if [[ -d "$h$CGROUP_ROOT" && ! -L ${h%/} ]]; then
            find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
        fi
    done
    exit $rc
fi

ip link set lo up
# The node's address, on loopback (no dummy interfaces in this kernel): pods reach it through
# their bridge's gateway, like a node IP; it exists only in this namespace.
ip addr add "$NODE_IP/32" dev lo

fake=$(mktemp -d /tmp/lorapack-realnode-sysctl.XXXXXX)
trap 'rm -rf "$fake"' EXIT
# The API server dials the kubelet by node name (logs, exec): resolve it here only.
{ cat /etc/hosts; echo "$NODE_IP $NODE_NAME"; } >"$fake/hosts"
mount --bind "$fake/hosts" /etc/hosts
for kv in kernel/panic=10 kernel/panic_on_oops=1 vm/overcommit_memory=1 vm/panic_on_oom=0 \
          kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    key=${kv%%=*} want=${kv#*=}
    if [[ "$(cat /proc/sys/$key)" != "$want" ]]; then
        echo "$want" >"$fake/${key//\//.}"
        mount --bind "$fake/${key//\//.}" "/proc/sys/$key"
    fi
done
export LORAPACK_REALNODE_NODE_IP=$NODE_IP LORAPACK_REALNODE_NODE_NAME=$NODE_NAME \
    LORAPACK_REALNODE_CGROUP_ROOT=$CGROUP_ROOT
rc=0
"$@" || rc=$?
exit $rc
