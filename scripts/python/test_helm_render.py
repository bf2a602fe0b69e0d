"""Renders the Helm chart helm/vephys with `helm template` and checks what a platform team relies
on: that GPU workers schedule where the NVIDIA GPU Operator advertises their device under each
MIG strategy (a table of its resources and labels, and a small scheduler), one device per
worker, native gRPC probes and readiness that follows the database, TLS CAs for Postgres and
for the coordinator's clients, the migration and model-registration hook Jobs (their scripts
run against stand-in binaries), KEDA scaling on runnable jobs, tokens stable across renders, a
PodDisruptionBudget only when it can be satisfied, ephemeral storage matching the emptyDirs,
extra volumes and containers, the security context, secrets only by reference, and that bad
values fail with a clear message. The custom resources (KEDA ScaledObject and
TriggerAuthentication, Prometheus ServiceMonitor), which kubernetes-validate has no schemas
for, are checked against the schemas at the end of this file.

usage: HELM=/path/to/helm python test_helm_render.py [-v]     (run by scripts/helm-check.sh)
"""
import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import unittest

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "vephys")
HELM = os.environ.get("HELM", os.path.expanduser("~/.cache/vephys/tools/bin/helm"))
RELEASE, NAMESPACE = "lab", "vephys"


def helm_template(*args):
    """`helm template` with extra args; returns (returncode, stdout, stderr)."""
    cmd = [HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout, out.stderr


def render(*args):
    """Renders and returns {(kind, name): manifest}; fails the test on a render error."""
    code, out, err = helm_template(*args)
    if code != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{err}")
    docs = [d for d in yaml.safe_load_all(out) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def values(name):
    return ["-f", os.path.join(CHART, "ci", name)]


def example(name):
    return ["-f", os.path.join(CHART, "examples", name)]


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def container(obj, name=None):
    containers = pod_spec(obj)["containers"]
    if name is None:
        assert len(containers) == 1, containers
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env(c):
    return {e["name"]: e for e in c.get("env", [])}


def pods(m):
    """Every pod template rendered: {(kind, name): pod spec}."""
    return {k: pod_spec(o) for k, o in m.items() if k[0] in ("Deployment", "Job")}


def all_containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def mebibytes(q):
    """A storage quantity in MiB."""
    num, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q)).groups()
    factor = {"": 1, "k": 1e3, "Ki": 1024, "M": 1e6, "Mi": 2**20, "G": 1e9, "Gi": 2**30,
              "T": 1e12, "Ti": 2**40}[unit]
    return float(num) * factor / 2**20


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


COORD = ("Deployment", "lab-vephys-coordinator")
WORKER = ("Deployment", "lab-vephys-worker")
HOOK = ("Job", "lab-vephys-migrate")
MODELS = ("Job", "lab-vephys-models")
PDB = ("PodDisruptionBudget", "lab-vephys-coordinator")
SO = ("ScaledObject", "lab-vephys-worker")


class DefaultValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = render()

    def test_renders_the_expected_objects(self):
        kinds = sorted(k for k, _ in self.m)
        self.assertEqual(
            kinds,
            sorted(["Deployment", "Deployment", "Service", "PodDisruptionBudget", "Job", "Job",
                    "ServiceAccount", "NetworkPolicy", "NetworkPolicy"]),
        )
        for obj in self.m.values():
            self.assertEqual(obj["metadata"]["namespace"], NAMESPACE, obj["metadata"]["name"])

    def test_worker_requests_one_whole_gpu_and_waits_for_its_batch(self):
        w = self.m[WORKER]
        res = container(w)["resources"]
        self.assertEqual(res["limits"]["nvidia.com/gpu"], 1)
        self.assertEqual(res["requests"]["nvidia.com/gpu"], 1)
        self.assertEqual(pod_spec(w)["terminationGracePeriodSeconds"], 600)
        self.assertIn({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                      pod_spec(w)["tolerations"])
        self.assertNotIn("runtimeClassName", pod_spec(w))
        self.assertEqual(w["spec"]["replicas"], 1)
        e = env(container(w))
        self.assertEqual(e["VEPHYS_DEVICE"]["value"], "cuda")
        # The device plugin sets NVIDIA_VISIBLE_DEVICES to the GPU it gives; the chart does not.
        self.assertNotIn("NVIDIA_VISIBLE_DEVICES", e)
        self.assertNotIn("VEPHYS_CA_CERT", e)  # no TLS
        self.assertEqual(e["VEPHYS_COORDINATOR"]["value"], "http://lab-vephys-coordinator:7070")
        self.assertEqual(e["VEPHYS_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
                         "metadata.name")
        self.assertEqual(container(w)["args"], ["serve"])

    def test_worker_has_writable_spool_cache_and_tmp(self):
        w = self.m[WORKER]
        c = container(w)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        e = env(c)
        for var in ("VEPHYS_SPOOL_DIR", "VEPHYS_CACHE_DIR"):
            self.assertIn(e[var]["value"], mounts, var)
        self.assertIn("/tmp", mounts)
        vols = {v["name"]: v for v in pod_spec(w)["volumes"]}
        for name in mounts.values():
            self.assertIn("emptyDir", vols[name], name)
        self.assertEqual(e["VEPHYS_WEIGHTS_DIR"]["value"], "/opt/vephys/weights")

    def test_coordinator_has_native_grpc_probes_and_listens_on_all_interfaces(self):
        c = container(self.m[COORD])
        # Liveness asks for the server (service ""), which stays SERVING while the database is
        # down; readiness for the Workers API, which is NOT_SERVING while the database check fails.
        self.assertEqual(c["livenessProbe"]["grpc"], {"port": 7070})
        self.assertEqual(c["readinessProbe"]["grpc"], {"port": 7070, "service": "vephys.v1.Workers"})
        self.assertEqual(c["startupProbe"]["grpc"], {"port": 7070})
        e = env(c)
        self.assertEqual(e["VEPHYS_LISTEN"]["value"], "0.0.0.0:7070")
        self.assertEqual(e["VEPHYS_HTTP"]["value"], "0.0.0.0:7071")
        self.assertEqual(e["VEPHYS_READINESS_CHECK_SECONDS"]["value"], "5")
        self.assertEqual(e["VEPHYS_READINESS_TIMEOUT_SECONDS"]["value"], "2")
        self.assertNotIn("VEPHYS_DATABASE_CA", e)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"grpc": 7070, "http-metrics": 7071})
        svc = self.m[("Service", "lab-vephys-coordinator")]
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]},
                         {"grpc": 7070, "http-metrics": 7071})
        self.assertEqual(c["resources"]["limits"]["memory"], "1Gi")
        pdb = self.m[PDB]
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"],
                         self.m[COORD]["spec"]["selector"]["matchLabels"])

    def test_migration_hook_job(self):
        job = self.m[HOOK]
        ann = job["metadata"]["annotations"]
        self.assertEqual(set(ann["helm.sh/hook"].split(",")), {"pre-install", "pre-upgrade"})
        self.assertIn("before-hook-creation", ann["helm.sh/hook-delete-policy"])
        c = container(job)
        self.assertEqual(c["args"], ["--migrate-only"])
        self.assertEqual(c["image"], container(self.m[COORD])["image"])
        self.assertEqual(env(c)["VEPHYS_DATABASE_URL"]["valueFrom"]["secretKeyRef"],
                         {"name": "vephys-database", "key": "url"})
        spec = pod_spec(job)
        self.assertEqual(spec["restartPolicy"], "Never")
        # A pre-install hook runs before the release's ServiceAccount exists.
        self.assertNotIn("serviceAccountName", spec)

    def test_every_pod_is_locked_down(self):
        self.assertEqual(set(pods(self.m)), {COORD, WORKER, HOOK, MODELS})
        for key, spec in pods(self.m).items():
            self.assertIs(spec["securityContext"]["runAsNonRoot"], True, key)
            self.assertEqual(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            self.assertIs(spec["automountServiceAccountToken"], False, key)
            for c in all_containers(spec):
                where = (key, c["name"])
                sc = c["securityContext"]
                self.assertIs(sc["readOnlyRootFilesystem"], True, where)
                self.assertIs(sc["allowPrivilegeEscalation"], False, where)
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"], where)
                self.assertGreaterEqual(sc["runAsUser"], 10000, where)

    def test_ephemeral_storage_matches_the_empty_dirs(self):
        """Each of the chart's containers requests, and is limited to, the emptyDirs it mounts
        plus 256Mi for its logs: 23 GiB + 256Mi for a worker (spool 2Gi, cache 20Gi, /tmp 1Gi)."""
        chart_containers = {"coordinator", "worker", "migrate", "register", "describe"}
        for vals in ([], values("gpu-values.yaml"), ["--set", "worker.spool.volume.persistentVolumeClaim.claimName=s"]):
            for key, spec in pods(render(*vals)).items():
                sizes = {v["name"]: mebibytes(v["emptyDir"]["sizeLimit"])
                         for v in spec.get("volumes", []) if "emptyDir" in v}
                for c in all_containers(spec):
                    if c["name"] not in chart_containers:
                        continue  # a sidecar from values brings its own
                    res, where = c["resources"], (vals, key, c["name"])
                    mounted = sum(sizes.get(mt["name"], 0) for mt in c.get("volumeMounts", []))
                    self.assertEqual(res["requests"]["ephemeral-storage"],
                                     res["limits"]["ephemeral-storage"], where)
                    self.assertEqual(mebibytes(res["limits"]["ephemeral-storage"]), mounted + 256, where)
        w = container(self.m[WORKER])["resources"]
        self.assertEqual(w["requests"]["ephemeral-storage"], f"{23 * 1024 + 256}Mi")
        # A spool on a claim is not ephemeral storage.
        m = render("--set", "worker.spool.volume.persistentVolumeClaim.claimName=s")
        self.assertEqual(container(m[WORKER])["resources"]["limits"]["ephemeral-storage"],
                         f"{21 * 1024 + 256}Mi")
        # Values that set it win.
        m = render("--set", "worker.resources.limits.ephemeral-storage=40Gi")
        self.assertEqual(container(m[WORKER])["resources"]["limits"]["ephemeral-storage"], "40Gi")

    def test_pdb_only_when_it_can_be_satisfied(self):
        cases = [
            (["--set", "coordinator.replicaCount=1"], False),
            (["--set", "coordinator.replicaCount=3,coordinator.pdb.minAvailable=2"], True),
            (["--set", "coordinator.replicaCount=2,coordinator.pdb.minAvailable=2"], False),
            (["--set", "coordinator.replicaCount=2", "--set-string", "coordinator.pdb.minAvailable=50%"], True),
            # Kubernetes rounds a percentage up: 66% of 3 is 2 (one may go), 67% is 3 (none may).
            (["--set", "coordinator.replicaCount=3", "--set-string", "coordinator.pdb.minAvailable=66%"], True),
            (["--set", "coordinator.replicaCount=3", "--set-string", "coordinator.pdb.minAvailable=67%"], False),
            (["--set", "coordinator.replicaCount=3", "--set-string", "coordinator.pdb.minAvailable=100%"], False),
            (["--set", "coordinator.pdb.enabled=false"], False),
        ]
        for args, made in cases:
            with self.subTest(args=args):
                self.assertEqual(PDB in render(*args), made)

    def test_secrets_are_only_referenced(self):
        secret_vars = {"VEPHYS_DATABASE_URL", "VEPHYS_WORKER_TOKEN", "VEPHYS_USER_TOKEN",
                       "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "VEPHYS_TOKEN"}
        seen = set()
        for key in (COORD, WORKER, HOOK, MODELS):
            for name, e in env(container(self.m[key])).items():
                if name in secret_vars:
                    self.assertNotIn("value", e, f"{key}: {name}")
                    self.assertIn("secretKeyRef", e["valueFrom"], f"{key}: {name}")
                    seen.add(name)
        self.assertEqual(seen, secret_vars)
        # Workers and the models Job hold no database credentials.
        self.assertNotIn("VEPHYS_DATABASE_URL", env(container(self.m[WORKER])))
        self.assertNotIn("VEPHYS_DATABASE_URL", env(container(self.m[MODELS])))


class GpuValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = render(*values("gpu-values.yaml"))

    def test_one_mixed_strategy_mig_slice_per_worker(self):
        w = self.m[WORKER]
        res = container(w)["resources"]
        self.assertEqual(res["limits"]["nvidia.com/mig-1g.10gb"], 1)
        self.assertEqual(res["requests"]["nvidia.com/mig-1g.10gb"], 1)
        self.assertNotIn("nvidia.com/gpu", res["limits"])
        spec = pod_spec(w)
        self.assertEqual(spec["runtimeClassName"], "nvidia")
        self.assertEqual(spec["terminationGracePeriodSeconds"], 900)
        self.assertNotIn("nodeSelector", spec)
        self.assertEqual(len(spec["tolerations"]), 2)
        self.assertIn("podAntiAffinity", spec["affinity"])
        (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        self.assertEqual(term["matchExpressions"], [
            {"key": "nvidia.com/mig.strategy", "operator": "In", "values": ["mixed"]},
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
        ])
        self.assertEqual(w["spec"]["replicas"], 3)
        self.assertEqual(env(container(w))["VEPHYS_MAX_JOBS"]["value"], "32")

    def test_digest_pins_the_image(self):
        img = container(self.m[WORKER])["image"]
        self.assertTrue(img.startswith("registry.example.com/vephys/vephys-worker@sha256:"), img)
        self.assertEqual(container(self.m[COORD], "coordinator")["image"],
                         "registry.example.com/vephys/vephys-coordinator:0.1.0")

    def test_spool_volume_can_be_a_claim(self):
        vols = {v["name"]: v for v in pod_spec(self.m[WORKER])["volumes"]}
        self.assertEqual(vols["spool"]["persistentVolumeClaim"]["claimName"], "vephys-spool")

    def test_tls_switches_probes_to_http_and_workers_to_https(self):
        c = container(self.m[COORD], "coordinator")
        for probe in ("livenessProbe", "startupProbe"):
            self.assertEqual(c[probe]["httpGet"], {"path": "/healthz", "port": "http-metrics"})
        # Readiness follows the database: /readyz answers 503 while it does not.
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http-metrics"})
        self.assertEqual(env(c)["VEPHYS_TLS_CERT"]["value"], "/etc/vephys/tls/tls.crt")
        self.assertEqual(env(container(self.m[WORKER]))["VEPHYS_COORDINATOR"]["value"],
                         "https://lab-vephys-coordinator:7070")
        self.assertEqual(env(container(self.m[WORKER]))["VEPHYS_S3_ENDPOINT"]["value"],
                         "http://minio.storage.svc:9000")

    def test_clients_get_the_coordinators_ca_and_nothing_else(self):
        """Workers and the models Job trust the CA of the coordinator's certificate: the key named
        in coordinator.tls.ca, mounted as the file VEPHYS_CA_CERT names."""
        for key in (WORKER, MODELS):
            spec = pod_spec(self.m[key])
            c = container(self.m[key])
            self.assertEqual(env(c)["VEPHYS_CA_CERT"]["value"], "/etc/vephys/coordinator-ca/ca.crt")
            self.assertIn({"name": "coordinator-ca", "mountPath": "/etc/vephys/coordinator-ca",
                           "readOnly": True}, c["volumeMounts"])
            vol = next(v for v in spec["volumes"] if v["name"] == "coordinator-ca")
            self.assertEqual(vol["configMap"], {"name": "vephys-trust-bundle",
                                                "items": [{"key": "root-ca.pem", "path": "ca.crt"}]})
        # Without a CA source: ca.crt of the TLS Secret itself (cert-manager's CA and
        # self-signed issuers write it there), that key only, never tls.key.
        m = render("--set", "coordinator.tls.enabled=true,coordinator.tls.existingSecret=coord-tls")
        for key in (WORKER, MODELS):
            vol = next(v for v in pod_spec(m[key])["volumes"] if v["name"] == "coordinator-ca")
            self.assertEqual(vol["secret"], {"secretName": "coord-tls",
                                             "items": [{"key": "ca.crt", "path": "ca.crt"}]})
        # A certificate from a public CA: no CA is given.
        m = render("--set", "coordinator.tls.enabled=true,coordinator.tls.existingSecret=coord-tls,"
                            "coordinator.tls.ca.enabled=false")
        self.assertNotIn("VEPHYS_CA_CERT", env(container(m[WORKER])))
        self.assertFalse(any(v["name"] == "coordinator-ca" for v in pod_spec(m[WORKER])["volumes"]))

    def test_the_database_ca_reaches_the_coordinator_and_the_migrations_only(self):
        for key, name in ((COORD, "coordinator"), (HOOK, "migrate")):
            spec = pod_spec(self.m[key])
            c = container(self.m[key], name)
            self.assertEqual(env(c)["VEPHYS_DATABASE_CA"]["value"], "/etc/vephys/database-ca/ca.crt")
            self.assertIn({"name": "database-ca", "mountPath": "/etc/vephys/database-ca",
                           "readOnly": True}, c["volumeMounts"])
            vol = next(v for v in spec["volumes"] if v["name"] == "database-ca")
            self.assertEqual(vol["secret"], {"secretName": "rds-ca",
                                             "items": [{"key": "global-bundle.pem", "path": "ca.crt"}]})
        for key in (WORKER, MODELS):
            self.assertNotIn("VEPHYS_DATABASE_CA", env(container(self.m[key])))
        m = render("--set", "database.ca.existingConfigMap=db-ca")
        vol = next(v for v in pod_spec(m[COORD])["volumes"] if v["name"] == "database-ca")
        self.assertEqual(vol["configMap"], {"name": "db-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]})

    def test_extra_volumes_mounts_init_containers_and_sidecars(self):
        spec = pod_spec(self.m[COORD])
        self.assertEqual([c["name"] for c in spec["containers"]], ["coordinator", "db-proxy"])
        self.assertIn({"name": "pgbouncer", "configMap": {"name": "vephys-pgbouncer"}}, spec["volumes"])
        self.assertIn({"name": "pgbouncer", "mountPath": "/etc/vephys/pgbouncer", "readOnly": True},
                      container(self.m[COORD], "coordinator")["volumeMounts"])
        m = render(
            "--set", "worker.extraVolumes[0].name=models",
            "--set", "worker.extraVolumes[0].persistentVolumeClaim.claimName=exported",
            "--set", "worker.extraVolumeMounts[0].name=models",
            "--set", "worker.extraVolumeMounts[0].mountPath=/models",
            "--set", "worker.initContainers[0].name=warm",
            "--set", "worker.initContainers[0].image=busybox:1.36",
            "--set", "worker.sidecars[0].name=exporter",
            "--set", "worker.sidecars[0].image=dcgm-exporter:4",
            "--set", "migrations.initContainers[0].name=proxy",
            "--set", "migrations.initContainers[0].image=cloud-sql-proxy:2",
            "--set", "migrations.initContainers[0].restartPolicy=Always",
            "--set", "migrations.extraVolumes[0].name=proxy-creds",
            "--set", "migrations.extraVolumes[0].secret.secretName=sa-key",
            "--set", "coordinator.initContainers[0].name=wait",
            "--set", "coordinator.initContainers[0].image=busybox:1.36")
        w = pod_spec(m[WORKER])
        self.assertEqual([c["name"] for c in w["containers"]], ["worker", "exporter"])
        self.assertEqual([c["name"] for c in w["initContainers"]], ["warm"])
        self.assertIn({"name": "models", "persistentVolumeClaim": {"claimName": "exported"}}, w["volumes"])
        self.assertIn({"name": "models", "mountPath": "/models"},
                      container(m[WORKER], "worker")["volumeMounts"])
        job = pod_spec(m[HOOK])
        self.assertEqual(job["initContainers"][0]["restartPolicy"], "Always")
        self.assertIn({"name": "proxy-creds", "secret": {"secretName": "sa-key"}}, job["volumes"])
        self.assertEqual(pod_spec(m[COORD])["initContainers"][0]["name"], "wait")

    def test_generated_tokens_and_service_monitor(self):
        secret = self.m[("Secret", "lab-vephys-tokens")]
        self.assertEqual(set(secret["data"]), {"worker-token", "user-token"})
        sm = self.m[("ServiceMonitor", "lab-vephys-coordinator")]
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "http-metrics")
        self.assertEqual(sm["metadata"]["labels"]["release"], "kube-prometheus-stack")

    def test_network_policy_admits_workers_the_models_job_and_the_named_users(self):
        np = self.m[("NetworkPolicy", "lab-vephys-coordinator")]
        grpc, metrics = np["spec"]["ingress"]
        self.assertEqual(grpc["ports"], [{"port": "grpc", "protocol": "TCP"}])
        comps = [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                 for p in grpc["from"] if "podSelector" in p]
        self.assertEqual(comps, ["worker", "models"])
        self.assertEqual(grpc["from"][2]["namespaceSelector"]["matchLabels"],
                         {"kubernetes.io/metadata.name": "research"})
        self.assertNotIn("from", metrics)
        deny = self.m[("NetworkPolicy", "lab-vephys-deny-ingress")]
        self.assertEqual(deny["spec"]["policyTypes"], ["Ingress"])
        self.assertNotIn("ingress", deny["spec"])
        self.assertEqual(deny["spec"]["podSelector"]["matchExpressions"][1]["values"],
                         ["worker", "migrations", "models"])

    def test_cpu_only_workers_request_no_gpu_and_see_none(self):
        m = render("--set", "worker.gpu.count=0")
        c = container(m[WORKER])
        self.assertFalse(any("nvidia.com" in k for k in c["resources"]["limits"]))
        self.assertEqual(env(c)["VEPHYS_DEVICE"]["value"], "auto")
        # The image's NVIDIA_VISIBLE_DEVICES is overridden: the NVIDIA runtime exposes no GPU.
        self.assertEqual(env(c)["NVIDIA_VISIBLE_DEVICES"]["value"], "void")
        self.assertNotIn("affinity", pod_spec(m[WORKER]))
        # The models Job describes the built-in models with the worker image, on CPU as well.
        describe = pod_spec(m[MODELS])["initContainers"][0]
        self.assertEqual(env(describe)["NVIDIA_VISIBLE_DEVICES"]["value"], "void")
        self.assertFalse(any("nvidia.com" in k for k in describe["resources"]["limits"]))


class Tokens(unittest.TestCase):
    """auth.create: tokens derived from auth.tokenSeed, identical on every render (`helm
    template` has no `lookup`, so random tokens would change on every GitOps sync)."""

    SEED = "0123456789abcdef0123456789abcdef-seed"

    def render_seed(self, seed):
        return render("--set", "auth.create=true", "--set", f"auth.tokenSeed={seed}")

    def test_tokens_are_stable_across_renders_and_derived_from_the_seed(self):
        s1 = self.render_seed(self.SEED)[("Secret", "lab-vephys-tokens")]
        s2 = self.render_seed(self.SEED)[("Secret", "lab-vephys-tokens")]
        self.assertEqual(s1, s2)
        data = {k: base64.b64decode(v).decode() for k, v in s1["data"].items()}
        self.assertEqual(data, {"worker-token": sha256(f"{self.SEED}/worker-token"),
                                "user-token": sha256(f"{self.SEED}/user-token")})
        # The seed itself appears in no manifest.
        _, out, _ = helm_template("--set", "auth.create=true", "--set", f"auth.tokenSeed={self.SEED}")
        self.assertNotIn(self.SEED, out)

    def test_a_new_seed_rotates_the_tokens_and_rolls_the_pods(self):
        m1, m2 = self.render_seed(self.SEED), self.render_seed("x" * 40)
        self.assertNotEqual(m1[("Secret", "lab-vephys-tokens")]["data"],
                            m2[("Secret", "lab-vephys-tokens")]["data"])
        for key in (COORD, WORKER):
            a1 = m1[key]["spec"]["template"]["metadata"]["annotations"]["checksum/tokens"]
            a2 = m2[key]["spec"]["template"]["metadata"]["annotations"]["checksum/tokens"]
            self.assertNotEqual(a1, a2, key)
        # An existing Secret: nothing generated, nothing to roll on.
        m = render()
        self.assertNotIn(("Secret", "lab-vephys-tokens"), m)
        self.assertNotIn("annotations", m[WORKER]["spec"]["template"]["metadata"])


# What the NVIDIA GPU Operator advertises on a node, per MIG strategy: the device plugin's
# allocatable resources and the labels of GPU feature discovery and the MIG manager (the
# gpu-feature-discovery README, "Generated labels" with its MIG 'single' and 'mixed' sections,
# and the GPU Operator's MIG guide). Nodes of 8 H100 80GB (one of 8 A100 80GB); every GPU node
# carries the usual nvidia.com/gpu NoSchedule taint.
H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
GPU_NODES = {
    # Strategy none: whole GPUs.
    "h100-whole": {
        "resources": {"nvidia.com/gpu": 8},
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": H100,
                   "nvidia.com/gpu.count": "8", "nvidia.com/gpu.memory": "81559"},
    },
    "a100-whole": {
        "resources": {"nvidia.com/gpu": 8},
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                   "nvidia.com/gpu.count": "8", "nvidia.com/gpu.memory": "81920"},
    },
    # Strategy single, MIG off on this node (nvidia.com/mig.config=all-disabled): whole GPUs.
    "h100-single-mig-off": {
        "resources": {"nvidia.com/gpu": 8},
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/mig.strategy": "single",
                   "nvidia.com/gpu.product": H100, "nvidia.com/gpu.count": "8",
                   "nvidia.com/mig.config": "all-disabled", "nvidia.com/mig.capable": "true"},
    },
    # Strategy single, all-1g.10gb: 7 slices per GPU, each advertised as nvidia.com/gpu.
    "h100-single-1g.10gb": {
        "resources": {"nvidia.com/gpu": 56},
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/mig.strategy": "single",
                   "nvidia.com/gpu.product": f"{H100}-MIG-1g.10gb", "nvidia.com/gpu.count": "56",
                   "nvidia.com/gpu.memory": "9856", "nvidia.com/gpu.slices.gi": "1",
                   "nvidia.com/gpu.slices.ci": "1", "nvidia.com/mig.config": "all-1g.10gb",
                   "nvidia.com/mig.capable": "true"},
    },
    # Strategy single, all-3g.40gb: 2 slices per GPU.
    "h100-single-3g.40gb": {
        "resources": {"nvidia.com/gpu": 16},
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/mig.strategy": "single",
                   "nvidia.com/gpu.product": f"{H100}-MIG-3g.40gb", "nvidia.com/gpu.count": "16",
                   "nvidia.com/gpu.memory": "40192", "nvidia.com/gpu.slices.gi": "3",
                   "nvidia.com/gpu.slices.ci": "3", "nvidia.com/mig.config": "all-3g.40gb",
                   "nvidia.com/mig.capable": "true"},
    },
    # Strategy mixed, all-balanced: per GPU 2 x 1g.10gb, 1 x 2g.20gb, 1 x 3g.40gb, each profile
    # its own resource; the product label stays the whole GPU's.
    "h100-mixed-balanced": {
        "resources": {"nvidia.com/mig-1g.10gb": 16, "nvidia.com/mig-2g.20gb": 8,
                      "nvidia.com/mig-3g.40gb": 8},
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/mig.strategy": "mixed",
                   "nvidia.com/gpu.product": H100, "nvidia.com/gpu.count": "8",
                   "nvidia.com/mig-1g.10gb.count": "16", "nvidia.com/mig-2g.20gb.count": "8",
                   "nvidia.com/mig-3g.40gb.count": "8", "nvidia.com/mig.config": "all-balanced",
                   "nvidia.com/mig.capable": "true"},
    },
    "cpu": {"resources": {}, "labels": {}, "taints": []},
}


def _matches(expr, labels):
    key, op, vals = expr["key"], expr["operator"], expr.get("values", [])
    if op == "In":
        return labels.get(key) in vals
    if op == "NotIn":
        return labels.get(key) not in vals
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        return key in labels and (int(labels[key]) > int(vals[0]) if op == "Gt"
                                  else int(labels[key]) < int(vals[0]))
    raise AssertionError(f"unknown operator {op}")


def _tolerated(taint, tolerations):
    for t in tolerations:
        if t.get("effect") not in (None, "", taint["effect"]):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


def schedulable_nodes(spec):
    """The nodes of GPU_NODES the pod fits, as the scheduler's filters see it: extended
    resources, nodeSelector, required node affinity, taints."""
    wanted = {}
    for c in spec["containers"]:
        for k, v in c.get("resources", {}).get("limits", {}).items():
            if "/" in k:
                wanted[k] = wanted.get(k, 0) + int(v)
    terms = (spec.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms"))
    fits = set()
    for name, node in GPU_NODES.items():
        labels = node["labels"]
        if any(node["resources"].get(k, 0) < n for k, n in wanted.items()):
            continue
        if any(labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
            continue
        if terms and not any(all(_matches(e, labels) for e in t.get("matchExpressions", []))
                             for t in terms):
            continue
        if not all(_tolerated(t, spec.get("tolerations", [])) for t in node.get("taints", GPU_TAINT)):
            continue
        fits.add(name)
    return fits


class GpuScheduling(unittest.TestCase):
    """Each GPU setting asks for one device and lands exactly on the nodes that advertise it."""

    CASES = [
        ("default: whole GPUs", [], {"h100-whole", "a100-whole", "h100-single-mig-off"}),
        ("examples/whole-gpus.yaml", example("whole-gpus.yaml"), {"a100-whole"}),
        ("examples/mig-single.yaml", example("mig-single.yaml"), {"h100-single-1g.10gb"}),
        ("examples/mig-mixed.yaml", example("mig-mixed.yaml"), {"h100-mixed-balanced"}),
        ("ci/gpu-values.yaml", values("gpu-values.yaml"), {"h100-mixed-balanced"}),
        ("single without a product: the MIG manager's config label",
         ["--set", "worker.gpu.migStrategy=single,worker.gpu.migProfile=3g.40gb"],
         {"h100-single-3g.40gb"}),
        ("whole H100s only", ["--set", f"worker.gpu.product={H100}"],
         {"h100-whole", "h100-single-mig-off"}),
        ("mixed 2g.20gb of H100s",
         ["--set", f"worker.gpu.migStrategy=mixed,worker.gpu.migProfile=2g.20gb,worker.gpu.product={H100}"],
         {"h100-mixed-balanced"}),
        ("a profile no node has", ["--set", "worker.gpu.migStrategy=mixed,worker.gpu.migProfile=4g.40gb"],
         set()),
    ]

    def test_workers_schedule_where_the_gpu_operator_advertises_their_device(self):
        for name, args, expected in self.CASES:
            with self.subTest(name):
                w = render(*args)[WORKER]
                devices = [v for k, v in container(w)["resources"]["limits"].items() if "/" in k]
                self.assertEqual(devices, [1], f"{name}: one device per worker")
                self.assertEqual(schedulable_nodes(pod_spec(w)), expected, name)
        cpu = pod_spec(render("--set", "worker.gpu.count=0")[WORKER])
        self.assertEqual(schedulable_nodes(cpu), set(GPU_NODES))

    def test_user_node_affinity_is_kept_and_narrowed(self):
        base = ("worker.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                ".nodeSelectorTerms[0].matchExpressions[0]")
        args = example("mig-single.yaml") + [
            "--set", f"{base}.key=topology.kubernetes.io/zone",
            "--set", f"{base}.operator=In",
            "--set", f"{base}.values[0]=eu-west-1a"]
        spec = pod_spec(render(*args)[WORKER])
        (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        self.assertEqual([e["key"] for e in term["matchExpressions"]],
                         ["topology.kubernetes.io/zone", "nvidia.com/mig.strategy",
                          "nvidia.com/gpu.product"])
        self.assertEqual(schedulable_nodes(spec), set())  # no node of the table is in that zone


class KedaValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = render(*values("keda-values.yaml"))

    def test_scaled_object_scales_workers_from_zero_on_queued_jobs(self):
        spec = self.m[SO]["spec"]
        self.assertEqual(spec["scaleTargetRef"]["name"], "lab-vephys-worker")
        self.assertEqual(spec["minReplicaCount"], 0)
        self.assertEqual(spec["maxReplicaCount"], 16)
        (trigger,) = spec["triggers"]
        self.assertEqual(trigger["type"], "postgresql")
        self.assertEqual(trigger["metadata"]["targetQueryValue"], "32")
        auth = self.m[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        # KEDA's own URL here: it cannot read the database CA mounted in the chart's pods.
        self.assertEqual(auth["spec"]["secretTargetRef"],
                         [{"parameter": "connection", "name": "vephys-keda-database", "key": "url"}])
        # KEDA owns the replica count: Helm must not reset it on upgrade.
        self.assertNotIn("replicas", self.m[WORKER]["spec"])
        m = render("--set", "keda.enabled=true")
        (trigger,) = m[SO]["spec"]["triggers"]
        auth = m[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        self.assertEqual(auth["spec"]["secretTargetRef"],
                         [{"parameter": "connection", "name": "vephys-database", "key": "url"}])

    def test_query_counts_runnable_jobs_through_the_queued_index(self):
        """The chart's query (files/keda-query.sql; coordinator/tests/keda_query.rs runs it on
        Postgres, counts and plan) counts queued jobs whose not_before has passed, nothing else:
        jobs waiting out a retry backoff must not wake GPUs. Its WHERE says state = 'queued',
        the predicate of the partial index jobs_queued."""
        (trigger,) = self.m[SO]["spec"]["triggers"]
        query = trigger["metadata"]["query"]
        with open(os.path.join(CHART, "files", "keda-query.sql")) as f:
            self.assertEqual(query, f.read().strip())
        self.assertIn("state = 'queued'", query)
        self.assertIn("not_before <= ", query)
        self.assertNotIn("leased", query)
        custom = render(*values("keda-values.yaml"), "--set", "keda.query=SELECT 1")
        (trigger,) = custom[SO]["spec"]["triggers"]
        self.assertEqual(trigger["metadata"]["query"], "SELECT 1")

    def test_initial_cooldown_keeps_the_first_worker(self):
        self.assertEqual(self.m[SO]["spec"]["initialCooldownPeriod"], 300)
        m = render(*values("keda-values.yaml"), "--set", "keda.initialCooldownPeriod=0")
        self.assertNotIn("initialCooldownPeriod", m[SO]["spec"])


STUB_VEPHYS = """#!/bin/sh
echo "$*" >> "$STUB_LOG"
if [ "$*" = "models" ] && [ "$(grep -c '^models$' "$STUB_LOG")" -lt 3 ]; then
  echo "status: Unavailable, message: connection refused" >&2
  exit 1
fi
"""
STUB_WORKER = """#!/bin/sh
echo "{\\"model\\": \\"$3\\"}"
"""


class ModelRegistration(unittest.TestCase):
    """The registry is filled by a post-install/post-upgrade hook Job: no worker needed."""

    @classmethod
    def setUpClass(cls):
        cls.m = render()

    def test_hook_job_describes_builtin_models_with_the_worker_image(self):
        job = self.m[MODELS]
        ann = job["metadata"]["annotations"]
        self.assertEqual(set(ann["helm.sh/hook"].split(",")), {"post-install", "post-upgrade"})
        self.assertIn("before-hook-creation", ann["helm.sh/hook-delete-policy"])
        spec = pod_spec(job)
        (describe,) = spec["initContainers"]
        self.assertEqual(describe["image"], container(self.m[WORKER])["image"])
        self.assertIn("for model in efficientnet_lite0;", describe["args"][0])
        self.assertIn('vephys-worker layers --model "$model" --json', describe["args"][0])
        register = container(job)
        self.assertEqual(register["image"], container(self.m[COORD])["image"])
        e = env(register)
        self.assertEqual(e["VEPHYS_COORDINATOR"]["value"], "http://lab-vephys-coordinator:7070")
        self.assertEqual(e["VEPHYS_TOKEN"]["valueFrom"]["secretKeyRef"],
                         {"name": "vephys-tokens", "key": "user-token"})
        self.assertIn('vephys models add "$file"', register["args"][0])

    def test_manifests_from_values_and_an_existing_config_map(self):
        m = render(*values("gpu-values.yaml"), "--set", "models.existingConfigMap=site-models",
                   "--set", "models.builtin=null")
        cm = m[("ConfigMap", "lab-vephys-models")]
        self.assertEqual(set(cm["data"]), {"tiny.json"})
        spec = pod_spec(m[MODELS])
        self.assertNotIn("initContainers", spec)  # no built-in models: the worker image is not pulled
        vols = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(vols["values"]["configMap"]["name"], "lab-vephys-models")
        self.assertEqual(vols["configmap"]["configMap"]["name"], "site-models")
        mounts = {mt["mountPath"] for mt in container(m[MODELS])["volumeMounts"]}
        self.assertTrue({"/models/values", "/models/configmap"} <= mounts)
        # Nothing to register, or registration off: no Job.
        self.assertNotIn(MODELS, render("--set", "models.builtin=null"))
        self.assertNotIn(MODELS, render("--set", "models.register=false"))

    def test_the_scripts_run(self):
        """Both containers' scripts, run by sh with stand-in binaries: the worker image describes
        each built-in model into a file; the register script waits for the API (down twice
        here), then adds every description of every mounted directory, and says how many."""
        spec = pod_spec(self.m[MODELS])
        describe = spec["initContainers"][0]["args"][0]
        register = container(self.m[MODELS])["args"][0]
        with tempfile.TemporaryDirectory() as tmp:
            bins, models, log = (os.path.join(tmp, d) for d in ("bin", "models", "log"))
            os.makedirs(bins)
            for d in ("builtin", "values"):
                os.makedirs(os.path.join(models, d))
            for name, body in (("vephys", STUB_VEPHYS), ("vephys-worker", STUB_WORKER),
                               ("sleep", "#!/bin/sh\n")):
                path = os.path.join(bins, name)
                with open(path, "w") as f:
                    f.write(body)
                os.chmod(path, 0o755)
            with open(os.path.join(models, "values", "tiny.json"), "w") as f:
                f.write("{}")
            environ = {"PATH": f"{bins}:/usr/bin:/bin", "STUB_LOG": log,
                       "VEPHYS_COORDINATOR": "http://c:7070"}
            for script in (describe, register):
                script = script.replace("/models/", models + "/")
                out = subprocess.run(["sh", "-ec", script], env=environ, capture_output=True,
                                     text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stderr)
            with open(os.path.join(models, "builtin", "efficientnet_lite0.json")) as f:
                self.assertEqual(f.read().strip(), '{"model": "efficientnet_lite0"}')
            with open(log) as f:
                calls = f.read().splitlines()
            self.assertEqual(calls, ["models", "models", "models",
                                     f"models add {models}/builtin/efficientnet_lite0.json",
                                     f"models add {models}/values/tiny.json", "models"])
            self.assertIn("registered 2 model description(s)", out.stdout)

    def test_the_register_script_gives_up_on_a_coordinator_that_never_answers(self):
        register = container(render("--set", "models.waitSeconds=1")[MODELS])["args"][0]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "vephys")
            with open(path, "w") as f:
                f.write("#!/bin/sh\necho 'status: Unavailable' >&2\nexit 1\n")
            os.chmod(path, 0o755)
            out = subprocess.run(["sh", "-ec", register], capture_output=True, text=True, timeout=60,
                                 env={"PATH": f"{tmp}:/usr/bin:/bin", "VEPHYS_COORDINATOR": "http://c:7070"})
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("did not answer within 1 s: status: Unavailable", out.stderr)


class CustomResourceSchemas(unittest.TestCase):
    """kubernetes-validate knows only built-in kinds; these are the fields the chart writes."""

    def test_custom_resources_match_their_schemas(self):
        checked = set()
        for vals in ([], values("gpu-values.yaml"), values("keda-values.yaml")):
            for (kind, name), obj in render(*vals).items():
                schema = CRD_SCHEMAS.get((obj["apiVersion"], kind))
                if schema is None:
                    continue
                try:
                    jsonschema.validate(obj, schema)
                except jsonschema.ValidationError as e:
                    self.fail(f"{kind}/{name}: {e.message} at {list(e.absolute_path)}")
                checked.add(kind)
        self.assertEqual(checked, {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"})


class BadValuesFail(unittest.TestCase):
    """Each bad value must stop `helm template` (and so `helm install`) with a clear message."""

    CASES = [
        (["--set", "coordinator.replicaCount=-1"], "/coordinator/replicaCount", "minimum"),
        (["--set", "worker.replicaCount=two"], "/worker/replicaCount", "want integer"),
        (["--set-string", "worker.gpu.count=1"], "/worker/gpu/count", "want integer"),
        # one device per worker: a worker runs one batch at a time on one device
        (["--set", "worker.gpu.count=2"], "/worker/gpu/count", "maximum"),
        (["--set", "worker.gpu.resourceName=gpu"], "/worker/gpu/resourceName", "does not match"),
        (["--set", "worker.gpu.migStrategy=auto"], "/worker/gpu/migStrategy", ""),
        (["--set", "worker.gpu.migProfile=1g10gb"], "/worker/gpu/migProfile", "does not match"),
        (["--set", "auth.tokenSeed=short"], "/auth/tokenSeed", "does not match"),
        (["--set", "models.builtin[0]=vgg19;reboot"], "/models/builtin/0", "does not match"),
        (["--set", "models.manifests.model=xx"], "", "'model' does not match pattern"),
        (["--set", "worker.extraVolumeMounts[0].name=x"], "/worker/extraVolumeMounts/0", "mountPath"),
        (["--set", "coordinator.sidecars[0].name=proxy"], "/coordinator/sidecars/0", "image"),
        (["--set", "worker.cache.sizeLimit=20"], "/worker/cache/sizeLimit", "want string"),
        (["--set", "database.ca.cert=x"], "/database/ca", "'cert' not allowed"),
        (["--set", "worker.gpus=1"], "/worker", "'gpus' not allowed"),
        (["--set", "worker.terminationGracePeriodSeconds=5"],
         "/worker/terminationGracePeriodSeconds", "minimum"),
        (["--set", "worker.device=tpu"], "/worker/device", "does not match"),
        (["--set", "objectStore.url=my-bucket"], "/objectStore/url", "does not match"),
        (["--set", "worker.maxJobs=0"], "/worker/maxJobs", "minimum"),
        (["--set", "keda.targetQueryValue=0"], "/keda/targetQueryValue", "exclusiveMinimum"),
        (["--set", "database.existingSecret="], "/database/existingSecret", "minLength"),
        (["--set", "coordinator.image.pullPolicy=Sometimes"], "/coordinator/image/pullPolicy", ""),
        (["--set", "worker.resources.limits.memory=lots"], "/worker/resources/limits/memory", ""),
    ]

    def test_schema_rejects_bad_values_naming_the_field(self):
        for args, where, what in self.CASES:
            with self.subTest(args=args):
                code, _, err = helm_template(*args)
                self.assertNotEqual(code, 0, f"{args} rendered")
                self.assertIn("values don't meet the specifications of the schema", err)
                self.assertIn(f"at '{where}'", err)
                self.assertIn(what, err)

    def test_template_checks_explain_themselves(self):
        cases = [
            (["--set", "worker.image.tag=latest"], "image tag `latest` is not allowed"),
            (["--set", "coordinator.tls.enabled=true"], "coordinator.tls.existingSecret is required"),
            (["--set", "auth.existingSecret="], "auth.existingSecret is required"),
            (["--set", "auth.create=true"], "auth.create=true needs auth.tokenSeed"),
            (["--set", "worker.gpu.migStrategy=mixed"],
             "worker.gpu.migProfile is required with worker.gpu.migStrategy=mixed"),
            (["--set", "worker.gpu.migProfile=1g.10gb"], "applies to migStrategy single or mixed"),
            (["-f", os.path.join(CHART, "ci", "keda-values.yaml"),
              "--set", "keda.minReplicaCount=20"], "is above keda.maxReplicaCount"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                code, _, err = helm_template(*args)
                self.assertNotEqual(code, 0, f"{args} rendered")
                self.assertIn(message, err)


# Schemas for the custom resources the chart renders, written from the KEDA v2 and Prometheus
# Operator v1 API references for the fields the chart uses. Unknown fields are refused at the
# levels the chart writes, so a typo (e.g. `minReplicas`) fails here as it would in the cluster.
_META = {"type": "object", "required": ["name", "namespace"]}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                       "name": {"type": "string"},
                                       "envSourceContainerName": {"type": "string"}},
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "advanced": {"type": "object"},
                    "fallback": {"type": "object"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "useCachedMetrics": {"type": "boolean"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                # KEDA reads every trigger parameter as a string.
                                "metadata": _STR_MAP,
                                "authenticationRef": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"},
                                                   "kind": {"enum": ["TriggerAuthentication",
                                                                     "ClusterTriggerAuthentication"]}},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["parameter", "name", "key"],
                            "properties": {"parameter": {"type": "string", "minLength": 1},
                                           "name": {"type": "string", "minLength": 1},
                                           "key": {"type": "string", "minLength": 1}},
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object",
                                 "properties": {"matchLabels": _STR_MAP,
                                                "matchExpressions": {"type": "array"}}},
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"},
                                       "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "jobLabel": {"type": "string"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                # Prometheus durations, e.g. 30s, 1m, 1h30m.
                                "interval": {"type": "string",
                                             "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                                "scrapeTimeout": {"type": "string",
                                                  "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            },
                        },
                    },
                },
            },
        },
    },
}


if __name__ == "__main__":
    if not os.path.exists(HELM):
        sys.exit(f"helm not found at {HELM}: run scripts/helm-check.sh (it installs it), or set HELM")
    result = unittest.main(exit=False, verbosity=2 if "-v" in sys.argv else 1).result
    failed = len(result.failures) + len(result.errors)
    print(f"helm-render: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
