"""Pure transformations of the rendered Kubeflow objects.

Every function here takes plain objects (dicts as kustomize produced them) and returns new
ones; inputs are never mutated (objects that change are deep-copied first), so the cached
render can be shared. Nothing here touches Pulumi, the network or the disk.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from components.gpu.scheduling import union_tolerations
from components.kubeflow.access import NO_EXTERNAL_ACCESS, Access, apply_access
from components.kubeflow.manifests import YAML_DUMPER, YAML_LOADER, KubeObject
from components.kubeflow.objects import name_of, namespace_of, pod_config_refs, pod_template, ref
from components.kubeflow.profiles import (
    FNJOB_LABEL,
    NotebookSetup,
    profile_objects,
    quota_spec,
)
from model import GPU_RESOURCE, GpuGroup
from model.kubeflow import UPSTREAM_EXAMPLE_PROFILE, Culling, Kubeflow, Sso, SsoConnector

# Upstream's published defaults. Long ones are unambiguous and must not appear anywhere;
# short ones only count as credentials inside a Secret.
UPSTREAM_DEFAULT_CREDENTIALS = (
    "12341234",
    "$2y$12$4K/VkmDd1q1Orb3xAt82zu8gk7Ad6ReFR4LCP9UeYE90NLiN9Df72",
    "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
    "7d16fee92f8d11b8940b081b3f8b8acb",
    "minio123",
)
UPSTREAM_DEFAULT_SECRET_VALUES = ("minio", "minio123", "test", "12341234", "password")

# Kubeflow's web apps (crud-web-apps) read APP_SECURE_COOKIES (default true). Upstream sets it
# in the env of the first three; the KServe models web app takes its env from a ConfigMap
# without it, so it gets the env entry added.
WEB_APPS_WITH_SECURE_COOKIES = (
    "jupyter-web-app-deployment",
    "volumes-web-app-deployment",
    "tensorboards-web-app-deployment",
    "kserve-models-web-app",
)
SPAWNER_CONFIG_KEY = "spawner_ui_config.yaml"
TRAINING_RUNTIME_KIND = "ClusterTrainingRuntime"
# Istio's injector webhooks skip pods with this label set to "false" (kubeflow/trainer#2794).
ISTIO_INJECT_LABEL = "sidecar.istio.io/inject"


class TransformError(Exception):
    """The rendered objects do not have the shape a transformation relies on."""


class KubeflowConfigError(ValueError):
    """An argument of the Kubeflow component is invalid."""


class TrainingRuntimeError(KubeflowConfigError):
    """The default training runtime is not one the rendered Trainer ships."""

    def __init__(self, runtime: str, available: Sequence[str]) -> None:
        super().__init__(
            f"{runtime} is not a ClusterTrainingRuntime of the rendered manifests; available: "
            f"{', '.join(available)}"
        )
        self.runtime = runtime
        self.available = tuple(available)


class DefaultCredentialError(TransformError):
    """An upstream default credential survived the transformations."""

    def __init__(self, findings: Sequence[str]) -> None:
        super().__init__("upstream default credentials survived: " + "; ".join(findings[:10]))
        self.findings = tuple(findings)


@dataclass(frozen=True)
class KubeflowArgs:
    """What to install and how: the stack's ``kubeflow`` section as the model validated it
    (nothing is checked again), and what the rest of the stack decides for Kubeflow.

    Secrets are not here (``KubeflowCredentials``), nor values known only at deploy time
    (``NotebookSetup``).
    """

    kubeflow: Kubeflow
    # The stack's GPU groups: the notebook form offers them, fnjob's PodDefault lists them.
    gpu_groups: tuple[GpuGroup, ...] = ()
    # How users reach Kubeflow (its ingress, and where the cluster runs).
    access: Access = NO_EXTERNAL_ACCESS

    @property
    def admin_email(self) -> str:
        # The model requires it whenever Kubeflow is enabled.
        assert self.kubeflow.admin_email is not None
        return self.kubeflow.admin_email


@dataclass(frozen=True)
class KubeflowCredentials:
    """The secret values the transforms write (plain strings; the component keeps them secret)."""

    admin_password_hash: str
    oidc_client_secret: str
    oauth2_proxy_cookie_secret: str
    katib_db_password: str
    pipelines_db_password: str
    pipelines_object_store_access_key: str
    pipelines_object_store_secret_key: str
    # Profile -> that profile's docker config.json (registryAccess docker-config).
    docker_configs: Mapping[str, str] = field(default_factory=dict)
    # Dex connector id -> its OAuth client secret.
    sso_client_secrets: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.admin_password_hash.startswith(("$2a$", "$2b$", "$2y$")):
            raise KubeflowConfigError(
                "admin_password_hash must be a bcrypt hash ($2a$/$2b$/$2y$...), got a value "
                f"starting {self.admin_password_hash[:4]!r}"
            )
        if len(self.oauth2_proxy_cookie_secret.encode()) not in (16, 24, 32):
            raise KubeflowConfigError(
                "oauth2_proxy_cookie_secret must be 16, 24 or 32 bytes (oauth2-proxy's AES key "
                f"sizes), got {len(self.oauth2_proxy_cookie_secret.encode())} bytes"
            )
        for field_name in (
            "oidc_client_secret",
            "katib_db_password",
            "pipelines_db_password",
            "pipelines_object_store_access_key",
            "pipelines_object_store_secret_key",
        ):
            value = getattr(self, field_name)
            if len(value) < 8:
                raise KubeflowConfigError(
                    f"{field_name} must be at least 8 characters, got {len(value)}"
                )
        for field_name in ("oidc_client_secret", "oauth2_proxy_cookie_secret"):
            if getattr(self, field_name) in UPSTREAM_DEFAULT_CREDENTIALS:
                raise KubeflowConfigError(f"{field_name} is upstream's published default")

    def __repr__(self) -> str:
        # Never show secret values in tracebacks or logs.
        return "KubeflowCredentials(<redacted>)"


# --- small helpers -------------------------------------------------------------------------


def _is(obj: Mapping[str, Any], kind: str, namespace: str | None = None) -> bool:
    return obj.get("kind") == kind and (namespace is None or namespace_of(obj) == namespace)


def _generated_name_matches(name: str, base: str) -> bool:
    """`base` itself, or `base` plus kustomize's 10-character hash suffix."""
    return name == base or re.fullmatch(re.escape(base) + r"-[a-z0-9]{10}", name) is not None


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's decoded values, from `data` and `stringData` (stringData wins, as in the API)."""
    values: dict[str, str] = {}
    for key, raw in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(str(raw), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            values[key] = str(raw)
    for key, raw in (secret.get("stringData") or {}).items():
        values[key] = str(raw)
    return values


def _set_secret_values(secret: KubeObject, values: Mapping[str, str]) -> None:
    data = dict(secret.get("data") or {})
    string_data = dict(secret.get("stringData") or {})
    for key, value in values.items():
        data[key] = _b64(value)
        string_data.pop(key, None)
    secret["data"] = data
    if string_data:
        secret["stringData"] = string_data
    else:
        secret.pop("stringData", None)


def _rewrite(
    objects: Sequence[Mapping[str, Any]],
    match: Callable[[Mapping[str, Any]], bool],
    change: Callable[[KubeObject], None],
) -> tuple[list[KubeObject], int]:
    """Copy-on-write: matched objects are deep-copied and changed; others pass through."""
    out: list[KubeObject] = []
    count = 0
    for obj in objects:
        if match(obj):
            changed = copy.deepcopy(dict(obj))
            change(changed)
            out.append(changed)
            count += 1
        else:
            out.append(obj)  # type: ignore[arg-type]
    return out, count


def _pod_containers(obj: KubeObject) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers") or [])


# --- HTTP mode -----------------------------------------------------------------------------


def apply_http_mode(objects: Sequence[Mapping[str, Any]], http_mode: bool) -> list[KubeObject]:
    """Secure cookies on (HTTPS) or off (plain HTTP) for the web apps and oauth2-proxy."""
    secure = "false" if http_mode else "true"

    def set_app_cookies(deployment: KubeObject) -> None:
        containers = _pod_containers(deployment)
        if not containers:
            raise TransformError(f"Deployment kubeflow/{name_of(deployment)} has no container")
        # An explicit env entry wins over envFrom and over the app's default.
        env = containers[0].setdefault("env", [])
        env[:] = [e for e in env if e.get("name") != "APP_SECURE_COOKIES"]
        env.append({"name": "APP_SECURE_COOKIES", "value": secure})

    out, _ = _rewrite(
        objects,
        lambda o: _is(o, "Deployment", "kubeflow") and name_of(o) in WEB_APPS_WITH_SECURE_COOKIES,
        set_app_cookies,
    )

    def set_force_https(config_map: KubeObject) -> None:
        config_map.setdefault("data", {})["FORCE_HTTPS"] = secure

    out, _ = _rewrite(
        out,
        lambda o: (
            _is(o, "ConfigMap", "oauth2-proxy")
            and _generated_name_matches(name_of(o), "oauth2-proxy-parameters")
        ),
        set_force_https,
    )

    def set_cookie_secure_literal(deployment: KubeObject) -> None:
        for container in _pod_containers(deployment):
            for env in container.get("env") or []:
                if env.get("name") == "OAUTH2_PROXY_COOKIE_SECURE" and "value" in env:
                    env["value"] = secure

    out, _ = _rewrite(
        out,
        lambda o: _is(o, "Deployment", "oauth2-proxy") and name_of(o) == "oauth2-proxy",
        set_cookie_secure_literal,
    )
    return out


# --- credentials ---------------------------------------------------------------------------


def _username_of(email: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", email.split("@", 1)[0].lower()) or "admin"


def apply_credentials(
    objects: Sequence[Mapping[str, Any]], admin_email: str, credentials: KubeflowCredentials
) -> list[KubeObject]:
    """Replace every upstream default credential with the stack's values."""
    out: list[KubeObject] = [dict(o) for o in objects]

    def dex_config(config_map: KubeObject) -> None:
        data = config_map.setdefault("data", {})
        if "config.yaml" not in data:
            raise TransformError("ConfigMap auth/dex has no config.yaml")
        config = yaml.load(data["config.yaml"], Loader=YAML_LOADER)
        users = config.get("staticPasswords") or []
        template = users[0] if users else {"hashFromEnv": "DEX_USER_PASSWORD"}
        # One static user, the stack's admin; the hash comes from the dex-passwords Secret.
        admin = {
            **template,
            "email": admin_email,
            "username": _username_of(admin_email),
        }
        admin.pop("hash", None)
        admin["hashFromEnv"] = template.get("hashFromEnv", "DEX_USER_PASSWORD")
        config["staticPasswords"] = [admin]
        data["config.yaml"] = yaml.dump(config, Dumper=YAML_DUMPER, sort_keys=False)

    replacements: list[tuple[Callable[[Mapping[str, Any]], bool], Callable[[KubeObject], None]]] = [
        (lambda o: _is(o, "ConfigMap", "auth") and name_of(o) == "dex", dex_config),
        (
            lambda o: _is(o, "Secret", "auth") and name_of(o) == "dex-passwords",
            lambda s: _set_secret_values(s, {"DEX_USER_PASSWORD": credentials.admin_password_hash}),
        ),
        (
            lambda o: _is(o, "Secret", "auth") and name_of(o) == "dex-oidc-client",
            lambda s: _set_secret_values(s, {"OIDC_CLIENT_SECRET": credentials.oidc_client_secret}),
        ),
        (
            lambda o: (
                _is(o, "Secret", "oauth2-proxy")
                and _generated_name_matches(name_of(o), "oauth2-proxy")
            ),
            lambda s: _set_secret_values(
                s,
                {
                    "client-secret": credentials.oidc_client_secret,
                    "cookie-secret": credentials.oauth2_proxy_cookie_secret,
                },
            ),
        ),
        (
            lambda o: _is(o, "Secret") and name_of(o) == "katib-mysql-secrets",
            lambda s: _set_secret_values(s, {"MYSQL_ROOT_PASSWORD": credentials.katib_db_password}),
        ),
        (
            lambda o: _is(o, "Secret") and name_of(o) == "mysql-secret",
            lambda s: _set_secret_values(s, {"password": credentials.pipelines_db_password}),
        ),
        (
            lambda o: _is(o, "Secret") and name_of(o) == "mlpipeline-minio-artifact",
            lambda s: _set_secret_values(
                s,
                {
                    "accesskey": credentials.pipelines_object_store_access_key,
                    "secretkey": credentials.pipelines_object_store_secret_key,
                },
            ),
        ),
        (
            lambda o: _is(o, "Deployment", "kubeflow") and name_of(o) == "mysql",
            _pipelines_mysql_uses_secret,
        ),
        (
            lambda o: _is(o, "Profile") and name_of(o) == UPSTREAM_EXAMPLE_PROFILE,
            lambda p: (
                p.setdefault("spec", {})
                .setdefault("owner", {})
                .update({"kind": "User", "name": admin_email})
            ),
        ),
    ]
    for match, change in replacements:
        out, _ = _rewrite(out, match, change)
    return out


def _pipelines_mysql_uses_secret(deployment: KubeObject) -> None:
    """Upstream's Pipelines MySQL runs root without a password; give it the stack's one."""
    for container in _pod_containers(deployment):
        env = [
            e
            for e in container.get("env") or []
            if e.get("name") not in ("MYSQL_ALLOW_EMPTY_PASSWORD", "MYSQL_ROOT_PASSWORD")
        ]
        env.append(
            {
                "name": "MYSQL_ROOT_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "mysql-secret", "key": "password"}},
            }
        )
        container["env"] = env


def find_default_credentials(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Where upstream default credentials appear (empty when none does)."""
    needles = {c: c for c in UPSTREAM_DEFAULT_CREDENTIALS}
    needles.update({_b64(c): c for c in UPSTREAM_DEFAULT_CREDENTIALS})
    objects = list(objects)
    # The credentials hold no character JSON escapes, so each appears in an object's JSON
    # text exactly when it appears in one of its strings. One search over the whole render
    # (C speed) tells which to look for object by object.
    everything = json.dumps(objects)
    present = {n: c for n, c in needles.items() if n in everything}
    findings: list[str] = []
    for obj in objects:
        where = f"{obj.get('kind')} {namespace_of(obj) or '-'}/{name_of(obj)}"
        if present:
            text = json.dumps(obj)
            findings += [f"{where} contains {c[:6]}..." for n, c in present.items() if n in text]
        if obj.get("kind") == "Secret":
            for key, value in secret_values(obj).items():
                if value in UPSTREAM_DEFAULT_SECRET_VALUES:
                    findings.append(f"{where} key {key} holds an upstream default")
                elif value == "" and "password" in key.lower():
                    findings.append(f"{where} key {key} is an empty password")
    return sorted(set(findings))


# --- notebook spawner ----------------------------------------------------------------------


def apply_spawner_config(
    objects: Sequence[Mapping[str, Any]],
    gpu_groups: tuple[GpuGroup, ...],
    notebook_images: tuple[str, ...],
    *,
    stack_image: str | None = None,
    default_configurations: tuple[str, ...] = (),
) -> list[KubeObject]:
    """One toleration group and affinity option per GPU group; NVIDIA GPUs; extra images.

    ``stack_image`` (the stack's own notebook image) comes first and is the default choice;
    ``default_configurations`` are ticked in the form's configurations: PodDefault selector
    labels (not PodDefault names), which the web app sets to "true" on the new notebook.
    """

    def edit(config_map: KubeObject) -> None:
        data = config_map["data"]
        config = yaml.load(data[SPAWNER_CONFIG_KEY], Loader=YAML_LOADER) or {}
        defaults = config.get("spawnerFormDefaults")
        if not isinstance(defaults, dict):
            raise TransformError(
                f"ConfigMap kubeflow/{name_of(config_map)} {SPAWNER_CONFIG_KEY} has no "
                "spawnerFormDefaults"
            )
        image = defaults.setdefault("image", {})
        options = list(image.get("options") or [])
        options += [i for i in notebook_images if i not in options]
        if stack_image is not None:
            options = [stack_image, *(o for o in options if o != stack_image)]
            image["value"] = stack_image
        image["options"] = options
        if default_configurations:
            configurations = defaults.setdefault("configurations", {})
            chosen = list(configurations.get("value") or [])
            configurations["value"] = chosen + [
                label for label in default_configurations if label not in chosen
            ]
        if gpu_groups:
            defaults["tolerationGroup"] = {
                **(defaults.get("tolerationGroup") or {}),
                "readOnly": False,
                "value": "",
                "options": [
                    {
                        "groupKey": group.name,
                        "displayName": f"GPU node group {group.name}",
                        "tolerations": group.tolerations(),
                    }
                    for group in gpu_groups
                ],
            }
            defaults["affinityConfig"] = {
                **(defaults.get("affinityConfig") or {}),
                "readOnly": False,
                "value": "",
                "options": [
                    {
                        "configKey": group.name,
                        "displayName": f"GPU node group {group.name}",
                        "affinity": group.node_affinity(),
                    }
                    for group in gpu_groups
                ],
            }
            gpus = defaults.setdefault("gpus", {})
            value = gpus.setdefault("value", {})
            value.setdefault("num", "none")
            # The stack only provisions NVIDIA GPUs; other vendors would offer unusable choices.
            value["vendors"] = [{"limitsKey": GPU_RESOURCE, "uiName": "NVIDIA"}]
            value["vendor"] = GPU_RESOURCE
        data[SPAWNER_CONFIG_KEY] = yaml.dump(config, Dumper=YAML_DUMPER, sort_keys=False)

    out, count = _rewrite(
        objects,
        lambda o: _is(o, "ConfigMap", "kubeflow") and SPAWNER_CONFIG_KEY in (o.get("data") or {}),
        edit,
    )
    has_jupyter = any(
        _is(o, "Deployment", "kubeflow") and name_of(o) == "jupyter-web-app-deployment"
        for o in objects
    )
    if has_jupyter and count == 0:
        raise TransformError(
            "the Jupyter web app is installed but no ConfigMap in kubeflow holds "
            f"{SPAWNER_CONFIG_KEY}"
        )
    return out


# --- roll-out on config change ------------------------------------------------------------

CONFIG_DIGEST_ANNOTATION = "kubeflow-eks.io/config-digest"


def annotate_config_digests(objects: Sequence[Mapping[str, Any]]) -> list[KubeObject]:
    """Give each workload a pod-template annotation with a digest of the rendered ConfigMaps
    and Secrets its pods read, so a change of that data rolls the workload out.

    kustomize's hash suffix does this for generated objects, but the stack edits some after
    rendering (the notebook form, oauth2-proxy's FORCE_HTTPS, dex's config and password hash)
    and they keep upstream's names. The digest is a SHA-256 over all the data a workload reads
    together, never a value in clear.
    """
    config = {
        (str(o.get("kind")), namespace_of(o), name_of(o)): o
        for o in objects
        if o.get("kind") in ("ConfigMap", "Secret")
    }

    def read_by(workload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        namespace = namespace_of(workload)
        return [
            config[(kind, namespace, name)]
            for kind, name in sorted(pod_config_refs(workload))
            if (kind, namespace, name) in config
        ]

    def annotate(workload: KubeObject) -> None:
        digest = hashlib.sha256()
        for source in read_by(workload):
            content = {k: source.get(k) for k in ("data", "stringData", "binaryData")}
            digest.update(json.dumps([str(ref(source)), content], sort_keys=True).encode())
        template = (
            workload["spec"]["jobTemplate"]["spec"]
            if workload["kind"] == "CronJob"
            else workload["spec"]
        )
        metadata = template["template"].setdefault("metadata", {})
        metadata.setdefault("annotations", {})[CONFIG_DIGEST_ANNOTATION] = digest.hexdigest()

    out, _ = _rewrite(
        objects,
        lambda o: o.get("kind") != "Pod" and pod_template(o) is not None and bool(read_by(o)),
        annotate,
    )
    return out


def sso_secret_variable(connector_id: str) -> str:
    """The environment variable (a key of Secret auth/dex-passwords, which dex reads with
    envFrom) holding a connector's client secret; dex expands it in connector configs."""
    return "SSO_" + re.sub(r"[^A-Z0-9]", "_", connector_id.upper()) + "_CLIENT_SECRET"


def _dex_connector(connector: SsoConnector, callback: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "clientID": connector.client_id,
        "clientSecret": f"${sso_secret_variable(connector.id)}",
        "redirectURI": callback,
    }
    if connector.type == "oidc":
        config.update(
            issuer=connector.issuer,
            scopes=["openid", "profile", "email"],
            getUserInfo=True,
            insecureSkipEmailVerified=False,
        )
    elif connector.type == "github":
        if connector.orgs:
            config["orgs"] = [{"name": org} for org in connector.orgs]
        config["loadAllGroups"] = False
    elif connector.type == "microsoft" and connector.tenant:
        config["tenant"] = connector.tenant
    return {"type": connector.type, "id": connector.id, "name": connector.name, "config": config}


def apply_sso(
    objects: Sequence[Mapping[str, Any]],
    sso: Sso,
    issuer: str,
    client_secrets: Mapping[str, str],
) -> list[KubeObject]:
    """Dex's connectors (each client secret a variable of Secret auth/dex-passwords, never in
    the ConfigMap), and the static admin login kept or switched off."""
    callback = f"{issuer}/callback"

    def dex_config(config_map: KubeObject) -> None:
        config = yaml.load(config_map["data"]["config.yaml"], Loader=YAML_LOADER)
        if sso.connectors:
            config["connectors"] = [_dex_connector(c, callback) for c in sso.connectors]
        if not sso.static_login:
            config["enablePasswordDB"] = False
            config.pop("staticPasswords", None)
        config_map["data"]["config.yaml"] = yaml.dump(config, Dumper=YAML_DUMPER, sort_keys=False)

    def secrets(secret: KubeObject) -> None:
        _set_secret_values(
            secret,
            {sso_secret_variable(c.id): client_secrets[c.id] for c in sso.connectors},
        )

    missing = [c.id for c in sso.connectors if c.id not in client_secrets]
    if missing:
        raise KubeflowConfigError(f"no client secret for dex connectors {missing}")
    out, found = _rewrite(
        objects, lambda o: _is(o, "ConfigMap", "auth") and name_of(o) == "dex", dex_config
    )
    out, held = _rewrite(
        out, lambda o: _is(o, "Secret", "auth") and name_of(o) == "dex-passwords", secrets
    )
    if (sso.connectors or not sso.static_login) and not (found and held):
        raise TransformError("single sign-on needs dex: ConfigMap and Secret auth/dex-passwords")
    return out


def apply_culling(objects: Sequence[Mapping[str, Any]], culling: Culling) -> list[KubeObject]:
    """The notebook controller's culling settings (its generated ConfigMap in `kubeflow`).

    The controller reads them as environment variables; the config digest annotation rolls
    it when they change. A culled notebook is scaled to zero and keeps its volume.
    """
    values = {
        "ENABLE_CULLING": "true" if culling.enabled else "false",
        "CULL_IDLE_TIME": str(culling.idle_minutes),
        "IDLENESS_CHECK_PERIOD": str(culling.check_period_minutes),
    }

    def is_config(obj: Mapping[str, Any]) -> bool:
        return _is(obj, "ConfigMap", "kubeflow") and _generated_name_matches(
            name_of(obj), "notebook-controller-config"
        )

    def set_values(config: KubeObject) -> None:
        config.setdefault("data", {}).update(values)

    out, count = _rewrite(objects, is_config, set_values)
    if count == 0 and any(
        o.get("kind") == "Deployment" and name_of(o) == ("notebook-controller-deployment")
        for o in objects
    ):
        raise TransformError(
            "the notebook controller is rendered without its notebook-controller-config "
            "ConfigMap: upstream changed shape, culling cannot be set"
        )
    return out


# --- training runtimes --------------------------------------------------------------------


def training_runtime_names(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ClusterTrainingRuntimes rendered (none when Trainer is not installed)."""
    return sorted(name_of(o) for o in objects if o.get("kind") == TRAINING_RUNTIME_KIND)


def apply_training_runtimes(
    objects: Sequence[Mapping[str, Any]], gpu_groups: Sequence[GpuGroup]
) -> list[KubeObject]:
    """Every pod template of every ClusterTrainingRuntime, whatever its replicated jobs are
    called: no Istio sidecar (it breaks torch's rendezvous between pods), and tolerations
    for every GPU group's taints (made as the device plugin's are, ``union_tolerations``),
    so a TrainJob's per-job placement (``spec.podTemplateOverrides``) can put it on any
    tainted GPU group."""
    tolerations = union_tolerations(gpu_groups)

    def edit(runtime: KubeObject) -> None:
        where = f"{TRAINING_RUNTIME_KIND} {name_of(runtime)}"
        jobs = ((runtime.get("spec") or {}).get("template") or {}).get("spec") or {}
        replicated = jobs.get("replicatedJobs") or []
        if not replicated:
            raise TransformError(f"{where} has no spec.template.spec.replicatedJobs")
        for job in replicated:
            template = ((job.get("template") or {}).get("spec") or {}).get("template")
            if not isinstance(template, dict):
                raise TransformError(
                    f"{where}: replicated job {job.get('name')} has no pod template "
                    "(template.spec.template)"
                )
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels[ISTIO_INJECT_LABEL] = "false"
            if tolerations:
                spec = template.setdefault("spec", {})
                present = list(spec.get("tolerations") or [])
                spec["tolerations"] = present + [t for t in tolerations if t not in present]

    out, _ = _rewrite(objects, lambda o: o.get("kind") == TRAINING_RUNTIME_KIND, edit)
    return out


# --- everything together -------------------------------------------------------------------


def transform_manifests(
    objects: Sequence[Mapping[str, Any]],
    args: KubeflowArgs,
    credentials: KubeflowCredentials,
    notebooks: NotebookSetup | None = None,
) -> list[KubeObject]:
    """All transformations in order; raises if an upstream default credential survives."""
    notebooks = notebooks or NotebookSetup()
    kubeflow = args.kubeflow
    out = apply_http_mode(objects, kubeflow.http_mode)
    out = apply_credentials(out, args.admin_email, credentials)
    out = apply_access(out, args.access)
    out = apply_sso(out, kubeflow.sso, args.access.issuer, credentials.sso_client_secrets)
    # PodDefaults need the notebook admission webhook's CRD; without it there are none.
    pod_defaults = any(
        o.get("kind") == "CustomResourceDefinition" and name_of(o) == "poddefaults.kubeflow.org"
        for o in out
    )
    out = apply_spawner_config(
        out,
        args.gpu_groups,
        kubeflow.notebook_images,
        stack_image=notebooks.image,
        default_configurations=(FNJOB_LABEL,) if pod_defaults else (),
    )
    taken = {name_of(o) for o in out if o.get("kind") == "Profile"}
    clashes = sorted(p.name for p in kubeflow.profiles if p.name in taken)
    if clashes:
        raise KubeflowConfigError(f"profiles {clashes} are already defined by upstream manifests")
    # Upstream's example profile now belongs to the admin; it is managed like the others.
    adopted = UPSTREAM_EXAMPLE_PROFILE in taken
    default_quota = kubeflow.default_quota.hard()
    if adopted and default_quota:
        out, _ = _rewrite(
            out,
            lambda o: _is(o, "Profile") and name_of(o) == UPSTREAM_EXAMPLE_PROFILE,
            lambda o: o.setdefault("spec", {}).update(quota_spec(default_quota)),
        )
    out = apply_culling(out, kubeflow.culling)
    runtimes = training_runtime_names(out)
    runtime = kubeflow.training.default_runtime if runtimes else None
    if runtime is not None and runtime not in runtimes:
        raise TrainingRuntimeError(runtime, runtimes)
    out = apply_training_runtimes(out, args.gpu_groups)
    setup = (
        dataclasses.replace(
            notebooks,
            gpu_groups=args.gpu_groups,
            job_timeout_seconds=kubeflow.job_timeout_hours * 3600,
            training_runtime=runtime,
        )
        if pod_defaults
        else None
    )
    out += profile_objects(
        kubeflow.profiles,
        default_quota=kubeflow.default_quota,
        adopted_owner=args.admin_email if adopted else None,
        docker_configs=credentials.docker_configs
        if kubeflow.registry_access == "docker-config"
        else {},
        notebooks=setup,
    )
    out = annotate_config_digests(out)
    findings = find_default_credentials(out)
    if findings:
        raise DefaultCredentialError(findings)
    return out
