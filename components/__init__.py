"""Pulumi components, grouped by where they run: aws/, gpu/ and kubeflow/."""
