import pytest

from common.errors import ConfigError
from common.resources import DEFAULT_RESOURCES, parse


def test_plural_group() -> None:
    spec = parse("jobs.batch.volcano.sh")
    assert (spec.plural, spec.group, spec.version) == ("jobs", "batch.volcano.sh", "")


def test_kubectl_plural_version_group() -> None:
    spec = parse("podgroups.v1beta1.scheduling.volcano.sh")
    assert (spec.plural, spec.version, spec.group) == (
        "podgroups",
        "v1beta1",
        "scheduling.volcano.sh",
    )


def test_core_with_selectors() -> None:
    spec = parse("pods?labelSelector=volcano.sh/job-name&fieldSelector=status.phase!=Failed")
    assert (spec.plural, spec.group) == ("pods", "")
    assert spec.label_selector == "volcano.sh/job-name"
    assert spec.field_selector == "status.phase!=Failed"
    assert parse("v1/pods").version == "v1"


def test_defaults_are_volcano_and_its_pods() -> None:
    names = [parse(r).name for r in DEFAULT_RESOURCES]
    assert names == [
        "jobs.batch.volcano.sh",
        "podgroups.scheduling.volcano.sh",
        "queues.scheduling.volcano.sh",
        "pods",
    ]


@pytest.mark.parametrize("bad", ["", "pods?selector=x"])
def test_bad_resource_names_the_option(bad: str) -> None:
    with pytest.raises(ConfigError, match="--resource"):
        parse(bad)
