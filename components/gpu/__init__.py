"""Components for GPU nodes on the cluster: the NVIDIA device plugin and GPU scheduling."""
