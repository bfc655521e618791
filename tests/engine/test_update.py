"""Update, rollback, refusals, tar loading and pull failures on the real private engine."""

from __future__ import annotations

import threading
import time

import pytest

from helio_gui.engine import EngineError, Progress, UpdateReport

from .conftest import http_json, wait_for

pytestmark = pytest.mark.engine


def _serving_version(profile) -> str:
    return http_json(profile.base_url + "/api/status")["runtime_version"]


@pytest.fixture
def running_v1(engine, profile):
    engine.start(profile)
    wait_for(lambda: engine.probe_runtime(profile)[0], 15, what="v1 serving")
    yield profile
    engine.remove(profile)
    prev = engine._container(profile.previous_container_name)
    if prev:
        engine.client.api.remove_container(prev["Id"], force=True)


def _assert_untouched(engine, profile, before) -> None:
    after = engine._container(profile.runtime_container_name)
    assert after["Id"] == before["Id"]
    assert after["State"]["Running"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert engine._container(profile.previous_container_name) is None
    assert _serving_version(profile) == "1.0.0"


def test_update_v1_to_v2_then_manual_rollback(engine, running_v1, fake_images, docker_client):
    profile = running_v1
    stages: list[Progress] = []
    report = engine.update(profile, fake_images["v2"], progress=stages.append)
    assert report.success and report.outcome == "updated", report.summary()
    assert report.profile.image == fake_images["v2"]
    assert _serving_version(profile) == "2.0.0"
    status = engine.runtime_status(report.profile)
    assert status.version == "2.0.0" and status.health == "healthy" and status.mismatches == ()
    assert engine._container(profile.previous_container_name) is None
    # Progress: every stage reported, not cancellable once committed, ends at 1.0.
    names = [p.stage for p in stages]
    for stage in ("verify", "validate", "prepare", "stop", "start", "commit", "done"):
        assert stage in names, names
    assert stages[-1].fraction == 1.0 and not stages[-1].cancellable
    # The old image is kept and marked as the rollback target; prune never removes it.
    v1_id, v2_id = (docker_client.images.get(fake_images[k]).id for k in ("v1", "v2"))
    versions = {v.image_id: v for v in engine.list_versions(report.profile)}
    assert versions[v2_id].in_use and versions[v1_id].rollback and versions[v2_id].version == "2.0.0"
    broken_id = docker_client.images.get(fake_images["broken"]).id
    removed = engine.prune(report.profile)
    assert v1_id not in removed and v2_id not in removed
    assert broken_id in removed  # neither running nor the rollback target
    assert docker_client.images.get(fake_images["v1"]) and docker_client.images.get(fake_images["v2"])

    back = engine.rollback(report.profile)
    assert back.success, back.summary()
    assert _serving_version(profile) == "1.0.0"
    assert back.profile.image == fake_images["v1"]


def test_broken_update_rolls_back_and_old_version_serves(engine, running_v1, fake_images):
    profile = running_v1
    old_id = engine._container(profile.runtime_container_name)["Id"]
    t = time.monotonic()
    report = engine.update(profile, fake_images["broken"])
    assert not report.success and report.rolled_back and report.outcome == "rolled_back", report.summary()
    assert time.monotonic() - t < 30
    gate = next(s for s in report.steps if s.name == "health gate")
    assert not gate.ok and ("unhealthy" in gate.message or "not healthy" in gate.message)
    assert all(s.ok for s in report.steps if s.name in ("remove new container", "restore previous", "previous healthy"))
    current = engine._container(profile.runtime_container_name)
    assert current["Id"] == old_id and current["State"]["Running"]
    assert _serving_version(profile) == "1.0.0"
    assert engine._container(profile.previous_container_name) is None
    assert engine.journal(profile).read() is None


@pytest.mark.parametrize("which, why", [("missing", "not on this device"), ("unlabelled", "not a HelioVision"),
                                        ("api2", "runtime API 2.0")])
def test_bad_image_refused_before_anything_stops(engine, running_v1, fake_images, which, why):
    profile = running_v1
    before = engine._container(profile.runtime_container_name)
    ref = "helio-test/fake-runtime:does-not-exist" if which == "missing" else fake_images[which]
    report = engine.update(profile, ref)
    assert report.outcome == "refused" and not report.success and not report.rolled_back
    assert why in report.steps[-1].message, report.summary()
    _assert_untouched(engine, profile, before)


def test_update_from_tar_file(engine, running_v1, fake_images, docker_client, tmp_path):
    profile = running_v1
    archive = tmp_path / "runtime-2.0.0.tar"
    with open(archive, "wb") as fh:
        for chunk in docker_client.images.get(fake_images["v2"]).save(named=True):
            fh.write(chunk)
    # Simulate a device that has never seen v2: drop the tag, keep the layers of v1.
    docker_client.api.tag(fake_images["v2"], "helio-test/fake-runtime", "2.0.0-keep")
    docker_client.images.remove(fake_images["v2"])
    fractions: list[float] = []
    try:
        refs = engine.load_image(archive, progress=lambda p: fractions.append(p.fraction))
        assert refs == [fake_images["v2"]]
        assert fractions[-1] == 1.0 and fractions == sorted(f for f in fractions if f is not None)
        report = engine.update(profile, refs[0])
        assert report.success, report.summary()
        assert _serving_version(profile) == "2.0.0"
    finally:
        docker_client.api.tag("helio-test/fake-runtime:2.0.0-keep", "helio-test/fake-runtime", "2.0.0")
        docker_client.images.remove("helio-test/fake-runtime:2.0.0-keep")


def test_corrupt_or_wrong_tar_refused_and_nothing_stops(engine, running_v1, fake_images, docker_client, tmp_path):
    profile = running_v1
    before = engine._container(profile.runtime_container_name)
    good = tmp_path / "good.tar"
    with open(good, "wb") as fh:
        for chunk in docker_client.images.get(fake_images["v1"]).save(named=True):
            fh.write(chunk)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file\n" * 100)
    plain = tmp_path / "plain.tar"
    import tarfile

    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="notes.py")
    for bad, words in ((truncated, ("not a readable", "failed", "truncated", "corrupt")),
                       (garbage, ("not a readable",)), (plain, ("no manifest.json",)),
                       (tmp_path / "absent.tar", ("does not exist",))):
        with pytest.raises(EngineError) as err:
            engine.load_image(bad)
        assert any(w in str(err.value) for w in words), (bad.name, str(err.value))
        assert "nothing was changed" in str(err.value) or "Choose" in str(err.value)
    _assert_untouched(engine, profile, before)


def test_pull_failure_inside_or_outside_the_stream_is_an_error(engine):
    # A registry address on loopback with nothing listening: the real engine reports the failure.
    t = time.monotonic()
    with pytest.raises(EngineError) as err:
        engine.pull_image("127.0.0.1:9/helio/runtime:1.0")
    assert "Pulling 127.0.0.1:9/helio/runtime:1.0 failed" in str(err.value) or "refused" in str(err.value)
    assert time.monotonic() - t < 60


def test_cancel_during_health_gate_rolls_back(engine, running_v1, fake_images):
    profile = running_v1
    slow = profile.model_copy(update={"health_timeout_s": 60})
    cancel = threading.Event()

    def progress(p: Progress):
        if p.stage == "health":
            cancel.set()

    report = engine.update(slow, fake_images["broken"], progress=progress, cancel=cancel)
    assert report.outcome == "cancelled" and report.rolled_back, report.summary()
    assert _serving_version(profile) == "1.0.0"


def test_leftover_previous_container_is_handled(engine, running_v1, fake_images, docker_client):
    profile = running_v1
    # A crashed updater left the old runtime renamed and stopped, and no new one: the line is down.
    old = engine._container(profile.runtime_container_name)
    docker_client.api.rename(old["Id"], profile.previous_container_name)
    docker_client.api.stop(old["Id"], timeout=2)
    report = engine.recover(profile)
    assert isinstance(report, UpdateReport) and report.outcome == "rolled_back", report.summary()
    assert engine._container(profile.runtime_container_name)["Id"] == old["Id"]
    wait_for(lambda: engine.probe_runtime(profile)[0], 10, what="restored runtime serving")
    assert engine.recover(profile) is None  # nothing left to do

    # And when the new one is up and healthy, the leftover is simply removed (update finished).
    docker_client.api.rename(old["Id"], profile.previous_container_name)
    docker_client.api.stop(old["Id"], timeout=2)
    v2 = profile.model_copy(update={"image": fake_images["v2"]})
    docker_client.containers.create(**v2.create_kwargs()).start()
    report = engine.recover(v2)
    assert report.outcome == "finished", report.summary()
    assert engine._container(profile.previous_container_name) is None
    assert _serving_version(profile) == "2.0.0"


def test_first_install_by_update_and_refused_missing_device(engine, profile, fake_images):
    bad = profile.model_copy(update={"devices": ["/dev/video96"]})
    report = engine.update(bad, fake_images["v1"])
    assert report.outcome == "refused" and "/dev/video96" in report.steps[-1].message
    assert engine.runtime_status(bad).state == "missing"
    try:
        report = engine.update(profile, fake_images["v1"])
        assert report.success, report.summary()
        assert _serving_version(profile) == "1.0.0"
        assert engine.list_versions(report.profile)  # no rollback target yet, but listed
    finally:
        engine.remove(profile)
