"""Components that create AWS resources: network, cluster, node groups, IAM, storage, autoscaler."""
