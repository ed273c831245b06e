"""The one-time AWS setup that lets GitHub Actions deploy kubeflow-eks without stored keys."""
