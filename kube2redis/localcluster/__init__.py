"""A real etcd + kube-apiserver + kube-controller-manager on loopback, with Volcano's CRDs."""
