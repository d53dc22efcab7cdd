"""Renders and checks the govchain chart with Helm's own library, offline.

Run by integration/helm_chart.rs, which first makes two consortia with
`govchain certs init` and turns each into manifests with `govchain certs
k8s-secrets`: one with the default values' departments, one with those of
ci/seven-departments-values.yaml. For the default values and for every file
in ci/, this script

- lints the chart (strict, Kubernetes 1.30),
- renders it with helm-python-sdk (the Helm Go SDK through its C ABI),
- validates every rendered manifest and every manifest k8s-secrets wrote
  against the Kubernetes 1.30 schema (kubernetes-validate, strict: unknown
  fields are errors, and so is a kind without a schema),
- checks that each pod's node.toml names the department of its ordinal, that
  every Secret and ConfigMap key a pod mounts exists in the k8s-secrets
  output, the PodDisruptionBudget's f, and the pods' security settings;

and checks that every file in tests/bad-values/ fails to render with the
message on its `# expect:` line. Exits 1 on the first failure, with the reason.

Usage: render_test.py --chart DIR --default-secrets FILE --ci-secrets FILE
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
RELEASE = "prod"
NAMESPACE = "gov"
# The chart's own ConfigMap of node.toml files; every other reference must be
# to something k8s-secrets made.
CHART_CONFIG_MAP = f"{RELEASE}-govchain-config"
NODE_FILES = ("ca.crt", "node.crt", "node.key", "consensus.key")
CLIENT_FILES = ("ca.crt", "client.crt", "client.key")


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def load_values(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    values = yaml.safe_load(path.read_text())
    check(isinstance(values, dict), f"{path} is not a YAML mapping")
    return values


def lint(chart: Path, values: dict[str, Any] | None, label: str) -> None:
    report = helm.lint(chart, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    check(not report["errors"], f"{label}: helm lint errors: {report['errors']}")
    check(not problems, f"{label}: helm lint (strict) found: {problems}")


def render(chart: Path, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    documents = []
    for name, text in sorted(manifests.items()):
        if name.endswith("NOTES.txt"):
            check("helm test" in text, f"NOTES.txt does not say how to run helm test:\n{text}")
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append(document)
    return documents


def validate_schema(documents: list[dict[str, Any]], label: str) -> None:
    for document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(item) for item in err.path)
            raise CheckFailed(f"{label}: {name} is not valid Kubernetes {KUBERNETES_VERSION}: {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            raise CheckFailed(f"{label}: {name}: no Kubernetes {KUBERNETES_VERSION} schema: {err.message}")


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def provided_keys(secrets: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> keys, of what k8s-secrets wrote."""
    return {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) for d in secrets}


def check_references(pod_spec: dict[str, Any], provided: dict[tuple[str, str], set[str]], label: str) -> None:
    for volume in pod_spec.get("volumes", []):
        sources = volume.get("projected", {}).get("sources", [])
        references = [("Secret", s["secret"]) for s in sources if "secret" in s]
        if "secret" in volume:
            references.append(("Secret", {"name": volume["secret"]["secretName"], **volume["secret"]}))
        if "configMap" in volume and volume["configMap"]["name"] != CHART_CONFIG_MAP:
            references.append(("ConfigMap", volume["configMap"]))
        for kind, reference in references:
            key = (kind, reference["name"])
            check(key in provided, f"{label}: volume {volume['name']} mounts {kind} {reference['name']}, which k8s-secrets did not write (it wrote {sorted(provided)})")
            for item in reference.get("items", []):
                check(item["key"] in provided[key], f"{label}: {kind} {reference['name']} has no key {item['key']}")


def check_security(pod_spec: dict[str, Any], label: str) -> None:
    check(pod_spec["securityContext"].get("runAsNonRoot") is True, f"{label}: pod may run as root")
    check(pod_spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", f"{label}: no RuntimeDefault seccomp")
    for container in pod_spec["containers"]:
        context = container["securityContext"]
        check(context.get("readOnlyRootFilesystem") is True, f"{label}: {container['name']} has a writable root")
        check(context.get("allowPrivilegeEscalation") is False, f"{label}: {container['name']} may escalate")
        check(context["capabilities"]["drop"] == ["ALL"], f"{label}: {container['name']} keeps capabilities")
        check("limits" in container.get("resources", {}), f"{label}: {container['name']} has no resource limits")


def node_configs(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    config_maps = [d for d in by_kind(documents, "ConfigMap") if d["metadata"]["name"] == CHART_CONFIG_MAP]
    check(len(config_maps) == 1, f"expected one ConfigMap {CHART_CONFIG_MAP}, got {len(config_maps)}")
    return {name: tomllib.loads(text) for name, text in config_maps[0]["data"].items()}


def check_statefulset(statefulset: dict[str, Any], members: list[dict[str, str]], configs: dict[str, dict[str, Any]], validators: list[str], label: str, state_sync: bool = False, prune_horizon: int = 0) -> None:
    name = statefulset["metadata"]["name"]
    observer = name.endswith("-observer")
    check(statefulset["spec"]["replicas"] == len(members), f"{label}: {name} has {statefulset['spec']['replicas']} replicas for {len(members)} members")
    check(statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data", f"{label}: {name} has no data volume per pod")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    check(container["args"][-1] == "/etc/govchain/config/$(POD_NAME).toml", f"{label}: {name} does not pick its node.toml by pod name: {container['args']}")
    probes = {kind: container[kind]["grpc"] for kind in ("readinessProbe", "livenessProbe")}
    check(probes["readinessProbe"].get("service", "") == "", f"{label}: readiness must ask service \"\": {probes}")
    check(probes["livenessProbe"]["service"] == "liveness", f"{label}: liveness must ask service liveness: {probes}")
    for ordinal, member in enumerate(members):
        pod = f"{name}-{ordinal}"
        config = configs.get(f"{pod}.toml")
        check(config is not None, f"{label}: no node.toml for pod {pod} in {sorted(configs)}")
        check(config["name"] == member["name"], f"{label}: pod {pod} runs {config['name']}, expected {member['name']}")
        check(config.get("observer", False) == observer, f"{label}: pod {pod} observer = {config.get('observer')}")
        check(config.get("state_sync", False) == (observer and state_sync), f"{label}: pod {pod} state_sync = {config.get('state_sync')}, expected {observer and state_sync}")
        expected_horizon = prune_horizon or None
        check(config.get("prune_horizon_blocks") == expected_horizon, f"{label}: pod {pod} prune_horizon_blocks = {config.get('prune_horizon_blocks')}, expected {expected_horizon}")
        credentials = f"/etc/govchain/credentials/{member['name']}/"
        for key in ("ca_certificate", "certificate", "key", "consensus_key"):
            check(config[key].startswith(credentials), f"{label}: pod {pod} reads {key} from {config[key]}, not {credentials}")
        peers = [peer["name"] for peer in config.get("peers", [])]
        expected = [v for v in validators if v != member["name"]]
        check(peers == expected, f"{label}: pod {pod} has peers {peers}, expected {expected}")
        for peer in config.get("peers", []):
            check(peer["address"].startswith("https://") and f".{RELEASE}-govchain-peers.{NAMESPACE}.svc." in peer["address"], f"{label}: peer address {peer['address']} is not a stable pod name")
        check("health_listen" in config, f"{label}: pod {pod} has no health_listen for its probes")


def check_rendered(chart: Path, values_path: Path | None, secrets_path: Path, dump: Path | None = None) -> str:
    label = values_path.name if values_path else "default values"
    values = load_values(values_path)
    lint(chart, values, label)
    documents = render(chart, values)
    secrets = [d for d in yaml.safe_load_all(secrets_path.read_text()) if d]
    validate_schema(documents, label)
    validate_schema(secrets, f"{label} (k8s-secrets output)")
    with helm.Chart.load(chart) as loaded:
        merged = loaded.merge_values(values)
    validators = merged["validators"]
    observers = merged["observers"]["members"] or []
    provided = provided_keys(secrets)
    for member in validators + observers:
        check(set(NODE_FILES) <= provided.get(("Secret", member["secretName"]), set()), f"{label}: k8s-secrets wrote no Secret {member['secretName']} with {NODE_FILES}")
    check(set(CLIENT_FILES) <= provided.get(("Secret", merged["test"]["clientSecretName"]), set()), f"{label}: no client Secret {merged['test']['clientSecretName']}")

    configs = node_configs(documents)
    if dump is not None:
        # The raw node.toml files, for the caller to check with the node's
        # own loader (`govchain config check`).
        dump.mkdir(parents=True, exist_ok=True)
        config_maps = [d for d in by_kind(documents, "ConfigMap") if d["metadata"]["name"] == CHART_CONFIG_MAP]
        for name, text in config_maps[0]["data"].items():
            (dump / name).write_text(text)
    check(len(configs) == len(validators) + len(observers), f"{label}: {len(configs)} node.toml files for {len(validators) + len(observers)} nodes")
    statefulsets = {d["metadata"]["name"]: d for d in by_kind(documents, "StatefulSet")}
    expected_sets = {f"{RELEASE}-govchain-validator"} | ({f"{RELEASE}-govchain-observer"} if observers else set())
    check(set(statefulsets) == expected_sets, f"{label}: StatefulSets {sorted(statefulsets)}, expected {sorted(expected_sets)}")
    names = [v["name"] for v in validators]
    check_statefulset(statefulsets[f"{RELEASE}-govchain-validator"], validators, configs, names, label, prune_horizon=merged["node"].get("pruneHorizonBlocks", 0))
    if observers:
        check_statefulset(statefulsets[f"{RELEASE}-govchain-observer"], observers, configs, names, label, bool(merged["observers"].get("stateSync")), merged["observers"].get("pruneHorizonBlocks", 0))

    pods = [d["spec"]["template"]["spec"] for d in statefulsets.values()] + [d["spec"] for d in by_kind(documents, "Pod")]
    for pod_spec in pods:
        check_references(pod_spec, provided, label)
        check_security(pod_spec, label)

    tests = by_kind(documents, "Pod")
    check(len(tests) == 1 and tests[0]["metadata"]["annotations"]["helm.sh/hook"] == "test", f"{label}: expected one helm test pod")
    commands = [c["args"] for c in tests[0]["spec"]["containers"]]
    check(len(commands) == len(validators) and all(c[0] == "status" and "--key" in c for c in commands), f"{label}: the test pod must run govchain status against each validator: {commands}")

    budgets = by_kind(documents, "PodDisruptionBudget")
    f = (len(validators) - 1) // 3
    check(len(budgets) == 1 and budgets[0]["spec"]["maxUnavailable"] == f, f"{label}: PodDisruptionBudget must allow f = {f} down: {budgets}")
    services = {d["metadata"]["name"]: d["spec"] for d in by_kind(documents, "Service")}
    peers = services.get(f"{RELEASE}-govchain-peers", {})
    check(peers.get("clusterIP") == "None" and peers.get("publishNotReadyAddresses") is True, f"{label}: the peers Service must be headless and list pods that are not ready yet")
    check(f"{RELEASE}-govchain" in services, f"{label}: no client Service")
    return f"{label}: lint, render, {len(documents)} + {len(secrets)} manifests valid for Kubernetes {KUBERNETES_VERSION}, {len(validators)} validators, {len(observers)} observers, f = {f}"


def expected_message(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise CheckFailed(f"{path} has no `# expect:` line")


def check_refused(chart: Path, path: Path) -> str:
    expected = expected_message(path)
    try:
        render(chart, load_values(path))
    except (helm.HelmValuesError, helm.HelmRenderError) as err:
        check(expected in str(err), f"{path.name}: rendering failed, but not with {expected!r}:\n{err}")
        return f"{path.name}: refused: {expected}"
    raise CheckFailed(f"{path.name}: rendered, but should fail with {expected!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", type=Path, required=True)
    parser.add_argument("--default-secrets", type=Path, required=True)
    parser.add_argument("--ci-secrets", type=Path, required=True)
    parser.add_argument("--dump-configs", type=Path, help="write the default values' node.toml files here")
    args = parser.parse_args()
    ci_files = sorted((args.chart / "ci").glob("*.yaml"))
    bad_files = sorted((args.chart / "tests" / "bad-values").glob("*.yaml"))
    checks = [lambda: check_rendered(args.chart, None, args.default_secrets, args.dump_configs)]
    checks += [lambda path=path: check_rendered(args.chart, path, args.ci_secrets) for path in ci_files]
    checks += [lambda path=path: check_refused(args.chart, path) for path in bad_files]
    if not ci_files or not bad_files:
        print(f"no values files in {args.chart}/ci or {args.chart}/tests/bad-values", file=sys.stderr)
        return 1
    passed = 0
    for run in checks:
        try:
            print(f"ok  {run()}")
            passed += 1
        except CheckFailed as err:
            print(f"FAIL {err}")
            print(f"{passed} passed, 1 failed")
            return 1
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
