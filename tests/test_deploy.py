"""The deployment files: systemd unit, Dockerfile, Kubernetes manifests.

No Docker engine or cluster here: the Dockerfile's own install and entrypoint commands are
run in a fresh venv (paths mapped into tmp_path), the unit goes through
`systemd-analyze verify` (.ci/run installs it), and the YAML is checked for structure and its
settings for validity.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_statsig import FakeStatsig
from kit import SECRET, append, cli_env, event_line, wait_until

from forwarder.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


# -- Dockerfile -------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    env: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest)

    def one(self, instruction: str) -> str:
        found = [rest for ins, rest in self.steps if ins == instruction]
        assert len(found) == 1, f"{instruction}: {found}"
        return found[0]

    def all(self, instruction: str) -> list[str]:
        return [rest for ins, rest in self.steps if ins == instruction]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(ARG defaults before the first FROM, stages) of a Dockerfile."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        ins, _, rest = line.partition(" ")
        ins = ins.upper()
        rest = rest.strip()
        if ins == "FROM":
            parts = rest.split()
            base = parts[0]
            for k, v in args.items():
                base = base.replace("${" + k + "}", v)
            stages.append(Stage(base, parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif ins == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        elif ins == "ENV":
            stage = stages[-1]
            for token in shlex.split(rest):
                k, _, v = token.partition("=")
                stage.env[k] = v
            stage.steps.append((ins, rest))
        else:
            stages[-1].steps.append((ins, rest))
    return args, stages


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"exec form expected: {rest}"
    return [str(x) for x in value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def created_ids(run: str) -> tuple[int, int]:
    """(uid, gid) of the user the RUN commands create, its group made with an explicit gid."""
    words = shlex.split(run.replace("&&", " && "))

    def command(name: str) -> list[str]:
        i = words.index(name)
        end = words.index("&&", i) if "&&" in words[i:] else len(words)
        return words[i:end]

    def option(args: list[str], flag: str) -> str:
        return args[args.index(flag) + 1]

    groupadd, useradd = command("groupadd"), command("useradd")
    gid = int(option(groupadd, "--gid"))
    assert option(useradd, "--gid") in (groupadd[-1], str(gid)), "the user's group is the one made with that gid"
    assert "--user-group" not in useradd, "--user-group would make another group, with an arbitrary gid"
    return int(option(useradd, "--uid")), gid


def test_dockerfile_structure() -> None:
    _, stages = parse_dockerfile(ROOT / "Dockerfile")
    assert len(stages) == 2, "multi-stage: build, then runtime"
    build, final = stages
    assert build.name == "build" and final.base == build.base and final.base.startswith("python:")
    assert final.base.endswith("-slim")
    assert any("--from=build" in rest for rest in final.all("COPY")), "final stage copies the built venv"
    # no build tools in the final image: nothing installed there, pip removed
    final_run = " ".join(final.all("RUN"))
    assert "apt-get install" not in final_run and "pip install" not in final_run
    assert "pip uninstall" in final_run
    user = final.one("USER")
    assert user.split(":")[0] not in ("root", "0")
    uid, gid = created_ids(final_run)
    assert user == f"{uid}:{gid}", "USER runs as the user and group the image makes"
    assert final.one("STOPSIGNAL") == "SIGTERM"
    state_dir = final.env["FORWARDER_STATE_DIR"]
    assert state_dir in exec_form(final.one("VOLUME"))
    health = final.one("HEALTHCHECK")
    port = final.env["FORWARDER_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert f":{port}/healthz" in health
    assert exec_form(final.one("ENTRYPOINT")) == ["statsig-forwarder"]
    ignore = (ROOT / ".dockerignore").read_text()
    assert ".venv" not in ignore or "!" in ignore


def test_dockerfile_install_and_entrypoint_commands_work(tmp_path: Path, fake: FakeStatsig) -> None:
    """Run the build stage's RUN in a fresh venv, then the image's ENTRYPOINT+CMD and HEALTHCHECK."""
    _, (build, final) = parse_dockerfile(ROOT / "Dockerfile")
    venv = tmp_path / "venv"
    state = tmp_path / "state"
    logs = tmp_path / "log"
    logs.mkdir()
    port = free_port()
    image_paths = {
        build.env["VIRTUAL_ENV"]: str(venv),
        final.env["FORWARDER_STATE_DIR"]: str(state),
        "/var/log/app": str(logs),
        ":9464": f":{port}",
        "0.0.0.0": "127.0.0.1",
    }

    def mapped(text: str) -> str:
        for image, here in image_paths.items():
            text = text.replace(image, here)
        return text

    # the build context, as the COPY steps lay it out
    src = tmp_path / "src"
    src.mkdir()
    for rest in build.all("COPY"):
        *sources, dest = rest.split()
        for s in sources:
            if (ROOT / s).is_dir():
                shutil.copytree(ROOT / s, src / dest, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / s, src / dest)  # into the directory `dest`
    # `python` is the image's interpreter; here the one running the tests (it has pip)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {**os.environ, **{k: mapped(v) for k, v in build.env.items()}}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env.pop("PIP_NO_CACHE_DIR", None)  # reuse pip's wheel cache: same packages, quicker test
    for run in build.all("RUN"):
        proc = subprocess.run(["bash", "-ec", mapped(run)], cwd=src, env=env, capture_output=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert not (venv / "bin" / "pip").exists(), "the venv copied into the image carries no pip"

    # the container's command, with the image's environment
    append(logs / "events.ndjson", b"".join(event_line(i) for i in range(20)))
    run_env = cli_env(**{k: mapped(v) for k, v in final.env.items() if k != "PATH"},
                      STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_STATSIG_API=fake.url,
                      FORWARDER_FLUSH_INTERVAL="0.2", FORWARDER_CHECKPOINT_FSYNC_INTERVAL="0.2")
    run_env["PATH"] = f"{venv / 'bin'}:{os.environ['PATH']}"
    command = [mapped(x) for x in exec_form(final.one("ENTRYPOINT")) + exec_form(final.one("CMD"))]
    server = subprocess.Popen(command, env=run_env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert fake.wait_for(20), server.communicate()[1][-3000:] if server.poll() is not None else "no events"
        health = exec_form(mapped(final.one("HEALTHCHECK").split(" CMD ", 1)[1]))
        assert wait_until(lambda: subprocess.run(health, env=run_env, capture_output=True).returncode == 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
        server.send_signal(getattr(signal, final.one("STOPSIGNAL")))
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    assert (state / "checkpoints.json").exists()
    assert sorted(e["metadata"]["seq"] for e in fake.events) == list(range(20))


# -- systemd ------------------------------------------------------------------------------
UNIT = ROOT / "systemd" / "statsig-forwarder.service"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_systemd_unit_has_what_production_needs() -> None:
    u = unit_settings()
    assert u["Type"] == ["notify"] and u["Restart"] == ["on-failure"]
    assert u["StateDirectory"] == ["statsig-forwarder"]
    assert u.get("DynamicUser") == ["yes"] or "User" in u
    assert u["ProtectSystem"] == ["strict"] and u["NoNewPrivileges"] == ["yes"]
    assert u["ReadWritePaths"] and u["EnvironmentFile"] and u["WatchdogSec"]
    assert "run" in u["ExecStart"][0].split()
    env_example = (ROOT / "systemd" / "forwarder.env.example").read_text()
    assert "STATSIG_SERVER_SECRET_KEY=" in env_example
    # the example config is valid, and leaves state_dir to $STATE_DIRECTORY
    toml = ROOT / "systemd" / "forwarder.toml"
    assert "state_dir" not in tomllib.loads(toml.read_text())
    settings = load_settings(toml)
    assert settings.paths and settings.metrics_listen


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    def verify(text: str) -> str:
        unit = tmp_path / "statsig-forwarder.service"
        # verify checks that ExecStart exists: point it at this checkout's CLI
        unit.write_text(text.replace("/opt/statsig-forwarder/bin/statsig-forwarder",
                                     str(Path(sys.executable).parent / "statsig-forwarder")))
        tool = shutil.which("systemd-analyze")
        assert tool, "systemd-analyze missing: .ci/run installs it (apt-get install systemd)"
        proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, timeout=60)
        return f"rc={proc.returncode} {proc.stderr.decode()}".strip()

    text = UNIT.read_text()
    assert verify(text) == "rc=0"
    # the check can fail: a mistyped key is reported
    assert "Unknown key" in verify(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))


# -- Kubernetes ---------------------------------------------------------------------------
K8S = ROOT / "deploy" / "k8s"


def load(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_forwarder_container(c: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = env_of(c)
    assert env["STATSIG_SERVER_SECRET_KEY"] == {
        "secretKeyRef": {"name": "statsig-server-secret", "key": "STATSIG_SERVER_SECRET_KEY"}}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["FORWARDER_METRICS_LISTEN"].endswith(f":{ports['metrics']}")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert c["args"][0] == "run"
    # every FORWARDER_* variable is a real option with a valid value
    for k in list(os.environ):
        if k.startswith("FORWARDER_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("FORWARDER_"):
            monkeypatch.setenv(k, str(v))
    return load_settings(None, paths=c["args"][1:])


def mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}


def test_k8s_native_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    d = load("sidecar.yaml")
    assert d["kind"] == "Deployment"
    pod = d["spec"]["template"]["spec"]
    fwd = next(c for c in pod["initContainers"] if c["name"] == "statsig-forwarder")
    assert fwd["restartPolicy"] == "Always", "native sidecar"
    backend = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    shared = set(mounts(fwd)) & set(mounts(backend))
    assert len(shared) == 1
    vol = shared.pop()
    assert "emptyDir" in volumes[vol] and mounts(fwd)[vol] == mounts(backend)[vol]
    log_dir = mounts(fwd)[vol]
    settings = check_forwarder_container(fwd, monkeypatch)
    # state on the shared volume (a restarted sidecar resumes), not among the tailed files
    assert str(settings.state_dir).startswith(log_dir + "/")
    assert all(p.startswith(log_dir + "/") for p in settings.paths)
    assert env_of(backend)["EVENT_LOG_PATH"].startswith(log_dir + "/")
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout
    assert fwd["securityContext"]["readOnlyRootFilesystem"] is True
    secret = load("secret.example.yaml")
    assert secret["kind"] == "Secret" and "STATSIG_SERVER_SECRET_KEY" in secret["stringData"]


def test_k8s_daemonset(monkeypatch: pytest.MonkeyPatch) -> None:
    d = load("daemonset.yaml")
    assert d["kind"] == "DaemonSet"
    pod = d["spec"]["template"]["spec"]
    (fwd,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    settings = check_forwarder_container(fwd, monkeypatch)
    m = {v["name"]: v for v in fwd["volumeMounts"]}
    by_path = {m[n]["mountPath"]: n for n in m}
    state_vol = by_path[str(settings.state_dir)]
    assert "hostPath" in volumes[state_vol], "one state dir per node, kept across pod restarts"
    assert not m[state_vol].get("readOnly")
    (pattern,) = settings.paths
    assert "*" in pattern
    log_vol = next(n for path, n in by_path.items() if pattern.startswith(path + "/"))
    assert "hostPath" in volumes[log_vol] and m[log_vol]["readOnly"] is True


def test_deploy_scripts_pass_shellcheck() -> None:
    """deploy/systemd-test.sh and deploy/podman-test.sh run on demand (root, minutes): lint them here."""
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck missing: .ci/run installs it (apt-get install shellcheck)"
    scripts = sorted(str(p) for p in (ROOT / "deploy").glob("*.sh"))
    assert len(scripts) >= 3  # the two runs and the lib.sh they source (-x: followed)
    proc = subprocess.run([tool, "-x", *scripts], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
