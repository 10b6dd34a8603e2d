"""Which resources to mirror: parsed from ``plural.group[?labelSelector=..&fieldSelector=..]``."""

from urllib.parse import parse_qs

import msgspec

from common.errors import ConfigError

DEFAULT_RESOURCES: tuple[str, ...] = (
    "jobs.batch.volcano.sh",
    "podgroups.scheduling.volcano.sh",
    "queues.scheduling.volcano.sh",
    "pods?labelSelector=volcano.sh/job-name",
)


class ResourceSpec(msgspec.Struct, frozen=True):
    """What the user asked for; the version is found by discovery when empty."""

    plural: str
    group: str = ""
    version: str = ""
    label_selector: str = ""
    field_selector: str = ""

    def selector_params(self) -> dict[str, str]:
        """The LIST/WATCH query parameters of the selectors that are set."""
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    @property
    def name(self) -> str:
        """``plural.group`` (``pods`` for the core group), as kubectl writes it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


class Resource(msgspec.Struct, frozen=True):
    """A resource resolved against the API server's discovery."""

    spec: ResourceSpec
    version: str
    kind: str  # as served, e.g. "PodGroup"
    namespaced: bool

    @property
    def key_kind(self) -> str:
        """Kind in key names: lowercase."""
        return self.kind.lower()

    def path(self, namespace: str = "") -> str:
        """Collection URL path, in one namespace or across all."""
        base = (
            f"/apis/{self.spec.group}/{self.version}" if self.spec.group else f"/api/{self.version}"
        )
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.spec.plural}"
        return f"{base}/{self.spec.plural}"


def parse(text: str) -> ResourceSpec:
    """Parse ``plural[.version].group[?labelSelector=..&fieldSelector=..]``; ``v1/pods`` too."""
    raw, _, query = text.strip().partition("?")
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"labelSelector", "fieldSelector"}
    if not raw or unknown:
        raise ConfigError(
            f"--resource {text!r}: expected plural.group[?labelSelector=...&fieldSelector=...]"
        )
    version = ""
    if "/" in raw:  # core group written as v1/pods
        version, _, raw = raw.partition("/")
    plural, _, group = raw.partition(".")
    if group:
        head, _, rest = group.partition(".")
        # kubectl's plural.version.group form: a version looks like v1, v1beta2, v1alpha1.
        if rest and head.startswith("v") and head[1:2].isdigit():
            version, group = head, rest
    return ResourceSpec(
        plural=plural,
        group=group,
        version=version,
        label_selector=params.get("labelSelector", [""])[0],
        field_selector=params.get("fieldSelector", [""])[0],
    )
