"""``fnjob.run.cluster.API_CALLS``, the requests fnjob sends as RBAC sees them, is kept true
by the fake API server: every test that runs fnjob against it fails when fnjob sent a request
the table does not list. (``tests/kubeflow/test_fnjob_rbac.py`` checks the platform grants
the table.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from fnjob.run.cluster import API_CALLS, Cluster
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario, rbac_attributes
from tests.fnjob.run_fixtures import api_client_for


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", "/api/v1/namespaces/a/pods?labelSelector=x", ("list", "", "pods")),
        ("GET", "/api/v1/namespaces/a/pods/p/log?follow=true", ("get", "", "pods/log")),
        ("GET", "/api/v1/namespaces/a/pods?watch=true", ("watch", "", "pods")),
        ("GET", "/apis/batch/v1/namespaces/a/jobs/j/status", ("get", "batch", "jobs/status")),
        ("DELETE", "/apis/batch/v1/namespaces/a/jobs/j", ("delete", "batch", "jobs")),
        ("DELETE", "/apis/batch/v1/namespaces/a/jobs?x=y", ("deletecollection", "batch", "jobs")),
        (
            "POST",
            "/apis/trainer.kubeflow.org/v1alpha1/namespaces/a/trainjobs",
            ("create", "trainer.kubeflow.org", "trainjobs"),
        ),
        ("PATCH", "/api/v1/namespaces/a/secrets/s", ("patch", "", "secrets")),
    ],
)
def test_requests_read_as_rbac_reads_them(method: str, path: str, call: tuple[str, ...]) -> None:
    assert rbac_attributes(method, path) == call


def test_a_request_the_table_does_not_list_fails_the_test_that_made_it() -> None:
    fake = FakeKubeApi(JobScenario())
    with pytest.raises(AssertionError, match=r"API_CALLS does not list .*'configmaps'"), fake:
        api = client.CoreV1Api(api_client_for(fake))
        with pytest.raises(client.ApiException):
            api.list_namespaced_config_map("team-a")  # not something fnjob does
    assert ("list", "", "configmaps") not in API_CALLS


def test_the_listed_calls_pass() -> None:
    with FakeKubeApi(JobScenario()) as fake:
        Cluster(api_client_for(fake), "team-a").list_secrets("a=b")
    assert fake.calls == {("list", "", "secrets")}


def test_the_fnjob_guide_lists_exactly_the_calls() -> None:
    guide = (Path(__file__).resolve().parents[3] / "docs" / "fnjob.md").read_text()
    table = guide.split("<!-- fnjob-api-calls:")[1].split("<!-- end of fnjob-api-calls -->")[0]
    listed = set()
    for row in table.splitlines()[3:]:
        if not row.startswith("|"):
            continue
        group, resource, verbs = (cell.strip().strip("`") for cell in row.strip("|").split("|"))
        for verb in verbs.split(","):
            listed.add((verb.strip(), "" if group == "core" else group, resource))
    assert listed == set(API_CALLS)
