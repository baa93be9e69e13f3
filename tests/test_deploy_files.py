"""deploy/ cannot be built here (no Docker daemon, no registry), so this keeps it honest: every
command, make target, port, path, TAILOR_* variable and metric name the deployment files use
exists in the project, and every metric and label the dashboard and alerts query is exported."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"

PROMETHEUS_BUILTINS = {"up"}


# -- parsing -----------------------------------------------------------------------------------
@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def docker_args(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def docker_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile():
        if word == "ENV":
            env.update(dict(kv.split("=", 1) for kv in shlex.split(rest)))
    return env


def stages() -> set[str]:
    return {rest.split()[-1] for word, rest in dockerfile() if word == "FROM" and " AS " in rest.upper()}


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict:
    return load_yaml(DEPLOY / "docker-compose.yml")[0]


def k8s(kind: str) -> list[dict]:
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in load_yaml(p)]
    return [d for d in docs if d["kind"] == kind]


def container() -> dict:
    (sts,) = k8s("StatefulSet")
    (main,) = sts["spec"]["template"]["spec"]["containers"]
    return main


def k8s_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"]}


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def commands() -> list[list[str]]:
    """Every command line the deployment runs, as argv lists."""
    entry = next(docker_args(rest) for word, rest in dockerfile() if word == "ENTRYPOINT")
    cmd = next(docker_args(rest) for word, rest in dockerfile() if word == "CMD")
    health = next(rest for word, rest in dockerfile() if word == "HEALTHCHECK")
    out = [entry + cmd, entry + container().get("args", []),
           docker_args(health.split(" CMD ", 1)[1])]
    out += [s["command"] for s in compose()["services"].values()
            if isinstance(s.get("command"), list) and "-m" in s["command"]]
    out += [c["command"] for job in k8s("CronJob")
            for c in job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]]
    return out


# -- commands and build --------------------------------------------------------------------
def test_every_phony_make_target_has_a_rule():
    """`bench` was declared .PHONY without a rule: `make bench` said "Nothing to be done for
    'bench'" and exited 0, as if a benchmark had nothing to run."""
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert set(phony) <= makefile_targets() - {".PHONY"}


def test_make_targets_used_by_the_dockerfile_exist():
    used = [w for word, rest in dockerfile() if word == "RUN"
            for m in re.finditer(r"\bmake ([a-z][\w-]*)", rest) for w in [m.group(1)]]
    assert used == ["build"]
    assert set(used) <= makefile_targets()


def test_files_the_dockerfile_copies_exist():
    for word, rest in dockerfile():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), src
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and "data" in ignore


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv[:4]))
def test_python_m_commands_and_their_flags_exist(argv):
    i = argv.index("-m")
    module, rest = argv[i + 1], argv[i + 2:]
    words = [w for w in rest if not w.startswith("-")]
    sub = [words[0]] if words and rest and rest[0] == words[0] else []
    helped = subprocess.run([sys.executable, "-m", module, *sub, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    for flag in (w for w in rest if w.startswith("--")):
        assert flag in helped.stdout, f"{module} {' '.join(sub)} has no {flag}"


def test_compose_builds_stages_that_exist():
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
            assert build["target"] in stages(), name


def test_the_image_user_is_the_one_kubernetes_runs_as():
    uids = {m.group(1) for word, rest in dockerfile() if word == "RUN"
            for m in re.finditer(r"useradd --uid (\d+)", rest)}
    user = next(rest for word, rest in dockerfile() if word == "USER")
    pod = k8s("StatefulSet")[0]["spec"]["template"]["spec"]["securityContext"]
    assert uids == {str(pod["runAsUser"])} and user == "tailor" and pod["runAsNonRoot"]
    assert compose()["services"]["bootstrap"]["user"] == user


# -- settings: TAILOR_* variables, ports, the data dir ---------------------------------------
def all_tailor_env() -> dict[str, dict[str, str]]:
    services = {f"compose {n}": {k: str(v) for k, v in (s.get("environment") or {}).items()}
                for n, s in compose()["services"].items()}
    return {"Dockerfile": docker_env(), "k8s": k8s_env(), **services}


def test_every_tailor_variable_is_a_settings_field_with_a_valid_value(monkeypatch):
    from server.config import Settings
    for where, env in all_tailor_env().items():
        tailor = {k: v for k, v in env.items() if k.startswith("TAILOR_")}
        for name in tailor:
            assert name[len("TAILOR_"):].lower() in Settings.model_fields, f"{where}: {name}"
        for name, value in tailor.items():
            monkeypatch.setenv(name, value)
        Settings()  # validates every value
        for name in tailor:
            monkeypatch.delenv(name)


def test_ports_agree_everywhere():
    from server.config import Settings
    env, grpc_port = docker_env(), Settings.model_fields["port"].default
    metrics_port = int(env["TAILOR_METRICS_PORT"])
    assert int(env["TAILOR_PORT"]) == grpc_port
    make_metrics = re.search(r"^METRICS_PORT \?= (\d+)", (ROOT / "Makefile").read_text(), re.M)
    assert int(make_metrics.group(1)) == metrics_port
    exposed = {int(p) for word, rest in dockerfile() if word == "EXPOSE" for p in rest.split()}
    assert exposed == {grpc_port, metrics_port}
    health = next(rest for word, rest in dockerfile() if word == "HEALTHCHECK")
    assert f"127.0.0.1:{grpc_port}" in health
    tailor = compose()["services"]["tailor"]
    assert {tuple(map(int, p.split(":"))) for p in tailor["ports"]} == {(p, p) for p in exposed}
    prom = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"tailor:{metrics_port}"]
    kenv, main = k8s_env(), container()
    assert int(kenv["TAILOR_PORT"]) == grpc_port and int(kenv["TAILOR_METRICS_PORT"]) == metrics_port
    named = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert named == {"grpc": grpc_port, "metrics": metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"]["port"] == grpc_port, probe
    for svc in k8s("Service"):
        for port in svc["spec"]["ports"]:
            assert named[port["targetPort"]] == port["port"], svc["metadata"]["name"]
    annotated = [s for s in k8s("Service") if "prometheus.io/port" in s["metadata"].get("annotations", {})]
    assert [int(s["metadata"]["annotations"]["prometheus.io/port"]) for s in annotated] == [metrics_port]


def test_the_data_dir_is_the_volume_everywhere():
    data_dir = docker_env()["TAILOR_DATA_DIR"]
    volumes = [docker_args(rest) for word, rest in dockerfile() if word == "VOLUME"]
    assert volumes == [[data_dir]]
    for name in ("tailor", "bootstrap"):
        assert f"tailor-data:{data_dir}" in compose()["services"][name]["volumes"]
    assert compose()["services"]["bootstrap"]["command"][-1] == data_dir
    assert k8s_env()["TAILOR_DATA_DIR"] == data_dir
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    (sts,) = k8s("StatefulSet")
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"] and mounts["data"] == data_dir


def test_shutdown_drains_within_the_termination_grace_period():
    from server.config import Settings
    (sts,) = k8s("StatefulSet")
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = float(k8s_env().get("TAILOR_GRACE_SECONDS", Settings.model_fields["grace_seconds"].default))
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > int(pre_stop[1]) + grace
    (headless,) = [s for s in k8s("Service") if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    tailor = compose()["services"]["tailor"]
    assert int(tailor["stop_grace_period"].rstrip("s")) > float(tailor["environment"]["TAILOR_GRACE_SECONDS"])


@pytest.mark.parametrize("example", ["compose", "k8s"])
def test_the_stop_bound_outlasts_the_hand_off_and_the_service_manager_outlasts_it(example,
                                                                                  monkeypatch):
    """Each example's TAILOR_STOP_SECONDS is below its service manager's stop timeout (compose's
    stop_grace_period; Kubernetes' terminationGracePeriodSeconds less the preStop sleep), and
    holds once a relay is added (the examples send nothing themselves): the compose file's 12 s
    with a 5 s grace would kill a worker at 11 s while a message it handed over still had the
    relay's 10 s (its job, resumed, sent it again); a start now refuses it."""
    from server.config import Settings
    if example == "compose":
        tailor = compose()["services"]["tailor"]
        env, timeout = tailor["environment"], float(tailor["stop_grace_period"].rstrip("s"))
    else:
        env = k8s_env()
        (sts,) = k8s("StatefulSet")
        timeout = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] - float(
            container()["lifecycle"]["preStop"]["exec"]["command"][1])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(smtp_host="relay.example")  # refused if the bound cuts the hand-off
    assert "TAILOR_STOP_SECONDS" in env and settings.stop_seconds < timeout


# -- monitoring: mounts, provisioning, metric names ------------------------------------------
def test_compose_mounts_files_that_exist_where_prometheus_and_grafana_look():
    services = compose()["services"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            src, dst = volume.split(":")[:2]
            assert (DEPLOY / src).is_file(), src
            mounts[dst] = DEPLOY / src
    prom = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert all(rule in mounts for rule in prom["rule_files"])
    providers = yaml.safe_load((DEPLOY / "monitoring" / "grafana-dashboards.yml").read_text())
    (path,) = [p["options"]["path"] for p in providers["providers"]]
    dashboards = [dst for dst in mounts if dst.startswith(path + "/") and dst.endswith(".json")]
    assert [mounts[d].name for d in dashboards] == ["tailor-dashboard.json"]
    sources = yaml.safe_load((DEPLOY / "monitoring" / "grafana-datasource.yml").read_text())
    uids = {d["uid"] for d in sources["datasources"]}
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]


def dashboard() -> dict:
    return json.loads((DEPLOY / "monitoring" / "tailor-dashboard.json").read_text())


def expressions() -> dict[str, str]:
    exprs = {f"panel {p['title']!r} {t['refId']}": t["expr"] for p in dashboard()["panels"]
             for t in p["targets"]}
    alerts = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())
    exprs.update({f"alert {r['alert']}": r["expr"] for g in alerts["groups"] for r in g["rules"]})
    return exprs


METRIC = r"\b((?:tailor|grpc_server)_\w+|up)\b(?!\s*\()"
"""A metric name in a PromQL expression (not a function such as rate)."""


def registered() -> dict[str, set[str]]:
    """Sample names server/metrics.py registers, each with its label names."""
    import server.metrics as metrics
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    out = {}
    for attr in metrics.__all__:
        metric = getattr(metrics, attr)
        if hasattr(metric, "_type"):
            labels = set(metric._labelnames) | ({"le"} if metric._type == "histogram" else set())
            for suffix in suffixes[metric._type]:
                out[metric._name + suffix] = labels
    return out


def queried_metrics() -> set[str]:
    """Every metric name the dashboard and the alerts query."""
    return {name for expr in expressions().values() for name in re.findall(METRIC, expr)
            if name not in PROMETHEUS_BUILTINS}


def test_dashboard_and_alert_metrics_are_registered_with_their_labels():
    known = registered()
    for where, expr in expressions().items():
        for name in re.findall(METRIC, expr):
            assert name in known or name in PROMETHEUS_BUILTINS, f"{where}: {name} is not a metric"
        for metric, selector in re.findall(r"\b((?:tailor|grpc_server)_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*[!=]~?", selector):
                assert label in known[metric], f"{where}: {metric} has no {label}"
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {x.strip() for x in group.split(",")}
            for metric in re.findall(METRIC, expr):
                if metric not in PROMETHEUS_BUILTINS:
                    assert labels <= known[metric], f"{where}: {metric} has no {labels - known[metric]}"
    used = queried_metrics()
    assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket", "tailor_model_info",
            "tailor_events_total", "tailor_store_used_bytes"} <= used
