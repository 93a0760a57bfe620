"""Structural checks of deploy/: Dockerfile, entrypoint, compose.yaml and the Kubernetes manifests.

No container engine is needed (none is assumed): the files are parsed and cross-checked against the
code they describe (``shared.settings.Settings``, ``shared.topics``, ``services/<name>/app.py``).
``docker compose config`` and ``kubectl kustomize`` run only where those tools work offline.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import topics
from shared.settings import DEFAULT_HTTP_PORTS, SERVICE_NAMES, Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = DEPLOY / "entrypoint.sh"

CONTAINER_PORT = 8080
DATA_DIR = "/var/lib/mailsvc"
# Variables read by deploy/entrypoint.sh only, not by the application (so not Settings fields).
ENTRYPOINT_ONLY_ENV = {"MAILSVC_MIGRATE_ON_START"}
# Topics nobody in mailsvc consumes, hence without a dead-letter twin.
# Settings every deployment has to provide (the rest have usable defaults).
REQUIRED_ENV = {
    "MAILSVC_KAFKA_BOOTSTRAP",
    "MAILSVC_DATABASE_URL",
    "MAILSVC_SMTP_HOST",
    "MAILSVC_SMTP_PORT",
    "MAILSVC_SMTP_TLS",
    "MAILSVC_MASTER_KEY",
    "MAILSVC_MAIL_DOMAIN",
    "MAILSVC_LOG_JSON",
    "MAILSVC_DATA_DIR",
}
COMPOSE_SERVICES = {"kafka", "postgres", "mailpit", "kafka-init", "migrate", *SERVICE_NAMES}


# --------------------------------------------------------------------------- helpers


def load_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def settings_env_names() -> set[str]:
    return {f"MAILSVC_{name.upper()}" for name in Settings.model_fields}


def env_dict(env: Any) -> dict[str, str]:
    """Compose ``environment`` in either form (mapping or list of KEY=VALUE)."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    out = {}
    for item in env:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def depends_on(service: dict) -> dict[str, str]:
    """Compose ``depends_on`` in either form, as {service: condition}."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def entrypoint_service_module() -> tuple[set[str], str]:
    """The service names entrypoint.sh accepts and the `faststream run` target template."""
    text = ENTRYPOINT.read_text()
    match = re.search(r'faststream run "?(services\.\$\{?cmd\}?\.app:app)"?', text)
    assert match, "entrypoint.sh must `faststream run services.${cmd}.app:app`"
    # The case label closest above `faststream run`, e.g. "mass_mailer | mail_scanner | event_triggers)".
    labels = re.findall(r"^\s*([\w |]+)\)\s*$", text[: match.start()], re.M)
    assert labels, "entrypoint.sh: no case branch leading to `faststream run`"
    names = {n.strip() for n in labels[-1].split("|")}
    return names, match.group(1).replace("${cmd}", "{cmd}").replace("$cmd", "{cmd}")


def module_file(target: str) -> Path:
    """``services.x.app:app`` -> repo path of the module."""
    module, _, _ = target.partition(":")
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


def defines_top_level(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (alias.asname or alias.name) == name for alias in node.names
        ):
            return True
    return False


def as_settings(env: dict[str, str]) -> Settings:
    """Validate MAILSVC_* variables as the app would (ignoring any .env file and the test's env)."""
    fields = {k.removeprefix("MAILSVC_").lower(): v for k, v in env.items() if k not in ENTRYPOINT_ONLY_ENV}
    return Settings(_env_file=None, **fields)


def assert_runs_service(argv: list[str], service: str, where: str) -> None:
    """``argv`` (the container's command) makes the entrypoint run ``service``'s app, which exists."""
    names, template = entrypoint_service_module()
    assert argv, f"{where}: no command"
    assert argv[0] == service, f"{where}: command {argv} does not start {service}"
    assert service in names, f"{where}: entrypoint.sh does not accept {service!r}"
    target = template.format(cmd=service)
    path = module_file(target)
    assert path.is_file(), f"{where}: {target} -> {path.relative_to(REPO)} does not exist"
    assert defines_top_level(path, target.partition(":")[2]), f"{path.relative_to(REPO)} defines no `app`"


# --------------------------------------------------------------------------- YAML


def all_yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_deploy_files_exist():
    for path in (DOCKERFILE, ENTRYPOINT, COMPOSE_FILE, K8S / "kustomization.yaml", DEPLOY / "README.md"):
        assert path.is_file(), path


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path):
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    (doc,) = load_docs(COMPOSE_FILE)
    return doc


@pytest.fixture(scope="module")
def app_services(compose) -> dict[str, dict]:
    """Compose services built from deploy/Dockerfile (migrate + the three services)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def test_compose_has_required_services(compose):
    assert COMPOSE_SERVICES <= set(compose["services"])


def test_compose_depends_on_existing_services(compose):
    services = compose["services"]
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        for dep, condition in depends_on(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert dep != name
            assert condition in conditions, f"{name} -> {dep}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is a one-shot job"


def test_compose_services_wait_for_infrastructure_and_jobs(compose):
    services = compose["services"]
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    assert depends_on(services["kafka-init"]).get("kafka") == "service_healthy"
    for name in SERVICE_NAMES:
        deps = depends_on(services[name])
        assert deps.get("kafka-init") == "service_completed_successfully", name
        assert deps.get("migrate") == "service_completed_successfully", name


def test_compose_kafka_is_kraft(compose):
    services = compose["services"]
    for name, svc in services.items():
        assert "zookeeper" not in name.lower()
        assert "zookeeper" not in str(svc.get("image", "")).lower()
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = env_dict(kafka.get("environment"))
    assert not any("ZOOKEEPER" in key for key in env)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "healthcheck" in kafka
    # The data directory is on a named volume, so the broker keeps its data across restarts.
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in kafka["volumes"]}
    assert mounts.get(env["KAFKA_LOG_DIRS"]) in compose["volumes"]


def test_compose_postgres_and_mailpit(compose):
    services = compose["services"]
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:15")
    assert "healthcheck" in pg
    assert any(str(v).split(":")[0] in compose["volumes"] for v in pg["volumes"])
    assert str(services["mailpit"]["image"]).startswith("axllent/mailpit")


def test_compose_build_uses_deploy_dockerfile(app_services):
    assert set(app_services) == {"migrate", *SERVICE_NAMES}
    for name, svc in app_services.items():
        context = (COMPOSE_FILE.parent / svc["build"]["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_compose_service_runs_its_app(compose, service):
    svc = compose["services"][service]
    assert "entrypoint" not in svc, "the image's entrypoint maps the command to the app"
    assert_runs_service(as_argv(svc.get("command")), service, f"compose {service}")
    expected = f"{DEFAULT_HTTP_PORTS[service]}:{CONTAINER_PORT}"
    assert [str(p) for p in svc["ports"]] == [expected]


def test_compose_migrate_job(compose):
    assert as_argv(compose["services"]["migrate"]["command"]) == ["migrate"]


def test_compose_app_env_names_are_settings(app_services):
    known = settings_env_names() | ENTRYPOINT_ONLY_ENV
    for name, svc in app_services.items():
        env = env_dict(svc.get("environment"))
        assert REQUIRED_ENV <= set(env), f"{name}: missing {REQUIRED_ENV - set(env)}"
        for key in env:
            assert key.startswith("MAILSVC_"), f"{name}: {key} is not a MAILSVC_ setting"
            assert key in known, f"{name}: {key} is not a field of shared.settings.Settings"


def test_compose_app_env_values_validate(app_services):
    for svc in app_services.values():
        settings = as_settings(env_dict(svc.get("environment")))
        assert str(settings.data_dir) == DATA_DIR
        assert settings.log_json is True


def test_compose_no_mailsvc_env_on_infrastructure(compose, app_services):
    """Catch MAILSVC_* typos anywhere in the file, not only on the app services."""
    known = settings_env_names() | ENTRYPOINT_ONLY_ENV
    for name, svc in compose["services"].items():
        for key in env_dict(svc.get("environment")):
            if key.startswith("MAILSVC_"):
                assert name in app_services and key in known, f"{name}: {key}"


def test_compose_topics_match_shared_topics(compose):
    init = compose["services"]["kafka-init"]
    env = env_dict(init["environment"])
    created = env["TOPICS"].split()
    expected = [*topics.ALL_TOPICS, *(topics.dlq(t) for t in topics.CONSUMED_TOPICS)]
    assert len(created) == len(set(created)), "duplicate topic"
    assert sorted(created) == sorted(expected)
    # ...and the job really creates what TOPICS lists.
    script = " ".join(as_argv(init.get("entrypoint")) + [str(c) for c in init["command"]])
    assert "$$TOPICS" in script and "kafka-topics.sh" in script and "--create" in script
    assert init["image"] == compose["services"]["kafka"]["image"]
    assert init.get("restart") == "no"


def test_docker_compose_config():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("docker CLI without the compose plugin")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with comments dropped and continuation lines joined."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def global_args() -> dict[str, str]:
    args = {}
    for ins, value in dockerfile_instructions():
        if ins == "FROM":
            break
        if ins == "ARG":
            key, _, default = value.partition("=")
            args[key] = default
    return args


def copy_sources(args: str) -> list[str]:
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    return parts[:-1]


def test_dockerfile_is_multi_stage_on_python_311_slim():
    froms = [v for ins, v in dockerfile_instructions() if ins == "FROM"]
    assert len(froms) >= 2
    image = final_stage()[0][1].split()[0]
    for key, value in global_args().items():
        image = image.replace(f"${{{key}}}", value)
    assert image == "python:3.11-slim"


def test_dockerfile_runtime_is_non_root_with_entrypoint():
    stage = final_stage()
    users = [v for ins, v in stage if ins == "USER"]
    assert users, "the runtime stage must switch to a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric USER, so that Kubernetes runAsNonRoot can verify it"
    # Kubernetes runs with the same uid.
    for doc in k8s_objects():
        if doc["kind"] in ("Deployment", "Job"):
            assert str(doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == user
    entrypoints = [v for ins, v in stage if ins == "ENTRYPOINT"]
    assert entrypoints
    assert any(ins == "EXPOSE" and str(CONTAINER_PORT) in v.split() for ins, v in stage)
    # The default command is the help text, not a service.
    assert [v for ins, v in stage if ins == "CMD"][-1] == '["help"]'


def test_dockerfile_installs_from_lock():
    instructions = dockerfile_instructions()
    copies = [copy_sources(v) for ins, v in instructions if ins == "COPY" and "--from=" not in v]
    assert any("uv.lock" in sources for sources in copies)
    syncs = [v for ins, v in instructions if ins == "RUN" and "uv sync" in v]
    assert syncs and all("--frozen" in v or "--locked" in v for v in syncs)
    assert all("--no-dev" in v for v in syncs)


def test_dockerfile_copies_entrypoint():
    stage = final_stage()
    copies = [copy_sources(v) for ins, v in stage if ins == "COPY"]
    assert any("deploy/entrypoint.sh" in sources for sources in copies)


def test_dockerfile_copy_sources_exist_and_are_not_ignored():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for ins, value in dockerfile_instructions():
        if ins != "COPY" or "--from=" in value:
            continue
        for source in copy_sources(value):
            if any(ch in source for ch in "*?["):
                continue  # optional by design (e.g. README.m[d])
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            allowed = {f"!{source}", f"!{source}/", f"!{source.rstrip('/')}/"}
            assert allowed & set(ignore), f"COPY {source}: not allow-listed in Dockerfile.dockerignore"


def test_dockerfile_env_names_are_settings():
    known = settings_env_names()
    for ins, value in dockerfile_instructions():
        if ins == "ENV":
            for key in re.findall(r"(MAILSVC_\w+)=", value):
                assert key in known, key


# --------------------------------------------------------------------------- entrypoint.sh


@pytest.fixture
def fake_bin(tmp_path: Path) -> tuple[Path, Path]:
    """`mailsvc` and `faststream` stand-ins that log their argv."""
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mailsvc", "faststream"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir, log


def run_entrypoint(fake_bin: tuple[Path, Path], *args: str, **env: str) -> tuple[list[str], str]:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no /bin/sh")
    bin_dir, log = fake_bin
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    environ.update(env, PATH=f"{bin_dir}{os.pathsep}{environ.get('PATH', '')}")
    result = subprocess.run(
        [sh, str(ENTRYPOINT), *args], capture_output=True, text=True, env=environ, check=False
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return calls, result.stdout


def test_entrypoint_syntax():
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no /bin/sh")
    assert subprocess.run([sh, "-n", str(ENTRYPOINT)], check=False).returncode == 0
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh")


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_entrypoint_starts_service_after_migrating(fake_bin, service):
    calls, _ = run_entrypoint(fake_bin, service)
    assert calls == [
        "mailsvc migrate",
        f"faststream run services.{service}.app:app --host 0.0.0.0 --port {CONTAINER_PORT}",
    ]


def test_entrypoint_skips_migration_when_disabled(fake_bin):
    calls, _ = run_entrypoint(
        fake_bin, "event_triggers", "--log-level", "debug", MAILSVC_MIGRATE_ON_START="false"
    )
    assert calls == [
        "faststream run services.event_triggers.app:app"
        f" --host 0.0.0.0 --port {CONTAINER_PORT} --log-level debug"
    ]


def test_entrypoint_migrate_and_passthrough(fake_bin):
    assert run_entrypoint(fake_bin, "migrate")[0] == ["mailsvc migrate"]
    assert (
        run_entrypoint(fake_bin, "create-api-key", "--name", "x")[0][-1] == "mailsvc create-api-key --name x"
    )


def test_entrypoint_default_is_help(fake_bin):
    calls, stdout = run_entrypoint(fake_bin)
    assert calls == ["mailsvc --help"]
    assert "mass_mailer" in stdout and "migrate" in stdout


def test_entrypoint_only_env_is_read_by_entrypoint():
    text = ENTRYPOINT.read_text()
    for key in ENTRYPOINT_ONLY_ENV:
        assert key in text
        assert key not in settings_env_names(), f"{key} became a setting: drop it from ENTRYPOINT_ONLY_ENV"


# --------------------------------------------------------------------------- Kubernetes


def kustomization() -> dict:
    (doc,) = load_docs(K8S / "kustomization.yaml")
    return doc


def k8s_objects() -> list[dict]:
    return [doc for resource in kustomization()["resources"] for doc in load_docs(K8S / resource)]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in k8s_objects() if doc["kind"] == kind]


def test_kustomization_resources_exist_and_cover_the_directory():
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert manifests == set(resources), "every manifest is listed, and only those"


def test_k8s_objects_have_kind_and_name():
    kinds = {doc["kind"] for doc in k8s_objects()}
    for kind in ("Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget"):
        assert kind in kinds
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in k8s_objects()]
    assert len(names) == len(set(names))
    (namespace,) = of_kind("Namespace")
    assert kustomization()["namespace"] == namespace["metadata"]["name"]


def pod_specs() -> list[tuple[str, dict]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
        for doc in k8s_objects()
        if doc["kind"] in ("Deployment", "Job")
    ]


def deployment_for(service: str) -> dict:
    found = [
        doc
        for doc in of_kind("Deployment")
        if as_argv(doc["spec"]["template"]["spec"]["containers"][0].get("args"))[:1] == [service]
    ]
    assert len(found) == 1, f"expected one Deployment running {service}"
    return found[0]


def test_k8s_deployments_are_the_three_services():
    assert len(of_kind("Deployment")) == len(SERVICE_NAMES)
    for service in SERVICE_NAMES:
        deployment_for(service)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_k8s_deployment(service):
    deployment = deployment_for(service)
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2, f"{name}: workers scale through consumer groups"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "the image's entrypoint maps args to the app"
    assert_runs_service(as_argv(container["args"]), service, f"Deployment {name}")

    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert CONTAINER_PORT in ports.values()

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert probe("livenessProbe") == ("/healthz", CONTAINER_PORT)
    assert probe("readinessProbe") == ("/readyz", CONTAINER_PORT)

    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"{name}: {section}"

    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("where,pod", pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_k8s_pods_are_locked_down(where, pod):
    pod_sc = pod.get("securityContext", {})
    for container in pod["containers"]:
        sc = container.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert DATA_DIR in mounts, f"{where}: {DATA_DIR} must be writable"
        assert "emptyDir" in volumes[mounts[DATA_DIR]], where
        assert "resources" in container, where


def test_k8s_migration_job():
    (job,) = of_kind("Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert as_argv(container["args"]) == ["migrate"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")


def test_k8s_images_are_one_image():
    images = {c["image"].split(":")[0] for _, pod in pod_specs() for c in pod["containers"]}
    assert len(images) == 1
    assert {i["name"] for i in kustomization().get("images", [])} >= images


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_k8s_service_and_pdb_select_the_pods(service):
    deployment = deployment_for(service)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p.get("name"): p["containerPort"] for p in container["ports"]}

    services = [s for s in of_kind("Service") if s["spec"]["selector"].items() <= labels.items()]
    assert len(services) == 1, f"one Service for {service}"
    (port,) = services[0]["spec"]["ports"]
    target = port.get("targetPort", port["port"])
    assert (port_names[target] if isinstance(target, str) else target) == CONTAINER_PORT

    pdbs = [
        p
        for p in of_kind("PodDisruptionBudget")
        if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(pdbs) == 1, f"one PodDisruptionBudget for {service}"
    pdb = pdbs[0]["spec"]
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)
    # A PDB that allows no disruption at all would block node drains.
    if "minAvailable" in pdb:
        assert int(pdb["minAvailable"]) < deployment["spec"]["replicas"]
    else:
        assert int(pdb["maxUnavailable"]) >= 1


def k8s_env() -> tuple[dict[str, str], dict[str, str]]:
    (config,) = of_kind("ConfigMap")
    (secret,) = of_kind("Secret")
    secret_values = {**secret.get("stringData", {}), **secret.get("data", {})}
    return {k: str(v) for k, v in config["data"].items()}, {k: str(v) for k, v in secret_values.items()}


def test_k8s_env_names_are_settings():
    config, secret = k8s_env()
    known = settings_env_names() | ENTRYPOINT_ONLY_ENV
    assert not set(config) & set(secret), "a key set in both ConfigMap and Secret"
    for key in [*config, *secret]:
        assert key.startswith("MAILSVC_") and key in known, key
    for _, pod in pod_specs():
        for container in pod["containers"]:
            for var in container.get("env", []):
                assert var["name"] in known, var["name"]
    assert REQUIRED_ENV <= set(config) | set(secret)
    # Secrets belong in the Secret.
    assert {"MAILSVC_MASTER_KEY", "MAILSVC_DATABASE_URL", "MAILSVC_SMTP_PASSWORD"} <= set(secret)


def test_k8s_config_values_validate():
    config, _ = k8s_env()
    settings = as_settings(config)
    assert str(settings.data_dir) == DATA_DIR
    assert settings.http_port in (None, CONTAINER_PORT)


def test_k8s_secret_is_a_template():
    _, secret = k8s_env()
    for key, value in secret.items():
        assert "CHANGE-ME" in value, f"{key}: the committed Secret must hold placeholders only"


def test_k8s_env_from_refers_to_defined_objects():
    config_names = {c["metadata"]["name"] for c in of_kind("ConfigMap")}
    secret_names = {s["metadata"]["name"] for s in of_kind("Secret")}
    for where, pod in pod_specs():
        refs = pod["containers"][0]["envFrom"]
        assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= config_names, where
        assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} <= secret_names, where
        assert any("configMapRef" in r for r in refs) and any("secretRef" in r for r in refs), where


def test_kubectl_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(built) == len(k8s_objects())
    namespaced = [d for d in built if d["kind"] != "Namespace"]
    assert all(d["metadata"].get("namespace") == kustomization()["namespace"] for d in namespaced)
