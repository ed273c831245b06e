"""Kubeflow: render its Kustomize manifests, transform them, apply them in phases."""
