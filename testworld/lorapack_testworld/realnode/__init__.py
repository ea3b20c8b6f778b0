"""The real-node test world: the images `make image` builds and a real kubelet node.

`images` loads and runs the OCI archives with podman; `node` runs containerd + kubelet +
kube-proxy inside a network namespace next to the local control plane (tests/realnode).
"""
