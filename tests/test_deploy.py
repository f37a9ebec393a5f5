"""Deployment files: Kubernetes and IoT Edge manifests against their schemas, compose,
Dockerfiles, and the Pi installer's refusal of 32-bit systems."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_kubernetes_manifests_validate_against_the_api_schemas():
    import kubernetes_validate

    kinds = set()
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
            kinds.add(doc["kind"])
    assert kinds == {"DaemonSet", "ConfigMap", "Namespace"}


def test_daemonset_probes_devices_and_node_selection():
    daemonset = yaml.safe_load((DEPLOY / "k8s" / "daemonset.yaml").read_text())
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["nodeSelector"]["edge-runtime/camera"] == "true"
    video = next(v for v in pod["volumes"] if v["name"] == "video0")
    assert video["hostPath"] == {"path": "/dev/video0", "type": "CharDevice"}
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "edge-runtime-token"
    config = yaml.safe_load(yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]["config.yaml"])
    from edge_runtime.config import Settings

    Settings.model_validate(config)  # the settings it carries are valid


def test_iot_edge_manifest_validates_and_its_create_options_are_docker_json():
    manifest = json.loads((DEPLOY / "iotedge" / "deployment.template.json").read_text())
    schema = json.loads((ROOT / "tests" / "schemas" / "iotedge-deployment.schema.json").read_text())
    jsonschema.validate(manifest, schema)
    module = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["edgeruntime"]
    assert module["restartPolicy"] == "always"
    create = json.loads(module["settings"]["createOptions"])
    host = create["HostConfig"]
    assert host["Devices"][0]["PathOnHost"] == "/dev/video0"
    assert host["PortBindings"]["8080/tcp"][0]["HostPort"] == "8080"
    assert any(b.endswith(":/var/lib/edge-runtime") for b in host["Binds"])
    assert "EDGE_RUNTIME_TOKEN" in module["env"]
    broken = json.loads(json.dumps(manifest))
    broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["edgeruntime"]["restartPolicy"] = "often"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_compose_file_maps_the_camera_and_persists_data():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    service = compose["services"]["edge-runtime"]
    assert "/dev/video0:/dev/video0" in service["devices"]
    assert service["restart"] in ("always", "unless-stopped")
    assert any(v.endswith(":/var/lib/edge-runtime") for v in service["volumes"])
    assert any(v.startswith("./models:/models") for v in service["volumes"])
    assert service["build"]["dockerfile"] == "Dockerfile.arm64"


def test_dockerfiles_run_unprivileged_with_a_health_check():
    arm64 = (ROOT / "Dockerfile.arm64").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", arm64, re.M)
    assert arm64.count("FROM ") == 2  # multi-stage
    for text in (arm64, (DEPLOY / "jetson" / "Dockerfile").read_text()):
        assert re.search(r"^USER 10001:10001$", text, re.M)
        assert "--groups video" in text and "EXPOSE 8080" in text and "HEALTHCHECK" in text and "/healthz" in text
    entry = DEPLOY / "docker" / "entrypoint.sh"
    assert entry.stat().st_mode & stat.S_IXUSR


def fake_system(tmp_path: Path, machine: str, bits: str) -> dict[str, str]:
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, output in (("uname", machine), ("getconf", bits)):
        (shims / name).write_text(f"#!/bin/sh\necho {output}\n")
        (shims / name).chmod(0o755)
    return {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}


@pytest.mark.parametrize(("machine", "bits"), [("armv7l", "32"), ("aarch64", "32")])
def test_pi_installer_refuses_32_bit_systems(tmp_path, machine, bits):
    proc = subprocess.run(["bash", str(DEPLOY / "pi" / "install.sh")], env=fake_system(tmp_path, machine, bits),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "32-bit" in proc.stderr and "onnxruntime" in proc.stderr and "64-bit Raspberry Pi OS" in proc.stderr


def test_pi_config_skeleton_is_valid():
    from edge_runtime.config import Settings

    Settings.model_validate(yaml.safe_load((DEPLOY / "pi" / "config.yaml").read_text()))
    Settings.model_validate(yaml.safe_load((DEPLOY / "jetson" / "config.yaml").read_text()))
    Settings.model_validate(yaml.safe_load((DEPLOY / "compose" / "config.example.yaml").read_text()))
