"""The kube2redis command line and the local control plane it can start."""
