"""The one config file a fleet's Kubernetes objects are rendered from (``statefleet k8s render --config``).

Every model forbids unknown keys, and every check names the field it refuses and why, so a typo or an
unsafe setting (a grace period shorter than the drain, weights that do not add up) never reaches a cluster.
The example with every section is ``deploy/statefleet.yaml``; docs/kubernetes.md explains each one.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import _names
from ._quantity import check_bytes, check_cpu, parse_quantity


def _whole_number_as_text(value: Any) -> Any:
    """YAML reads ``cpu: 1`` or ``grafana_dashboard: 1`` as a number; Kubernetes wants the text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return value


Text = Annotated[str, BeforeValidator(_whole_number_as_text)]
DnsLabel = Annotated[str, AfterValidator(_names.dns_label)]
DnsSubdomain = Annotated[str, AfterValidator(_names.dns_subdomain)]
Hostname = Annotated[str, AfterValidator(_names.hostname)]
SecretKey = Annotated[str, AfterValidator(_names.secret_key)]
EnvName = Annotated[str, AfterValidator(_names.env_name)]
HttpToken = Annotated[str, AfterValidator(_names.http_token)]
Image = Annotated[str, AfterValidator(_names.image)]
Cidr = Annotated[str, AfterValidator(_names.cidr)]
Cpu = Annotated[Text, AfterValidator(check_cpu)]
Bytes = Annotated[Text, AfterValidator(check_bytes)]
LabelKey = Annotated[str, AfterValidator(_names.label_key)]
LabelValue = Annotated[Text, AfterValidator(_names.label_value)]
Labels = dict[LabelKey, LabelValue]
Port = Annotated[int, Field(ge=1, le=65535)]

#: Environment variables the renderer sets itself; ``server.env`` may not set them.
RENDERED_ENV = frozenset({
    "STATEFLEET_APP", "STATEFLEET_STORE", "STATEFLEET_HOST", "STATEFLEET_PORT", "STATEFLEET_WORKERS",
    "STATEFLEET_DRAIN_TIMEOUT", "STATEFLEET_LEASE_TTL", "STATEFLEET_MAX_IN_FLIGHT", "STATEFLEET_LOG_LEVEL",
    "STATEFLEET_ADVERTISE", "STATEFLEET_VERSION_URL_TEMPLATE", "POD_IP", "TMPDIR",
})


class Model(BaseModel):
    """Frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Model):
    """A key of a Secret in the agent's namespace, created by you (the renderer never writes secrets)."""

    name: DnsSubdomain = Field(description="The Secret's name.")
    key: SecretKey = Field(description="The key inside it.")


class ResourceList(Model):
    """CPU and memory, as Kubernetes quantities."""

    cpu: Cpu | None = Field(default=None, description="CPU cores (500m, 2).")
    memory: Bytes | None = Field(default=None, description="Memory (512Mi, 2Gi).")


class Resources(Model):
    """Requests (what the scheduler reserves) and limits; a limit below its request is refused."""

    requests: ResourceList = Field(description="Reserved per container; cpu and memory are both required.")
    limits: ResourceList = Field(default=ResourceList(), description="Caps; memory defaults to the request.")

    @field_validator("requests")
    @classmethod
    def _requests_complete(cls, requests: ResourceList) -> ResourceList:
        missing = [name for name in ("cpu", "memory") if getattr(requests, name) is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)} must be given: the scheduler places pods and the autoscaler "
                             f"computes utilisation from requests")
        return requests

    @field_validator("limits")
    @classmethod
    def _limits_cover_requests(cls, limits: ResourceList, info: ValidationInfo) -> ResourceList:
        requests = info.data.get("requests")
        if requests is None:
            return limits
        for name in ("cpu", "memory"):
            limit, request = getattr(limits, name), getattr(requests, name)
            if limit is not None and request is not None and parse_quantity(limit) < parse_quantity(request):
                raise ValueError(f"{name} limit {limit} is below its request {request}")
        return limits

    def effective_limits(self) -> dict[str, str]:
        """The limits as rendered: memory is always capped (at the request unless given)."""
        limits = {"memory": self.limits.memory or self.requests.memory or ""}
        if self.limits.cpu is not None:
            limits = {"cpu": self.limits.cpu, **limits}
        return limits


class Agent(Model):
    """What runs: the agent's name (as in ``Agent("support", ...)``), its namespace and where the image has it."""

    name: DnsLabel = Field(description="The Agent's name in code: metrics carry it as the `agent` label.")
    namespace: DnsLabel = Field(description="The namespace rendered for the fleet (and created by the render).")
    app: Annotated[str, AfterValidator(_names.app_reference)] = Field(
        description="STATEFLEET_APP for `statefleet serve`: module:attribute or path/to/file.py:attribute.")
    image_pull_secrets: list[DnsSubdomain] = Field(default=[], description="Secrets to pull the images with.")
    pod_security: Literal["restricted", "baseline", "privileged"] = Field(
        default="restricted", description="The namespace's Pod Security level (restricted needs a mesh's CNI "
                                          "plugin: its init container would need NET_ADMIN).")

    @field_validator("name")
    @classmethod
    def _short_enough(cls, name: str) -> str:
        if len(name) > 40:
            raise ValueError(f"{name!r} is {len(name)} characters; at most 40, so that names such as "
                             f"{name}-redis and {name}-<version> stay valid Service names")
        return name


class ReplicaRange(Model):
    """The autoscaler's bounds for one version."""

    min: int = Field(ge=1, description="Never fewer (at least 1: a version must have a live instance to serve "
                                       "the conversations pinned to it).")
    max: int = Field(ge=1, le=10_000, description="Never more.")

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and value < low:
            raise ValueError(f"{value} is below min ({low})")
        return value


class Version(Model):
    """One agent version: one Deployment, its Service, PDB and autoscaler."""

    name: DnsLabel = Field(description="The version as the agent reports it (Agent(version=...)); a label value.")
    image: Image = Field(description="The image serving this version, pinned to a tag or digest.")
    weight: int = Field(ge=0, le=100, description="Percent of new conversations (all weights add up to 100).")
    replicas: ReplicaRange = Field(description="The autoscaler's bounds for this version.")
    app: Annotated[str, AfterValidator(_names.app_reference)] | None = Field(
        default=None, description="STATEFLEET_APP for this version, when it differs from agent.app.")


class Server(Model):
    """How each pod runs ``statefleet serve``, and how it stops."""

    port: int = Field(default=8000, ge=1024, le=65535, description="The container port (>= 1024: the pod is not root).")
    workers: int = Field(default=1, ge=1, le=64, description="STATEFLEET_WORKERS: processes per pod.")
    max_in_flight: int = Field(default=256, ge=1, description="STATEFLEET_MAX_IN_FLIGHT per worker.")
    lease_ttl_seconds: float = Field(default=3.0, ge=0.2, le=600, description="STATEFLEET_LEASE_TTL.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="STATEFLEET_LOG_LEVEL.")
    pre_stop_seconds: int = Field(default=5, ge=0, le=300,
                                  description="preStop sleep: time for endpoints to drop the pod before SIGTERM.")
    drain_timeout_seconds: float = Field(default=25.0, ge=0.1, le=3600,
                                         description="STATEFLEET_DRAIN_TIMEOUT: how long running turns may finish on "
                                                     "SIGTERM.")
    termination_grace_period_seconds: int | None = Field(
        default=None, ge=1, description="Kubernetes' grace period; at least pre_stop + drain (default: that plus 5 s).")
    resources: Resources = Field(
        default=Resources(requests=ResourceList(cpu="500m", memory="512Mi"), limits=ResourceList(memory="1Gi")),
        description="Per pod; size from docs/scaling.md.")
    env: dict[EnvName, Text] = Field(default={}, description="Extra plain environment variables (never secrets).")
    secret_env: dict[EnvName, SecretRef] = Field(
        default={}, description="Environment variables read from Secrets (e.g. an LLM API key).")

    @field_validator("termination_grace_period_seconds")
    @classmethod
    def _grace_covers_drain(cls, value: int | None, info: ValidationInfo) -> int | None:
        pre_stop, drain = info.data.get("pre_stop_seconds"), info.data.get("drain_timeout_seconds")
        if value is None or pre_stop is None or drain is None:
            return value
        if value < pre_stop + drain:
            raise ValueError(f"{value} s is shorter than pre_stop_seconds + drain_timeout_seconds "
                             f"({pre_stop} + {drain:g} = {pre_stop + drain:g} s): Kubernetes would kill the pod "
                             f"while its turns still drain")
        return value

    @field_validator("env", "secret_env")
    @classmethod
    def _not_rendered_env(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        taken = sorted(set(value) & RENDERED_ENV)
        if taken:
            raise ValueError(f"{', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set by the renderer from the "
                             f"config (agent, server and store sections); remove {'it' if len(taken) == 1 else 'them'}")
        if info.field_name == "secret_env":
            clash = sorted(set(value) & set(info.data.get("env") or {}))
            if clash:
                raise ValueError(f"{', '.join(clash)} also set in server.env")
        return value

    @property
    def grace_seconds(self) -> int:
        """terminationGracePeriodSeconds as rendered."""
        if self.termination_grace_period_seconds is not None:
            return self.termination_grace_period_seconds
        return math.ceil(self.pre_stop_seconds + self.drain_timeout_seconds) + 5

    @property
    def stop_seconds(self) -> int:
        """How long a stopping pod still serves: preStop, then the drain (sidecars must outlive it)."""
        return math.ceil(self.pre_stop_seconds + self.drain_timeout_seconds)


class EgressRule(Model):
    """Addresses outside the cluster a pod may open connections to."""

    cidrs: list[Cidr] = Field(min_length=1, description="Networks (0.0.0.0/0 for anywhere).")
    exclude: list[Cidr] = Field(default=[], description="Networks inside those to refuse (e.g. the cluster's own).")
    ports: list[Port] = Field(min_length=1, description="TCP ports.")

    @field_validator("exclude")
    @classmethod
    def _exclude_inside(cls, exclude: list[str], info: ValidationInfo) -> list[str]:
        cidrs = [ipaddress.ip_network(cidr) for cidr in info.data.get("cidrs") or []]
        for network in exclude:
            inner = ipaddress.ip_network(network)
            if cidrs and not any(inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]
                                 for outer in cidrs):
                raise ValueError(f"{network} is inside none of cidrs ({', '.join(map(str, cidrs))}); NetworkPolicy "
                                 f"can only cut holes in a block it allows")
        return exclude


class Backend(EgressRule):
    """A backend the agent calls (an LLM API, a tool)."""

    name: DnsLabel = Field(description="What it is, for the reader (llm-api).")


class SelfHostedRedis(Model):
    """A Redis StatefulSet in the agent's namespace: one server, AOF every second, on a PersistentVolume."""

    mode: Literal["self-hosted"]
    image: Image = Field(default="redis:7.2.5", description="A Redis 7+ image.")
    storage: Bytes = Field(default="10Gi", description="The PersistentVolumeClaim's size.")
    storage_class: DnsSubdomain | None = Field(default=None, description="The StorageClass (default: the cluster's).")
    password_secret: SecretRef = Field(description="The Redis password (requirepass); the store URL in "
                                                   "store.url_secret must carry the same one.")
    resources: Resources = Field(default=Resources(requests=ResourceList(cpu="500m", memory="1Gi")),
                                 description="Memory bounds the data set (docs/scaling.md, memory).")


class ExternalRedis(Model):
    """A managed Redis (or Sentinel, or Cluster) outside the namespace; the URL in the Secret names it."""

    mode: Literal["external"]
    egress: list[EgressRule] = Field(min_length=1, description="Where it listens, for the NetworkPolicy.")


class Store(Model):
    """Where the fleet keeps its state. The URL itself only ever lives in a Secret."""

    url_secret: SecretRef = Field(description="STATEFLEET_STORE comes from this Secret key (redis://, "
                                              "redis+sentinel://, redis+cluster://; docs/operations.md).")
    redis: Annotated[SelfHostedRedis | ExternalRedis, Field(discriminator="mode")] = Field(
        description="mode: self-hosted (a StatefulSet rendered here) or external (managed Redis).")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            raise ValueError("url is not accepted: the store URL (with its password) never goes in the config; put "
                             "it in a Secret and name that in store.url_secret (name, key)")
        return data


class PodSource(Model):
    """Pods by namespace and labels (for NetworkPolicy), and their identity (for Istio)."""

    namespace: DnsLabel | None = Field(default=None, description="Their namespace (default: the agent's).")
    pod_labels: Labels = Field(default={}, description="Their labels (empty: every pod of the namespace).")
    service_account: DnsSubdomain | None = Field(
        default=None, description="Their ServiceAccount, for Istio's AuthorizationPolicy (default: the namespace).")


class Network(Model):
    """Who may call the agent and whom it may call (beyond the store, its peers and DNS)."""

    dns: PodSource = Field(default=PodSource(namespace="kube-system", pod_labels={"k8s-app": "kube-dns"}),
                           description="The cluster DNS pods.")
    clients: list[PodSource] = Field(default=[], description="Callers inside the cluster besides the mesh gateway.")
    backends: list[Backend] = Field(default=[], description="What the handlers call (LLM APIs, tools).")


class ConnectionPool(Model):
    """Istio circuit breaking: per client proxy, towards the agent."""

    max_connections: int = Field(default=4096, ge=1, description="TCP connections.")
    max_pending_requests: int = Field(default=1024, ge=1, description="Requests queued for a connection.")
    max_requests: int = Field(default=4096, ge=1, description="Requests in flight (HTTP/2).")
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60, description="Opening a connection.")


class OutlierDetection(Model):
    """Istio ejects a pod that keeps failing (a draining or overloaded one answers 503)."""

    consecutive_5xx: int = Field(default=5, ge=1, description="Errors in a row before ejection.")
    interval_seconds: int = Field(default=10, ge=1, description="How often pods are assessed.")
    base_ejection_seconds: int = Field(default=30, ge=1, description="How long an ejection lasts at first.")
    max_ejection_percent: int = Field(default=50, ge=0, le=100, description="Never more of the pods ejected.")


class IstioGateway(Model):
    """The ingress gateway that brings outside traffic in."""

    hosts: list[Hostname] = Field(min_length=1, description="Host names served.")
    tls_secret: DnsSubdomain | None = Field(default=None,
                                            description="TLS certificate Secret in the gateway's namespace (HTTPS on "
                                                        "443, HTTP redirects); none: HTTP on 80.")
    namespace: DnsLabel = Field(default="istio-system", description="The gateway pods' namespace.")
    pod_labels: Labels = Field(default={"istio": "ingressgateway"},
                               description="The gateway pods' labels (the selector).")
    service_account: DnsSubdomain = Field(default="istio-ingressgateway-service-account",
                                          description="The gateway pods' ServiceAccount (its mTLS identity).")


class Istio(Model):
    """Istio sidecars: Gateway, VirtualService, DestinationRule, STRICT mTLS, AuthorizationPolicy."""

    kind: Literal["istio"]
    gateway: IstioGateway | None = Field(default=None, description="Outside traffic; none: inside the mesh only.")
    trust_domain: DnsSubdomain = Field(default="cluster.local", description="The mesh's trust domain (SPIFFE ids).")
    retry_attempts: int = Field(default=2, ge=0, le=10,
                                description="Retries only when the request never reached the agent "
                                            "(connect-failure, refused-stream, reset-before-request).")
    connection_pool: ConnectionPool = Field(default=ConnectionPool(), description="Circuit-breaking limits.")
    outlier_detection: OutlierDetection = Field(default=OutlierDetection(), description="Ejection of failing pods.")
    control_plane: PodSource = Field(default=PodSource(namespace="istio-system", pod_labels={"app": "istiod"}),
                                     description="istiod, which the sidecars reach on 15012.")


class ParentGateway(Model):
    """A Gateway API Gateway (created by you or your platform) that routes outside traffic in."""

    name: DnsSubdomain = Field(description="The Gateway's name.")
    namespace: DnsLabel = Field(description="Its namespace.")
    section_name: DnsLabel | None = Field(default=None, description="One listener of it.")
    hosts: list[Hostname] = Field(min_length=1, description="Host names routed.")
    pods: PodSource = Field(description="The gateway's pods, for the NetworkPolicy.")


class GatewayApi(Model):
    """Gateway API HTTPRoutes (Linkerd and other meshes that implement GAMMA)."""

    kind: Literal["gateway-api"]
    gateway: ParentGateway | None = Field(default=None, description="Outside traffic; none: inside the mesh only.")
    linkerd: bool = Field(default=True, description="Inject Linkerd's proxy and set its drain and startup annotations.")
    control_plane: PodSource | None = Field(default=PodSource(namespace="linkerd"),
                                            description="The mesh's control plane, for the NetworkPolicy.")


class NoMesh(Model):
    """No mesh: plain Services; forwarding between versions still keeps conversations pinned."""

    kind: Literal["none"]


class AutoscalingBase(Model):
    """The targets and pace shared by KEDA and the HPA."""

    in_flight_per_pod: int = Field(default=150, ge=1,
                                   description="Target turns in flight per pod (statefleet_turns_in_flight).")
    backlog_per_pod: int = Field(default=200, ge=1,
                                 description="Target pending conversations per pod (statefleet_inbox_backlog, this "
                                             "version's share).")
    cpu_fallback_utilization: int = Field(default=90, ge=10, le=100,
                                          description="CPU percent of requests that also scales up, when the metrics "
                                                      "are missing.")
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600,
                                                  description="Scale down only to the highest recommendation in this "
                                                              "window.")
    scale_down_percent: int = Field(default=10, ge=1, le=100,
                                    description="At most this share of pods (at least one) removed per period (a "
                                                "minute, or the grace period if longer).")


class Keda(AutoscalingBase):
    """KEDA ScaledObjects with prometheus triggers (and a CPU trigger as the fallback)."""

    kind: Literal["keda"]
    prometheus_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = Field(
        description="Prometheus as KEDA reaches it (http://prometheus-operated.monitoring.svc:9090).")
    polling_interval_seconds: int = Field(default=15, ge=1, le=600, description="How often KEDA queries.")


class Hpa(AutoscalingBase):
    """autoscaling/v2 HorizontalPodAutoscalers on the Prometheus adapter's metrics (its rules are rendered)."""

    kind: Literal["hpa"]


class Dashboard(Model):
    """Where the Grafana dashboard's ConfigMap goes, and the label Grafana's sidecar looks for."""

    namespace: DnsLabel | None = Field(default=None,
                                       description="Where Grafana's sidecar looks (default: the agent's).")
    labels: Labels = Field(default={"grafana_dashboard": "1"}, description="The label Grafana's sidecar selects.")


class Monitoring(Model):
    """Prometheus Operator objects: PodMonitor, PrometheusRule; the Grafana dashboard as a ConfigMap."""

    prometheus: PodSource = Field(
        default=PodSource(namespace="monitoring", pod_labels={"app.kubernetes.io/name": "prometheus"}),
        description="The Prometheus pods that scrape the agent (NetworkPolicy).")
    labels: Labels = Field(default={}, description="Labels your Prometheus selects monitors and rules by "
                                                   "(e.g. release: kube-prometheus-stack).")
    scrape_interval_seconds: int = Field(default=15, ge=1, le=300, description="How often each pod is scraped.")
    dashboard: Dashboard = Field(default=Dashboard(), description="The Grafana dashboard ConfigMap.")


class Routing(Model):
    """How a request says which version its conversation is pinned to (shared with the canary work)."""

    version_header: HttpToken = Field(default="X-Statefleet-Version", description="Header clients echo.")
    version_cookie: HttpToken = Field(default="statefleet-version", description="Cookie browsers send back.")


class FleetConfig(Model):
    """The whole deployment of one agent: its versions, pods, store, network, mesh, autoscaling, monitoring."""

    agent: Agent
    versions: list[Version] = Field(min_length=1, max_length=16)
    server: Server = Server()
    store: Store
    network: Network = Network()
    mesh: Annotated[Istio | GatewayApi | NoMesh, Field(discriminator="kind")] = NoMesh(kind="none")
    autoscaling: Annotated[Keda | Hpa, Field(discriminator="kind")]
    monitoring: Monitoring = Monitoring()
    routing: Routing = Routing()

    @field_validator("versions")
    @classmethod
    def _versions_consistent(cls, versions: list[Version]) -> list[Version]:
        seen: dict[str, int] = {}
        for index, version in enumerate(versions):
            if version.name in seen:
                raise ValueError(f"version {version.name!r} appears twice (versions[{seen[version.name]}] and "
                                 f"versions[{index}])")
            seen[version.name] = index
        total = sum(version.weight for version in versions)
        if total != 100:
            parts = " + ".join(f"{version.name} {version.weight}" for version in versions)
            raise ValueError(f"weights add up to {total} ({parts}); they must add up to 100")
        return versions

    @model_validator(mode="after")
    def _cross_checks(self) -> FleetConfig:
        for index, version in enumerate(self.versions):
            name = f"{self.agent.name}-{version.name}"
            if len(name) > 63:
                raise ValueError(f"versions[{index}].name: the version's Service {name!r} would be longer than 63 "
                                 f"characters; shorten agent.name or the version")
        per_pod = self.server.max_in_flight * self.server.workers
        if self.autoscaling.in_flight_per_pod > per_pod:
            raise ValueError(f"autoscaling.in_flight_per_pod: {self.autoscaling.in_flight_per_pod} is above what a "
                             f"pod admits (server.max_in_flight {self.server.max_in_flight} x server.workers "
                             f"{self.server.workers} = {per_pod}): pods would refuse work before the autoscaler "
                             f"saw them full")
        if self.autoscaling.backlog_per_pod < self.autoscaling.in_flight_per_pod:
            raise ValueError(f"autoscaling.backlog_per_pod: {self.autoscaling.backlog_per_pod} is below "
                             f"in_flight_per_pod ({self.autoscaling.in_flight_per_pod}); the backlog counts running "
                             f"conversations too, so it would always ask for more pods than the in-flight target")
        return self

    @property
    def grace_seconds(self) -> int:
        """terminationGracePeriodSeconds of every agent pod."""
        return self.server.grace_seconds
