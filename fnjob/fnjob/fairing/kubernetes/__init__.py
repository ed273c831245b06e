"""``fnjob.fairing.kubernetes``: the import path Fairing users wrote
(``kubeflow.fairing.kubernetes.utils``)."""
