"""Everything in deploy/ parses and refers only to what exists: images, commands, settings."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
OUR_IMAGE = f"vroegsignaal:{VERSION}"
OTHER_IMAGES = {"postgres:15"}
SETTINGS = {f"VS_{name.upper()}" for name in Settings.model_fields}
runner = CliRunner()

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _assert_command(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"`vroegsignaal {' '.join(args)}` is not a command"


def _containers(doc: Any) -> list[dict[str, Any]]:
    return [
        c
        for node in _walk(doc)
        if isinstance(node, dict) and isinstance(node.get("containers"), list)
        for c in node["containers"]
    ]


def test_there_are_manifests() -> None:
    names = {p.name for p in YAML_FILES}
    assert {"compose.yaml", "deployment-api.yaml", "cronjob-run.yaml", "job-migrate.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_manifest_parses_and_refers_to_what_exists(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        for container in _containers(doc):
            assert container["image"] == OUR_IMAGE
            _assert_command(container["args"])
            for env in container.get("env", []):
                assert env["name"] in SETTINGS, f"{path.name}: unknown setting {env['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if doc.get("kind") == "CronJob":
            assert doc["spec"]["concurrencyPolicy"] == "Forbid"
            assert doc["spec"]["timeZone"] == "Europe/Amsterdam"
        if doc.get("kind") == "ConfigMap":
            for name in doc["data"]:
                assert name in SETTINGS, f"{path.name}: unknown setting {name}"
        if doc.get("kind") == "Deployment":
            probes = [c.get("readinessProbe") for c in _containers(doc)]
            assert all(probes), f"{path.name}: a container without a readiness probe"


def test_compose_services() -> None:
    compose = _documents(DEPLOY / "compose.yaml")[0]
    services = compose["services"]
    assert {"db", "migrate", "api", "sftp", "scheduler"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert image == OUR_IMAGE or image in OTHER_IMAGES, name
        if image == OUR_IMAGE:
            _assert_command(service["command"])
            for key in service["environment"]:
                assert key in SETTINGS, f"compose {name}: unknown setting {key}"
            for secret in service.get("secrets", []):
                assert secret in compose["secrets"]


def test_crontab_runs_existing_commands() -> None:
    lines = (DEPLOY / "cron" / "vroegsignaal.crontab").read_text().splitlines()
    settings = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
    jobs = [line for line in lines if line and line[0] != "#" and not settings.match(line)]
    assert len(jobs) == 4
    for line in jobs:
        command = line.split("bin/vroegsignaal", 1)[1].split(">>", 1)[0]
        _assert_command(shlex.split(command))


def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, flags=re.MULTILINE):
        for part in source.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which does not exist"
    assert "USER 10001" in text
    assert "--require-hashes requirements-runtime.lock" in text


def test_proxy_forwards_the_client_certificate_the_service_reads() -> None:
    """The proxy sends the whole certificate and its verification under the names services.deps
    reads, overwriting them on every request; no SHA-1 fingerprint, no subject."""
    from services.deps import CLIENT_CERT_HEADER, CLIENT_CERT_VERIFY_HEADER

    proxy = DEPLOY / "proxy"
    lines = [
        line.split("#", 1)[0].strip()
        for line in (proxy / "vroegsignaal-proxy.conf").read_text().splitlines()
    ]
    headers = {
        parts[1].lower(): parts[2].rstrip(";")
        for parts in (line.split() for line in lines)
        if len(parts) == 3 and parts[0] == "proxy_set_header"
    }
    assert headers[CLIENT_CERT_HEADER] == "$ssl_client_escaped_cert"
    assert headers[CLIENT_CERT_VERIFY_HEADER] == "$ssl_client_verify"
    assert headers["x-forwarded-for"] == "$remote_addr"
    assert not any("fingerprint" in h or "subject" in h for h in headers)
    nginx = (proxy / "nginx.conf").read_text()
    assert "ssl_verify_client optional;" in nginx
    assert nginx.count("include /etc/nginx/vroegsignaal-proxy.conf;") == 2
    assert "VS_TRUSTED_PROXIES" in nginx
    assert "VS_TRUSTED_PROXIES" in SETTINGS


def test_every_deployed_process_keeps_the_allocators_pages_as_the_benchmark_does() -> None:
    """The image (compose and Kubernetes run it), the systemd unit and the crontab set the
    allocator setting the benchmark measures with (bench.run.DEPLOYED_ENV)."""
    from bench.run import DEPLOYED_ENV

    for path in (
        DEPLOY / "Dockerfile",
        DEPLOY / "sftp" / "vroegsignaal-sftp-watch.service",
        DEPLOY / "cron" / "vroegsignaal.crontab",
    ):
        text = path.read_text(encoding="utf-8")
        for name, value in DEPLOYED_ENV.items():
            assert f"{name}={value}" in text, f"{path.name} lacks {name}={value}"


def test_the_proxy_closes_idle_connections_to_the_api_before_the_api_does() -> None:
    """nginx reuses its idle connections to the API for up to its upstream keepalive_timeout; the
    API must keep them open longer (VS_HTTP_KEEP_ALIVE_SECONDS), or it may close one just as
    nginx sends a request on it, and the client gets a 502."""
    nginx = (DEPLOY / "proxy" / "nginx.conf").read_text()
    upstream = nginx.split("upstream vroegsignaal_api {", 1)[1].split("}", 1)[0]
    timeouts = [
        line.split()[1].rstrip(";")
        for line in (raw.split("#", 1)[0].strip() for raw in upstream.splitlines())
        if line.startswith("keepalive_timeout ")
    ]
    assert len(timeouts) == 1, "the upstream block sets no keepalive_timeout"
    assert timeouts[0].endswith("s")
    assert int(timeouts[0][:-1]) < Settings().http_keep_alive_seconds
    assert "VS_HTTP_KEEP_ALIVE_SECONDS" in SETTINGS


def test_compose_trusts_only_the_networks_gateway_as_the_proxy() -> None:
    """A container on the network (the SFTP drop, the scheduler) may not claim a certificate."""
    import ipaddress

    compose = _documents(DEPLOY / "compose.yaml")[0]
    (network,) = compose["networks"]["default"]["ipam"]["config"]
    trusted = compose["services"]["api"]["environment"]["VS_TRUSTED_PROXIES"]
    assert trusted == network["gateway"]
    assert ipaddress.ip_address(trusted) in ipaddress.ip_network(network["subnet"])


def test_only_the_ingress_controller_reaches_the_api_in_kubernetes() -> None:
    (policy,) = _documents(DEPLOY / "k8s" / "networkpolicy-api.yaml")
    (api,) = _documents(DEPLOY / "k8s" / "deployment-api.yaml")
    assert policy["spec"]["podSelector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"namespaceSelector", "podSelector"}  # one entry: both must hold


def test_the_image_owns_the_folders_compose_mounts_volumes_on() -> None:
    """A new named volume takes the owner of the folder it is mounted on; a folder the image does
    not have would be root's, and the unprivileged user could not write the SFTP drop."""
    text = (DEPLOY / "Dockerfile").read_text()
    compose = _documents(DEPLOY / "compose.yaml")[0]
    for service in compose["services"].values():
        if service["image"] != OUR_IMAGE:
            continue
        for volume in service.get("volumes", []):
            target = volume.split(":")[1]
            assert target in text, f"the image does not make {target}"
    assert "chown -R 10001:10001 /var/lib/vroegsignaal" in text


def test_the_proxy_refuses_a_body_too_large_with_the_services_problem_document() -> None:
    import json

    from shared.errors import PayloadTooLarge

    nginx = (DEPLOY / "proxy" / "nginx.conf").read_text()
    assert "error_page 413 @too_large;" in nginx
    body = re.search(r"location @too_large \{.*?return 413 '(.+?)';", nginx, flags=re.DOTALL)
    assert body is not None
    problem = json.loads(body.group(1))
    expected = PayloadTooLarge("x").problem()
    assert (problem["type"], problem["title"], problem["status"]) == (
        expected["type"],
        expected["title"],
        413,
    )
    assert "default_type application/problem+json;" in nginx
    # HTTP/2 as every nginx reads it (the `http2 on;` directive is unknown before 1.25.1: Debian
    # 12's 1.22 refuses the whole file; checked with `nginx -t` on it).
    assert "listen 443 ssl http2;" in nginx
    assert "http2 on;" not in nginx.replace("`http2 on;`", "")


def test_openssh_partners_cannot_set_a_files_times() -> None:
    """sftp-watch judges the delivery window and the end of an upload by the modification time."""
    config = (DEPLOY / "sftp" / "sshd_config.vroegsignaal").read_text()
    (command,) = re.findall(r"^\s*ForceCommand internal-sftp (.+)$", config, flags=re.MULTILINE)
    denied = shlex.split(command)[shlex.split(command).index("-P") + 1].split(",")
    assert {"setstat", "fsetstat", "lsetstat"} <= set(denied)
