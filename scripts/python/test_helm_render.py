"""Renders the Helm chart helm/vephys with `helm template` and checks what a platform team relies
on: GPU resources (count and MIG resource name from values), native gRPC probes on the
coordinator, the pre-install/pre-upgrade migration hook Job, KEDA scaling, the security context,
secrets only by reference, and that bad values fail with a clear schema message. The custom
resources (KEDA ScaledObject and TriggerAuthentication, Prometheus ServiceMonitor), which
kubernetes-validate has no schemas for, are checked against the schemas at the end of this file.

usage: HELM=/path/to/helm python test_helm_render.py [-v]     (run by scripts/helm-check.sh)
"""
import os
import subprocess
import sys
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


COORD = ("Deployment", "lab-vephys-coordinator")
WORKER = ("Deployment", "lab-vephys-worker")
HOOK = ("Job", "lab-vephys-migrate")


class DefaultValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = render()

    def test_renders_the_expected_objects(self):
        kinds = sorted(k for k, _ in self.m)
        self.assertEqual(
            kinds,
            sorted(["Deployment", "Deployment", "Service", "PodDisruptionBudget", "Job",
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
        self.assertEqual(c["livenessProbe"]["grpc"], {"port": 7070})
        self.assertEqual(c["readinessProbe"]["grpc"], {"port": 7070, "service": "vephys.v1.Workers"})
        self.assertEqual(c["startupProbe"]["grpc"], {"port": 7070})
        e = env(c)
        self.assertEqual(e["VEPHYS_LISTEN"]["value"], "0.0.0.0:7070")
        self.assertEqual(e["VEPHYS_HTTP"]["value"], "0.0.0.0:7071")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"grpc": 7070, "http-metrics": 7071})
        svc = self.m[("Service", "lab-vephys-coordinator")]
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]},
                         {"grpc": 7070, "http-metrics": 7071})
        self.assertEqual(c["resources"]["limits"]["memory"], "1Gi")
        pdb = self.m[("PodDisruptionBudget", "lab-vephys-coordinator")]
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
        for key in (COORD, WORKER, HOOK):
            spec = pod_spec(self.m[key])
            self.assertIs(spec["securityContext"]["runAsNonRoot"], True, key)
            self.assertEqual(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            self.assertIs(spec["automountServiceAccountToken"], False, key)
            sc = container(self.m[key])["securityContext"]
            self.assertIs(sc["readOnlyRootFilesystem"], True, key)
            self.assertIs(sc["allowPrivilegeEscalation"], False, key)
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], key)
            self.assertGreaterEqual(sc["runAsUser"], 10000, key)

    def test_secrets_are_only_referenced(self):
        secret_vars = {"VEPHYS_DATABASE_URL", "VEPHYS_WORKER_TOKEN", "VEPHYS_USER_TOKEN",
                       "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        seen = set()
        for key in (COORD, WORKER, HOOK):
            for name, e in env(container(self.m[key])).items():
                if name in secret_vars:
                    self.assertNotIn("value", e, f"{key}: {name}")
                    self.assertIn("secretKeyRef", e["valueFrom"], f"{key}: {name}")
                    seen.add(name)
        self.assertEqual(seen, secret_vars)
        # Workers hold no database credentials.
        self.assertNotIn("VEPHYS_DATABASE_URL", env(container(self.m[WORKER])))


class GpuValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = render(*values("gpu-values.yaml"))

    def test_mig_resource_name_and_count_come_from_values(self):
        w = self.m[WORKER]
        res = container(w)["resources"]
        self.assertEqual(res["limits"]["nvidia.com/mig-1g.10gb"], 2)
        self.assertEqual(res["requests"]["nvidia.com/mig-1g.10gb"], 2)
        self.assertNotIn("nvidia.com/gpu", res["limits"])
        spec = pod_spec(w)
        self.assertEqual(spec["runtimeClassName"], "nvidia")
        self.assertEqual(spec["terminationGracePeriodSeconds"], 900)
        self.assertIn("nvidia.com/gpu.product", spec["nodeSelector"])
        self.assertEqual(len(spec["tolerations"]), 2)
        self.assertIn("podAntiAffinity", spec["affinity"])
        self.assertEqual(w["spec"]["replicas"], 3)
        self.assertEqual(env(container(w))["VEPHYS_MAX_JOBS"]["value"], "32")

    def test_digest_pins_the_image(self):
        img = container(self.m[WORKER])["image"]
        self.assertTrue(img.startswith("registry.example.com/vephys/vephys-worker@sha256:"), img)
        self.assertEqual(container(self.m[COORD])["image"],
                         "registry.example.com/vephys/vephys-coordinator:0.1.0")

    def test_spool_volume_can_be_a_claim(self):
        vols = {v["name"]: v for v in pod_spec(self.m[WORKER])["volumes"]}
        self.assertEqual(vols["spool"]["persistentVolumeClaim"]["claimName"], "vephys-spool")

    def test_tls_switches_probes_to_http_and_workers_to_https(self):
        c = container(self.m[COORD])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertEqual(c[probe]["httpGet"], {"path": "/healthz", "port": "http-metrics"})
        self.assertEqual(env(c)["VEPHYS_TLS_CERT"]["value"], "/etc/vephys/tls/tls.crt")
        self.assertEqual(env(container(self.m[WORKER]))["VEPHYS_COORDINATOR"]["value"],
                         "https://lab-vephys-coordinator:7070")
        self.assertEqual(env(container(self.m[WORKER]))["VEPHYS_S3_ENDPOINT"]["value"],
                         "http://minio.storage.svc:9000")

    def test_generated_tokens_and_service_monitor(self):
        secret = self.m[("Secret", "lab-vephys-tokens")]
        self.assertEqual(set(secret["data"]), {"worker-token", "user-token"})
        self.assertEqual(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        sm = self.m[("ServiceMonitor", "lab-vephys-coordinator")]
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "http-metrics")
        self.assertEqual(sm["metadata"]["labels"]["release"], "kube-prometheus-stack")

    def test_network_policy_admits_workers_and_the_named_users(self):
        np = self.m[("NetworkPolicy", "lab-vephys-coordinator")]
        grpc, metrics = np["spec"]["ingress"]
        self.assertEqual(grpc["ports"], [{"port": "grpc", "protocol": "TCP"}])
        self.assertEqual(grpc["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
                         "worker")
        self.assertEqual(grpc["from"][1]["namespaceSelector"]["matchLabels"],
                         {"kubernetes.io/metadata.name": "research"})
        self.assertNotIn("from", metrics)
        deny = self.m[("NetworkPolicy", "lab-vephys-deny-ingress")]
        self.assertEqual(deny["spec"]["policyTypes"], ["Ingress"])
        self.assertNotIn("ingress", deny["spec"])

    def test_cpu_only_workers_request_no_gpu(self):
        m = render("--set", "worker.gpu.count=0")
        c = container(m[WORKER])
        self.assertFalse(any("nvidia.com" in k for k in c["resources"]["limits"]))
        self.assertEqual(env(c)["VEPHYS_DEVICE"]["value"], "auto")


class KedaValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = render(*values("keda-values.yaml"))

    def test_scaled_object_scales_workers_from_zero_on_queued_jobs(self):
        so = self.m[("ScaledObject", "lab-vephys-worker")]
        spec = so["spec"]
        self.assertEqual(spec["scaleTargetRef"]["name"], "lab-vephys-worker")
        self.assertEqual(spec["minReplicaCount"], 0)
        self.assertEqual(spec["maxReplicaCount"], 16)
        (trigger,) = spec["triggers"]
        self.assertEqual(trigger["type"], "postgresql")
        self.assertIn("FROM jobs WHERE state", trigger["metadata"]["query"])
        self.assertIn("'queued'", trigger["metadata"]["query"])
        self.assertEqual(trigger["metadata"]["targetQueryValue"], "32")
        auth = self.m[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        self.assertEqual(auth["spec"]["secretTargetRef"],
                         [{"parameter": "connection", "name": "vephys-database", "key": "url"}])
        # KEDA owns the replica count: Helm must not reset it on upgrade.
        self.assertNotIn("replicas", self.m[WORKER]["spec"])


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
        (["--set", "worker.gpu.resourceName=gpu"], "/worker/gpu/resourceName", "does not match"),
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
