"""deploy/k8s, checked without a cluster: schemas, references between documents, and the server they run.

No Kubernetes API server runs here. kubernetes-validate (pure Python, schemas
bundled) checks each document against the API's OpenAPI schemas, strictly
(unknown fields are errors); `kubectl kustomize`, where kubectl is installed,
renders each variant, and the rendered output gets the same checks.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from ferserver import config as server_config
from ferserver.config import Config

from ..conftest import ROOT
from . import exported_series

K8S = ROOT / "deploy" / "k8s"
KUBE_VERSION = "1.30"  # oldest Kubernetes still in upstream support when written; every field used exists there
SELECTOR = {"app.kubernetes.io/name": "fercodec", "app.kubernetes.io/component": "server"}
SETTINGS = {"FERCODEC_" + f.name.upper() for f in dataclasses.fields(Config)}
HEALTH_SERVICES = {"", "fercodec.v1.FerCodec", "fercodec.v1.EncoderRepository"}  # what ferserver.main sets SERVING
VARIANTS = ("base", "gpu", "examples/gpu-tls")
KUBECTL = shutil.which("kubectl")
# settings that name a file in a mounted secret -> the secret's key (tls.crt/tls.key/ca.crt as kubernetes.io/tls and cert-manager write them)
SECRET_FILES = {"FERCODEC_AUTH_TOKEN_FILE": "tokens", "FERCODEC_TLS_CERT": "tls.crt", "FERCODEC_TLS_KEY": "tls.key", "FERCODEC_TLS_CLIENT_CA": "ca.crt",
                "FERCODEC_METRICS_TLS_CERT": "tls.crt", "FERCODEC_METRICS_TLS_KEY": "tls.key", "FERCODEC_METRICS_TLS_CLIENT_CA": "ca.crt"}


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def base_resources() -> list[dict]:
    kust = load(K8S / "base" / "kustomization.yaml")[0]
    return [d for name in kust["resources"] for d in load(K8S / "base" / name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return base_resources()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """`kubectl kustomize` of each variant (skips where kubectl is missing)."""
    if not KUBECTL:
        pytest.skip("kubectl not installed: the kustomize builds are not rendered (the raw documents are still checked)")
    out = {}
    for variant in VARIANTS:
        r = subprocess.run([KUBECTL, "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"kubectl kustomize {variant}:\n{r.stderr}"
        out[variant] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return out


# --- every file ------------------------------------------------------------------

def test_every_document_parses_and_names_itself():
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        docs = load(f)
        assert docs, f"{f} is empty"
        if isinstance(docs[0], list):  # a JSON patch (servicemonitor-tls.yaml): operations, not objects
            assert all(op["op"] in ("add", "replace") and op["path"].startswith("/spec/") for op in docs[0]), f
            continue
        for d in docs:
            assert isinstance(d, dict), f"{f}: a document is not a mapping"
            if f.name == "values.yaml":  # Helm values, not a Kubernetes object
                continue
            assert d.get("apiVersion") and d.get("kind"), f"{f}: document without apiVersion/kind"
            if d["kind"] not in ("Kustomization", "Component"):
                assert d["metadata"]["name"].startswith("fercodec"), f"{f}: {d['kind']} {d['metadata']['name']}"
                assert "namespace" not in d["metadata"], f"{f}: manifests are namespace-agnostic (kubectl -n / overlay namespace:)"


def test_kustomizations_reference_files_that_exist_and_list_every_base_file():
    for kf in K8S.rglob("kustomization.yaml"):
        k = load(kf)[0]
        refs = k.get("resources", []) + k.get("components", []) + [p["path"] for p in k.get("patches", [])]
        assert refs, f"{kf} assembles nothing"
        for ref in refs:
            assert (kf.parent / ref).exists(), f"{kf} refers to missing {ref}"
    listed = set(load(K8S / "base" / "kustomization.yaml")[0]["resources"])
    assert listed == {f.name for f in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}, "a base manifest is not in base/kustomization.yaml"


def test_kinds_present(base):
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(["Deployment", "Service", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"])
    assert one(base, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    assert one(base, "ServiceMonitor")["apiVersion"] == "monitoring.coreos.com/v1"
    assert one(base, "PodDisruptionBudget")["apiVersion"] == "policy/v1"


def test_documents_validate_against_the_kubernetes_schemas(base):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (offline JSON-schema check of Kubernetes objects)")
    for d in base:
        if d["kind"] == "ServiceMonitor":  # a CRD: no schema in kubernetes-validate; checked field by field below
            continue
        kv.validate(d, KUBE_VERSION, strict=True)


# --- references between documents -------------------------------------------------

def test_selectors_match_the_pod_labels(base):
    dep = one(base, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == SELECTOR and matches(SELECTOR, pod_labels)
    for s in dep["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert s["labelSelector"]["matchLabels"] == SELECTOR
    for svc in (d for d in base if d["kind"] == "Service"):
        assert svc["spec"]["selector"] == SELECTOR, svc["metadata"]["name"]
    assert one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == SELECTOR


def test_services_point_at_named_container_ports(base):
    c = container(one(base, "Deployment"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": Config().port, "metrics": Config().metrics_port}
    for svc in (d for d in base if d["kind"] == "Service"):
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports and p["port"] == ports[p["targetPort"]], (svc["metadata"]["name"], p)
    headless = one(base, "Service", "fercodec-headless")
    assert headless["spec"]["clusterIP"] == "None"  # DNS lists the pods: client-side round_robin over dns:///
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    assert not headless["spec"].get("publishNotReadyAddresses"), "clients must only see ready pods"


def test_servicemonitor_selects_the_metrics_service_only(base):
    sm = one(base, "ServiceMonitor")
    hits = [s["metadata"]["name"] for s in base if s["kind"] == "Service" and matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert hits == ["fercodec-metrics"]
    (ep,) = sm["spec"]["endpoints"]
    svc_ports = [p["name"] for p in one(base, "Service", "fercodec-metrics")["spec"]["ports"]]
    assert ep["port"] in svc_ports and ep["path"] == "/metrics"
    assert _seconds(ep["scrapeTimeout"]) < _seconds(ep["interval"])


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60}[duration[-1]]


def test_probes_call_the_grpc_health_service_on_the_grpc_port(base):
    c = container(one(base, "Deployment"))
    grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c[kind]["grpc"]
        assert probe["port"] == grpc_port and probe["service"] in HEALTH_SERVICES, kind
    assert c["readinessProbe"]["grpc"]["service"] == "fercodec.v1.FerCodec"
    from fercodec.v1 import fercodec_pb2

    assert fercodec_pb2.DESCRIPTOR.services_by_name["FerCodec"].full_name in HEALTH_SERVICES
    # A liveness timeout shorter than a busy event loop's answer restarts healthy pods.
    assert c["livenessProbe"]["timeoutSeconds"] >= 3


def test_env_vars_are_real_server_settings_with_valid_values(base):
    c = container(one(base, "Deployment"))
    env = env_of(c)
    assert set(env) <= SETTINGS, f"not ferserver settings: {set(env) - SETTINGS}"
    cfg = server_config.parse([], env=env)  # the server's own parser: types and combinations
    assert cfg.metrics_host == "0.0.0.0", "Prometheus scrapes the pod IP, not loopback"
    assert cfg.host == "0.0.0.0" and cfg.device == "cpu"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (cfg.port, cfg.metrics_port) == (ports["grpc"], ports["metrics"])


def _check_secret_paths(dep: dict) -> set[str]:
    """Every FERCODEC_* path setting lies in a mounted secret volume; returns the secrets mounted."""
    spec = dep["spec"]["template"]["spec"]
    c = container(dep)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    secrets = set()
    for name, value in env_of(c).items():
        if name not in SECRET_FILES:
            continue
        path = Path(value)
        vol = mounts.get(str(path.parent))
        assert vol is not None and "secret" in vol, f"{name}={value} is not in a mounted secret volume"
        assert mounts_readonly(c, str(path.parent))
        # The file name is a key of the secret: tls.crt/tls.key/ca.crt as kubernetes.io/tls and cert-manager write them.
        expected = SECRET_FILES[name]
        assert path.name == expected, f"{name} reads {path.name}, the secret key is {expected}"
        assert vol["secret"]["defaultMode"] & 0o007 == 0, "secrets are not world-readable"
        secrets.add(vol["secret"]["secretName"])
    return secrets


def mounts_readonly(c: dict, path: str) -> bool:
    return any(m["mountPath"] == path and m.get("readOnly") for m in c["volumeMounts"])


def test_mounted_secrets_match_the_env_paths(base):
    dep = one(base, "Deployment")
    assert _check_secret_paths(dep) == {"fercodec-tokens"}
    # fsGroup makes 0440 secret files readable by the non-root server.
    assert dep["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == dep["spec"]["template"]["spec"]["securityContext"]["runAsGroup"]


def test_shutdown_fits_in_the_termination_grace_period(base):
    dep = one(base, "Deployment")
    c = container(dep)
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = float(env_of(c).get("FERCODEC_GRACE_S", Config().grace_s))
    assert float(sleep[1]) + grace + 5 <= dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_resources_cover_the_measured_footprint(base):
    c = container(one(base, "Deployment"))
    r = c["resources"]
    mib = {"Mi": 1, "Gi": 1024}
    req, lim = (int(v[:-2]) * mib[v[-2:]] for v in (r["requests"]["memory"], r["limits"]["memory"]))
    assert req * (1 << 20) >= 1.1e9 and lim > req  # measured peak RSS 1.1 GB on CPU
    assert "cpu" not in r["limits"], "CPU limits throttle batches into latency"
    assert int(env_of(c)["FERCODEC_THREADS"]) == int(r["requests"]["cpu"]), "torch threads = requested cores"


def test_pod_meets_the_restricted_security_standard(base):
    spec = one(base, "Deployment")["spec"]["template"]["spec"]
    pod, ctr = spec["securityContext"], container(one(base, "Deployment"))["securityContext"]
    assert pod["runAsNonRoot"] and pod["runAsUser"] > 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert ctr["allowPrivilegeEscalation"] is False and ctr["capabilities"]["drop"] == ["ALL"] and ctr["readOnlyRootFilesystem"]
    assert spec["automountServiceAccountToken"] is False
    assert any(m["mountPath"] == "/tmp" for m in container(one(base, "Deployment"))["volumeMounts"]), "a writable /tmp on a read-only root"


def test_hpa_scales_the_deployment_on_a_metric_the_server_exports(base):
    hpa, dep = one(base, "HorizontalPodAutoscaler"), one(base, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": dep["apiVersion"], "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in exported_series()
    assert metric["pods"]["metric"]["name"] == "fercodec_queued_faces"
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < Config().max_queue_faces
    pdb = one(base, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], "a drain must leave a pod serving"


def test_adapter_rule_serves_the_hpa_metric(base):
    values = load(K8S / "prometheus-adapter" / "values.yaml")[0]
    hpa_metric = one(base, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == hpa_metric
    series = rule["seriesQuery"].split("{")[0]
    assert series in exported_series()
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_image_is_the_one_compose_builds():
    kust = load(K8S / "base" / "kustomization.yaml")[0]
    (image,) = kust["images"]
    assert container(one(base_resources(), "Deployment"))["image"] == image["name"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["newTag"] == version
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert compose["services"]["server"]["image"] == f"{image['name']}:{version}"


# --- the GPU overlay and the TLS component, as patches ---------------------------------

def test_gpu_patch_targets_the_base_deployment(base):
    dep = one(base, "Deployment")
    (patch,) = load(K8S / "gpu" / "deployment-gpu.yaml")
    assert (patch["kind"], patch["metadata"]["name"]) == ("Deployment", dep["metadata"]["name"])
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    assert c["name"] == container(dep)["name"]
    assert env_of(c) == {"FERCODEC_DEVICE": "cuda", "FERCODEC_DECODE_WORKERS": "15", "FERCODEC_MAX_BATCH": "256"}
    assert int(env_of(c)["FERCODEC_DECODE_WORKERS"]) < float(c["resources"]["requests"]["cpu"])  # a core per worker, one left
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in patch["spec"]["template"]["spec"]["tolerations"])


def test_tls_patch_mounts_what_its_env_names(base):
    (patch,) = load(K8S / "components" / "tls" / "deployment-tls.yaml")
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    assert c["name"] == container(one(base, "Deployment"))["name"]
    assert set(env_of(c)) <= SETTINGS
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[kind]["grpc"] is None and c[kind]["exec"]["command"][:2] == ["python", "-c"], kind


# --- rendered variants ------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_variant_is_valid(rendered, variant):
    docs = rendered[variant]
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for d in docs:
        if d["kind"] != "ServiceMonitor":
            kv.validate(d, KUBE_VERSION, strict=True)
    dep = one(docs, "Deployment", "fercodec-server")
    c = container(dep)
    env = env_of(c)
    assert set(env) <= SETTINGS
    cfg = server_config.parse([], env=env)
    secrets = _check_secret_paths(dep)
    assert "fercodec-tokens" in secrets
    assert (cfg.device == "cuda") == ("gpu" in variant) == ("nvidia.com/gpu" in c["resources"]["limits"])
    if "tls" in variant:
        assert cfg.tls_cert and cfg.tls_key and cfg.metrics_tls_cert and "fercodec-tls" in secrets
        (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
        assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["ca"]["secret"]["name"] == "fercodec-tls"
        assert all("grpc" not in c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
        assert one(docs, "Service", "fercodec-headless")["metadata"]["namespace"] == "fercodec"
    else:
        assert not cfg.tls_cert and all("grpc" in c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert c["image"] == "fercodec-server:" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert dep["spec"]["selector"]["matchLabels"] == SELECTOR, "kustomize labels must not reach the immutable selector"


# --- the TLS probe against a real TLS server ------------------------------------------------

def _throwaway_tls(d: Path) -> None:
    """A CA and a server certificate for `fercodec-headless`, written as the tls Secret's keys."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fercodec test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fercodec-headless")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("fercodec-headless"), x509.DNSName("fercodec-headless.fercodec.svc.cluster.local")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 add/replace on a copy of doc: what kustomize does with servicemonitor-tls.yaml."""
    import copy

    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [int(p) if p.isdigit() else p for p in op["path"].strip("/").split("/")]
        node = out
        for p in parents:
            node = node[p]
        assert op["op"] == "add" or last in node, op
        node[last] = op["value"]
    return out


def test_tls_component_scrapes_the_metrics_page_over_https(base):
    """The component's two patches agree: the server serves its metrics page with the Secret's pair, and the
    ServiceMonitor scrapes the same port over HTTPS, checking the name the certificate holds against the Secret's CA."""
    (patch,) = load(K8S / "components" / "tls" / "deployment-tls.yaml")
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert (env["FERCODEC_METRICS_TLS_CERT"], env["FERCODEC_METRICS_TLS_KEY"]) == (env["FERCODEC_TLS_CERT"], env["FERCODEC_TLS_KEY"])
    (ops,) = load(K8S / "components" / "tls" / "servicemonitor-tls.yaml")
    monitor = _json_patch(one(base, "ServiceMonitor"), ops)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["scheme"] == "https"
    tls = endpoint["tlsConfig"]
    assert tls["ca"]["secret"] == {"name": "fercodec-tls", "key": "ca.crt"}
    assert tls["serverName"] == one(base, "Service", "fercodec-headless")["metadata"]["name"]  # a name the certificate holds
    kust = load(K8S / "components" / "tls" / "kustomization.yaml")[0]
    target = next(p["target"] for p in kust["patches"] if p["path"] == "servicemonitor-tls.yaml")
    assert (target["kind"], target["name"], f"{target['group']}/{target['version']}") == ("ServiceMonitor", monitor["metadata"]["name"], monitor["apiVersion"])


@pytest.mark.slow
def test_tls_exec_probe_passes_against_a_real_tls_server(tmp_path):
    """The component's probe script, pointed at a throwaway TLS ferserver: 0 while it serves, non-zero when it is gone."""
    from ferserver.process import ServerProcess

    (patch,) = load(K8S / "components" / "tls" / "deployment-tls.yaml")
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    script = c["readinessProbe"]["exec"]["command"][2]
    _throwaway_tls(tmp_path)
    here = {k: v.replace("/etc/fercodec/tls/", f"{tmp_path}/") for k, v in env_of(c).items()}
    with ServerProcess("--device", "cpu", env=here) as s:  # the component's env: TLS on the port and the metrics page
        local = script.replace("/etc/fercodec/tls/", f"{tmp_path}/").replace("127.0.0.1:50051", s.address)
        assert local != script
        r = subprocess.run([sys.executable, "-c", local], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        # Scraped as the patched ServiceMonitor does: HTTPS to an address, the name checked is serverName, against ca.crt.
        import socket
        import ssl

        (ops,) = load(K8S / "components" / "tls" / "servicemonitor-tls.yaml")
        tls = next(op["value"] for op in ops if op["path"].endswith("/tlsConfig"))
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with socket.create_connection(("127.0.0.1", s.metrics_port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=tls["serverName"]) as conn:
            conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: fercodec\r\n\r\n")
            page = b"".join(iter(lambda: conn.recv(65536), b""))
        assert page.startswith(b"HTTP/1.0 200") and b"fercodec_requests_total" in page
        assert s.stop() == 0
    r = subprocess.run([sys.executable, "-c", local], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
