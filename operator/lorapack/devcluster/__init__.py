"""A real local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok)
with simulated GPU nodes, for the integration tier and the demo."""
