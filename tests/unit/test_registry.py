"""The local registry under concurrent writers, and the version names it accepts."""

from __future__ import annotations

import multiprocessing

import pytest

from mlops_local.registry import LocalRegistry, RegistryError

PROCESSES, EACH = 8, 25
GROUP = "race-models"


def _register(path: str, start, count: int) -> list[int]:
    registry = LocalRegistry(path)
    start.wait()  # every process is connected before any registers
    return [int(registry.create_model_package(ModelPackageGroupName=GROUP)["ModelPackageArn"]
                .rsplit("/", 1)[1]) for _ in range(count)]


def test_concurrent_registrations_all_succeed_with_gap_free_versions(tmp_path):
    path = str(tmp_path / "registry.db")
    LocalRegistry(path)
    context = multiprocessing.get_context("spawn")  # no inherited connections or locks
    with context.Manager() as manager:
        start = manager.Event()
        pool = context.Pool(PROCESSES)
        waiting = [pool.apply_async(_register, (path, start, EACH)) for _ in range(PROCESSES)]
        start.set()
        versions = [v for result in waiting for v in result.get(timeout=300)]
        # Not Pool.terminate: a worker still starting when its SIGTERM came could miss it
        # (coverage's handler for it was being set up) and wait for a task forever.
        pool.close()
        pool.join()

    assert sorted(versions) == list(range(1, PROCESSES * EACH + 1))
    listed = LocalRegistry(path).list_model_packages(
        ModelPackageGroupName=GROUP, MaxResults=1000)["ModelPackageSummaryList"]
    assert [s["ModelPackageVersion"] for s in listed] == list(range(1, PROCESSES * EACH + 1))


@pytest.mark.parametrize("version", ["١", "²", "1.0", "+1", " 1", "-1", ""])
def test_only_ascii_decimal_versions_name_a_package(tmp_path, version):
    registry = LocalRegistry(tmp_path / "registry.db")
    registry.create_model_package(ModelPackageGroupName=GROUP)
    with pytest.raises(RegistryError, match="neither an ARN nor 'group/version'"):
        registry.describe_model_package(f"{GROUP}/{version}")
