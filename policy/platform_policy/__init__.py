"""kubeflow-eks's policy pack: the platform's promises checked on every preview and update."""
