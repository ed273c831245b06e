"""Rendering the fixture with the real pinned kustomize, the component selection and the cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.kubeflow.manifests import (
    ComponentSelectionError,
    KustomizeError,
    RenderedManifests,
    SourceError,
    kubectl_binary,
    render_manifests,
    run_kustomize,
    upstream_components,
)
from tests.kubeflow.conftest import FIXTURE_SOURCE


def _names(objects: object) -> set[tuple[str, str, str]]:
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # type: ignore[index]
        for o in objects  # type: ignore[attr-defined]
    }


def test_pinned_kubectl_carries_kustomize_5_8_1() -> None:
    out = subprocess.run(
        [str(kubectl_binary()), "version", "--client"], capture_output=True, text=True, check=True
    ).stdout
    assert "Kustomize Version: v5.8.1" in out


def test_fixture_renders_upstream_shapes(rendered: RenderedManifests) -> None:
    names = _names(rendered.objects)
    # Generated names carry kustomize's hash suffix, as upstream's do.
    assert any(k == "Secret" and n.startswith("oauth2-proxy-") for k, _, n in names)
    assert any(k == "ConfigMap" and n.startswith("jupyter-web-app-config-") for k, _, n in names)
    assert ("Secret", "auth", "dex-oidc-client") in names
    assert ("CustomResourceDefinition", "", "profiles.kubeflow.org") in names
    assert ("Profile", "", "kubeflow-user-example-com") in names
    # Build-time vars were resolved by kustomize itself.
    jwa = next(o for o in rendered.objects if o["metadata"]["name"] == "jupyter-web-app-deployment")
    env = {
        e["name"]: e.get("value") for e in jwa["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["APP_SECURE_COOKIES"] == "true"
    # legacy sort: namespaces first, validating webhooks last
    assert rendered.objects[0]["kind"] == "Namespace"
    assert rendered.objects[-1]["kind"] == "ValidatingWebhookConfiguration"


def test_render_is_exactly_what_plain_kustomize_builds(
    rendered: RenderedManifests, tmp_path: Path
) -> None:
    # kubectl decodes the objects for us (JSON instead of YAML); nothing may change on the way.
    plain = [d for d in yaml.safe_load_all(run_kustomize(FIXTURE_SOURCE / "example")) if d]
    assert list(rendered.objects) == plain


def test_a_selection_that_renders_nothing_gives_no_objects(tmp_path: Path) -> None:
    source = tmp_path / "manifests"
    shutil.copytree(FIXTURE_SOURCE, source)
    empty = source / "common" / "empty"
    empty.mkdir()
    (empty / "kustomization.yaml").write_text("resources: []\n")
    example = source / "example" / "kustomization.yaml"
    example.write_text(example.read_text() + "- ../common/empty\n")
    result = render_manifests(str(source), ("../common/empty",), cache_dir=tmp_path / "cache")
    assert result.objects == ()


def test_a_broken_kubeconfig_does_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    result = render_manifests(
        str(FIXTURE_SOURCE), ("../common/kubeflow-namespace/base",), cache_dir=tmp_path
    )
    assert [o["kind"] for o in result.objects] == ["Namespace"]


def test_default_selection_is_upstream_example_set(tmp_path: Path) -> None:
    everything = render_manifests(str(FIXTURE_SOURCE), None, cache_dir=tmp_path)
    listed = render_manifests(
        str(FIXTURE_SOURCE), upstream_components(FIXTURE_SOURCE), cache_dir=tmp_path
    )
    assert _names(everything.objects) == _names(listed.objects)


def test_component_subset_installs_only_those(tmp_path: Path) -> None:
    subset = (
        "../common/cert-manager/base",
        "../common/dex/overlays/oauth2-proxy",
    )
    result = render_manifests(str(FIXTURE_SOURCE), subset, cache_dir=tmp_path)
    namespaces = {o["metadata"].get("namespace") for o in result.objects} - {None}
    assert namespaces == {"cert-manager", "auth"}


def test_unknown_component_is_rejected_with_the_allowed_list(tmp_path: Path) -> None:
    with pytest.raises(ComponentSelectionError, match=r"\.\./applications/katib"):
        render_manifests(str(FIXTURE_SOURCE), ("../applications/nope",), cache_dir=tmp_path)


def test_second_render_comes_from_cache_without_running_kustomize(tmp_path: Path) -> None:
    first = render_manifests(str(FIXTURE_SOURCE), cache_dir=tmp_path)
    assert not first.from_cache
    # A kubectl that cannot run proves the second render never invokes kustomize.
    second = render_manifests(
        str(FIXTURE_SOURCE), cache_dir=tmp_path, kubectl=tmp_path / "no-such-kubectl"
    )
    assert second.from_cache
    assert second.objects == first.objects
    assert second.cache_key == first.cache_key


def test_editing_a_manifest_invalidates_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "manifests"
    shutil.copytree(FIXTURE_SOURCE, source)
    cache = tmp_path / "cache"
    before = render_manifests(str(source), cache_dir=cache)
    params = source / "applications/jupyter/jupyter-web-app/upstream/base/params.env"
    params.write_text("JWA_APP_SECURE_COOKIES=maybe\n")
    after = render_manifests(str(source), cache_dir=cache)
    assert not after.from_cache
    assert after.cache_key != before.cache_key
    jwa = next(o for o in after.objects if o["metadata"]["name"] == "jupyter-web-app-deployment")
    env = {
        e["name"]: e.get("value") for e in jwa["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["APP_SECURE_COOKIES"] == "maybe"


def test_changing_the_selection_invalidates_the_cache(tmp_path: Path) -> None:
    full = render_manifests(str(FIXTURE_SOURCE), cache_dir=tmp_path)
    part = render_manifests(
        str(FIXTURE_SOURCE), ("../common/kubeflow-namespace/base",), cache_dir=tmp_path
    )
    assert not part.from_cache
    assert part.cache_key != full.cache_key
    assert [o["kind"] for o in part.objects] == ["Namespace"]


def test_directory_without_example_is_not_a_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"example/kustomization\.yaml"):
        render_manifests(str(tmp_path), cache_dir=tmp_path / "cache")


def test_malformed_tag_is_rejected_before_any_fetch(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither an existing directory nor a release tag"):
        render_manifests("26.03;rm -rf", cache_dir=tmp_path)


def test_kustomize_failure_carries_its_message(tmp_path: Path) -> None:
    source = tmp_path / "manifests"
    shutil.copytree(FIXTURE_SOURCE, source)
    (source / "common/dex/base/kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n- missing.yaml\n"
    )
    with pytest.raises(KustomizeError, match=r"missing\.yaml"):
        render_manifests(str(source), cache_dir=tmp_path / "cache")


def test_a_damaged_cache_entry_is_rendered_again(tmp_path: Path) -> None:
    first = render_manifests(str(FIXTURE_SOURCE), cache_dir=tmp_path)
    [entry] = (tmp_path / "renders").iterdir()
    entry.write_text('{"truncated": ')
    again = render_manifests(str(FIXTURE_SOURCE), cache_dir=tmp_path)
    assert not again.from_cache
    assert again.objects == first.objects
    assert render_manifests(str(FIXTURE_SOURCE), cache_dir=tmp_path).from_cache
