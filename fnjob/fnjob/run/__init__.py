"""Running it: the Job and local deployers, manifests, logs, the outcome protocol, the runner."""
