"""Trying to break engine control the way a factory engineer would: two updaters at once, an
image whose container cannot start, a profile edited to a missing image, an old journal.
Every test runs on the real private engine (busybox runtimes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import os
from pathlib import Path

import pytest

from helio_gui.engine import EngineError, Progress

from .conftest import http_json, wait_for

pytestmark = pytest.mark.engine


def _serving_version(profile) -> str:
    return http_json(profile.base_url + "/api/status")["runtime_version"]


@pytest.fixture
def running_v1(engine, profile, docker_client):
    engine.start(profile)
    wait_for(lambda: engine.probe_runtime(profile)[0], 20, what="v1 serving")
    yield profile
    for info in engine.containers(profile):
        docker_client.api.remove_container(info["Id"], force=True)


def _derived_image(docker_client, base_tag: str, tag: str, extra: str) -> str:
    """A runtime image built FROM one of ours with extra Dockerfile lines (cached by tag)."""
    try:
        docker_client.images.get(tag)
        return tag
    except Exception:
        pass
    dockerfile = f"FROM {base_tag}\n{extra}\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none")
    return tag


def _only_runtime_is(engine, profile, version: str) -> None:
    names = sorted(c["Name"].lstrip("/") for c in engine.containers(profile))
    assert names == [profile.runtime_container_name], names
    assert engine.runtime_status(profile).state == "running"
    wait_for(lambda: engine.probe_runtime(profile)[0], 20, what="runtime serving")
    assert _serving_version(profile) == version
    assert engine.journal(profile).read() is None


def test_new_container_the_engine_cannot_start_is_rolled_back(engine, running_v1, fake_images, docker_client):
    # The engine refuses to start it (its USER does not exist): an error *during* the update, after
    # the old runtime stopped. It used to escape as an exception, leaving only a stopped
    # `-previous` container and a never-started new one: the line had no runtime.
    profile = running_v1
    bad = _derived_image(docker_client, fake_images["v2"], "helio-test/fake-runtime:bad-user", "USER nosuchuser")
    report = engine.update(profile, bad)
    assert report.outcome == "rolled_back" and report.rolled_back and not report.success, report.summary()
    failed = [s for s in report.steps if not s.ok]
    assert failed and "nosuchuser" in failed[0].message, report.summary()
    assert report.profile.image == fake_images["v1"]
    _only_runtime_is(engine, profile, "1.0.0")


def test_start_with_profile_changed_to_a_missing_image_keeps_the_runtime(engine, running_v1):
    # start() recreates a container that no longer matches the profile; it used to remove the
    # running one first and only then find that the new image is not on the device.
    profile = running_v1
    before = engine._container(profile.runtime_container_name)
    edited = profile.model_copy(update={"image": "helio-test/fake-runtime:not-on-this-device"})
    with pytest.raises(EngineError, match="not on this device") as err:
        engine.start(edited)
    assert "nothing was stopped" in str(err.value)
    after = engine._container(profile.runtime_container_name)
    assert after is not None and after["Id"] == before["Id"] and after["State"]["Running"]
    assert _serving_version(profile) == "1.0.0"


# A second updater in its own process (a second GUI on the same device).
_SECOND = r"""
import json, sys
from helio_gui.engine import connect, RuntimeProfile, EngineError
base_url, state_dir, profile_path, image = sys.argv[1:5]
engine = connect(base_url, state_dir=state_dir)
profile = RuntimeProfile.load(profile_path)
out = {}
try:
    out["update"] = engine.update(profile, image).summary()
except EngineError as exc:
    out["update_error"] = str(exc)
for op in ("recover", "stop", "rollback"):
    try:
        getattr(engine, op)(profile)
        out[op] = "ran"
    except EngineError as exc:
        out[op] = str(exc)
print(json.dumps(out))
"""


def test_second_updater_is_refused_while_an_update_runs(engine, running_v1, fake_images, docker_engine, tmp_path):
    # Without a lock the second process saw the first one's journal, took it for a crashed
    # update and rolled it back (or both fought over the containers).
    profile = running_v1
    profile_path = tmp_path / "profile.json"
    profile.save(profile_path)
    in_gate, release = threading.Event(), threading.Event()
    result: dict = {}

    def progress(p: Progress) -> None:
        if p.stage == "health" and not in_gate.is_set():
            in_gate.set()
            release.wait(60)

    def first() -> None:
        try:
            result["report"] = engine.update(profile, fake_images["v2"], progress=progress)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            result["error"] = exc

    worker = threading.Thread(target=first, name="first-updater")
    worker.start()
    try:
        assert in_gate.wait(60), "the first update never reached its health gate"
        proc = subprocess.run(
            [sys.executable, "-c", _SECOND, docker_engine.base_url, str(engine.state_dir), str(profile_path),
             fake_images["broken"]],
            capture_output=True, text=True, timeout=120, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    finally:
        release.set()
        worker.join(timeout=120)
    assert not worker.is_alive()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second = json.loads(proc.stdout.strip().splitlines()[-1])
    text = second.get("update", "") + second.get("update_error", "")
    assert "refused" in text and "in progress" in text, second
    for op in ("recover", "stop", "rollback"):
        assert "in progress" in second[op], (op, second)
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report.success and report.outcome == "updated", report.summary()
    _only_runtime_is(engine, report.profile, "2.0.0")


@pytest.mark.parametrize("damage", ["old-version", "not-an-object", "half-written"])
def test_journal_from_an_older_version_or_damaged_never_blocks_recovery(engine, running_v1, fake_images,
                                                                         docker_client, damage):
    # A crashed update (old renamed and stopped, no new one) plus a journal this version cannot
    # read: recover() used to raise a raw ValidationError/KeyError, and so did every later update.
    profile = running_v1
    old = engine._container(profile.runtime_container_name)
    docker_client.api.rename(old["Id"], profile.previous_container_name)
    docker_client.api.stop(old["Id"], timeout=2)
    path = engine.journal(profile).path
    path.parent.mkdir(parents=True, exist_ok=True)
    if damage == "old-version":
        # Written by an older console: other profile fields, no new_profile, another phase name.
        path.write_text(json.dumps({"phase": "swapping", "image_ref": fake_images["v2"], "old_id": old["Id"],
                                    "profile": {"name": profile.name, "image": profile.image, "camera": "/dev/video0"}}))
    elif damage == "not-an-object":
        path.write_text("[1, 2, 3]")
    else:
        path.write_text('{"phase": "stopped", "old_id": "')
    report = engine.recover(profile)
    assert report is not None and report.outcome == "rolled_back", report.summary()
    _only_runtime_is(engine, profile, "1.0.0")
    kept = [p for p in path.parent.iterdir() if p.name.startswith(path.name.split(".")[0]) and p != path
            and "lock" not in p.name]
    assert kept, "the unreadable journal should be kept aside for a person to look at"
    # And updates work again.
    assert engine.update(profile, fake_images["v2"]).success


def _context_config(tmp_path, name: str | None, host: str | None) -> str:
    """A DOCKER_CONFIG folder whose current context is `name` (defined only if `host` is given)."""
    import hashlib

    config = tmp_path / "dockercfg"
    config.mkdir()
    if host is not None:
        meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
        meta.mkdir(parents=True)
        (meta / "meta.json").write_text(json.dumps(
            {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host}}}))
    (config / "config.json").write_text(json.dumps({"currentContext": name}))
    return str(config)


@pytest.mark.parametrize("env, words", [
    ({"DOCKER_HOST": "garbage"}, ("DOCKER_HOST", "garbage", "not a valid")),
    ({"DOCKER_HOST": "tcp://"}, ("DOCKER_HOST", "not a valid")),
    ({"DOCKER_HOST": "http://[::1"}, ("DOCKER_HOST", "not a valid")),
    ({"DOCKER_HOST": "tcp://127.0.0.1:9", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nonexistent/certs"},
     ("TLS", "DOCKER_CERT_PATH")),
    ({"DOCKER_HOST": "tcp://127.0.0.1:9"}, ("tcp://127.0.0.1:9", "DOCKER_HOST")),
    ("context-missing", ("context", "factory-line", "does not exist")),
    ("context-nowhere", ("context", "line2", "/nowhere/docker.sock")),
])
def test_bad_engine_address_says_where_it_came_from_and_what_to_do(tmp_path, monkeypatch, env, words):
    # Before: a raw TLSParameterError; 'Docker engine error: Invalid bind address format' with no
    # hint; and a current context that does not exist silently fell back to the local socket.
    from helio_gui.engine import connect

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    if env == "context-missing":
        env = {"DOCKER_CONFIG": _context_config(tmp_path, "factory-line", None)}
    elif env == "context-nowhere":
        env = {"DOCKER_CONFIG": _context_config(tmp_path, "line2", "unix:///nowhere/docker.sock")}
    else:
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no context of the user's may interfere
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(EngineError) as err:
        connect(state_dir=tmp_path / "state", timeout=10)
    text = str(err.value)
    for word in words:
        assert word in text, text
    assert err.value.hint, text


def test_port_taken_by_another_program_is_refused_before_anything_starts(engine, profile, fake_images):
    # Before: start() answered 'restarting' (a crash loop on "Address already in use") and a first
    # install by update ran the whole gate before rolling back. Now both say what holds what.
    import socket

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", profile.port))
    holder.listen()
    try:
        with pytest.raises(EngineError, match=f"{profile.port}.*in use") as err:
            engine.start(profile)
        assert "another program" in str(err.value) and "port" in err.value.hint
        assert engine.runtime_status(profile).state == "missing"
        report = engine.update(profile, fake_images["v1"])
        assert report.outcome == "refused" and "in use" in report.steps[-1].message, report.summary()
        assert engine.runtime_status(profile).state == "missing"
    finally:
        holder.close()
        engine.remove(profile)


def test_update_to_the_image_already_running_changes_nothing(engine, running_v1, fake_images):
    # Before: the same image was stopped and recreated (a feed gap for nothing).
    profile = running_v1
    before = engine._container(profile.runtime_container_name)
    report = engine.update(profile, fake_images["v1"])
    assert report.success and report.outcome == "unchanged", report.summary()
    after = engine._container(profile.runtime_container_name)
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    # A changed profile with the same image is a real change: recreated (and gated).
    changed = profile.model_copy(update={"env": {"HELIO_LOG_LEVEL": "debug"}})
    report = engine.update(changed, fake_images["v1"])
    assert report.outcome == "updated", report.summary()
    assert engine._container(profile.runtime_container_name)["Id"] != before["Id"]
    _only_runtime_is(engine, profile, "1.0.0")


def _save(docker_client, refs: list[str], path) -> None:
    """`docker save REF...` through the real engine (several images in one archive)."""
    api = docker_client.api
    response = api._get(api._url("/images/get"), params={"names": refs}, stream=True)
    api._raise_for_status(response)
    with open(path, "wb") as fh:
        for chunk in response.iter_content(1 << 20):
            fh.write(chunk)


def test_tar_with_two_images_lists_the_runtime_first(engine, fake_images, docker_client, tmp_path):
    # The console updates to the first ref load_image returns: with a helper image saved first
    # in the archive, the update was refused although the runtime image was in it.
    archive = tmp_path / "usb-stick.tar"
    _save(docker_client, [fake_images["unlabelled"], fake_images["v1"], fake_images["v2"]], archive)
    refs = engine.load_image(archive)
    assert set(refs) == {fake_images["unlabelled"], fake_images["v1"], fake_images["v2"]}
    assert refs[0] == fake_images["v2"], refs  # the newest runtime image first, helpers last
    assert refs[-1] == fake_images["unlabelled"], refs


def _with_architecture(docker_client, src: str, tag: str, arch: str, path) -> None:
    """A real image archive whose config says `arch` (what `docker buildx --platform` makes):
    the config is edited and renamed to its new digest, the layers are unchanged."""
    import hashlib
    import tarfile

    _save(docker_client, [src], path.with_suffix(".src"))
    with tarfile.open(path.with_suffix(".src")) as original, tarfile.open(path, "w") as out:
        manifest = json.loads(original.extractfile("manifest.json").read())
        config_name = manifest[0]["Config"]
        config = json.loads(original.extractfile(config_name).read())
        config["architecture"] = arch
        config_bytes = json.dumps(config).encode()
        manifest[0]["Config"] = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest[0]["RepoTags"] = [tag]
        for member in original.getmembers():
            if member.name not in (config_name, "manifest.json", "repositories"):
                out.addfile(member, original.extractfile(member) if member.isfile() else None)
        for name, data in ((manifest[0]["Config"], config_bytes), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def test_image_for_another_architecture_is_refused_before_anything_stops(engine, running_v1, fake_images,
                                                                          docker_client, tmp_path):
    profile = running_v1
    before = engine._container(profile.runtime_container_name)
    archive = tmp_path / "runtime-2.0.0-arm64.tar"
    _with_architecture(docker_client, fake_images["v2"], "helio-test/fake-runtime:2.0.0-arm64", "arm64", archive)
    try:
        refs = engine.load_image(archive)
        assert docker_client.api.inspect_image(refs[0])["Architecture"] == "arm64"
        report = engine.update(profile, refs[0])
        assert report.outcome == "refused", report.summary()
        assert "built for arm64" in report.steps[-1].message and "--platform linux/amd64" in report.steps[-1].message
        after = engine._container(profile.runtime_container_name)
        assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    finally:
        docker_client.images.remove("helio-test/fake-runtime:2.0.0-arm64", force=True)


def test_cancel_after_the_point_of_no_return_finishes_the_update(engine, running_v1, fake_images):
    profile = running_v1
    cancel = threading.Event()
    seen: list[Progress] = []

    def progress(p: Progress) -> None:
        seen.append(p)
        if p.stage == "commit":
            cancel.set()

    report = engine.update(profile, fake_images["v2"], progress=progress, cancel=cancel)
    assert report.outcome == "updated" and report.success, report.summary()
    assert not next(p for p in seen if p.stage == "commit").cancellable
    assert any("too late" in s.message for s in report.steps), report.summary()
    _only_runtime_is(engine, profile, "2.0.0")


def test_engine_restarted_mid_update_then_recovered(tmp_path, session_labels, port):
    # A second private engine of our own, stopped during the health gate and started again
    # (a dockerd upgrade or crash on the device). The update must fail clearly, keep its
    # journal, and the next recover() must put a serving runtime back.
    from helio_gui.engine import HealthCheckConfig, RuntimeProfile, connect
    from tests.support.private_engine import PrivateEngine, busybox_image

    from .conftest import build_fake_runtime

    root = Path(os.environ.get("HELIO_TEST_ENGINE_DIR", "/var/tmp/helio-test-engine") + "-restarter")
    second = PrivateEngine(root=root)
    second.start()
    if second.external:
        pytest.skip("needs its own private engine (HELIO_TEST_DOCKER_HOST names a shared one)")
    eng = None
    try:
        client = second.client()
        for container in client.containers.list(all=True):  # left by an earlier, killed run
            container.remove(force=True)
        base = busybox_image(client)
        v1 = build_fake_runtime(client, base, "helio-test/fake-runtime:1.0.0", "1.0.0")
        broken = build_fake_runtime(client, base, "helio-test/fake-runtime:3.0.0-broken", "3.0.0", healthy=False)
        client.close()
        eng = connect(second.base_url, state_dir=tmp_path)
        profile = RuntimeProfile(name="restarter", image=v1, port=port, labels=dict(session_labels),
                                 healthcheck=HealthCheckConfig(interval_s=0.5, timeout_s=2, retries=2, start_period_s=30),
                                 health_timeout_s=60, stop_timeout_s=5)
        eng.start(profile)
        wait_for(lambda: eng.probe_runtime(profile)[0], 20, what="v1 serving")
        in_gate = threading.Event()
        result: dict = {}

        def progress(p: Progress) -> None:
            if p.stage == "health":
                in_gate.set()

        def run() -> None:
            try:
                result["report"] = eng.update(profile, broken, progress=progress)
            except BaseException as exc:  # noqa: BLE001 - inspected below
                result["error"] = exc

        worker = threading.Thread(target=run, name="update-during-engine-restart")
        worker.start()
        assert in_gate.wait(60)
        second.stop()
        worker.join(timeout=120)
        assert not worker.is_alive()
        error = result.get("error")
        assert isinstance(error, EngineError), result["report"].summary() if "report" in result else result
        assert "not running" in str(error) or "stopped answering" in str(error), str(error)
        assert "journal is kept" in error.hint or "recover" in error.hint, error.hint
        assert eng.journal(profile).read() is not None
        eng.close()

        second = PrivateEngine(root=root)
        second.start()
        eng = connect(second.base_url, state_dir=tmp_path)
        report = eng.recover(profile)
        assert report is not None and report.outcome == "rolled_back", report.summary()
        assert eng.journal(profile).read() is None
        wait_for(lambda: eng.probe_runtime(profile)[0], 30, what="v1 serving after the engine restart")
        assert http_json(profile.base_url + "/api/status")["runtime_version"] == "1.0.0"
        names = sorted(c["Name"].lstrip("/") for c in eng.containers(profile))
        assert names == [profile.runtime_container_name], names
    finally:
        if eng is not None:
            try:
                for info in eng.containers():
                    eng.client.api.remove_container(info["Id"], force=True)
            except Exception:
                pass
            eng.close()
        second.stop()


def test_start_after_a_crashed_update_recovers_first(engine, running_v1, fake_images, docker_client):
    # A crashed updater left the old runtime renamed `-previous` and a new one created. start()
    # (with an edited profile) tried to set the current one aside under the same name: 409 Conflict.
    profile = running_v1
    old = engine._container(profile.runtime_container_name)
    docker_client.api.rename(old["Id"], profile.previous_container_name)
    docker_client.api.stop(old["Id"], timeout=2)
    v2 = profile.model_copy(update={"image": fake_images["v2"]})
    docker_client.containers.create(**v2.create_kwargs())  # created, never started
    edited = profile.model_copy(update={"env": {"HELIO_LOG_LEVEL": "debug"}})
    status = engine.start(edited)
    assert status.state == "running" and status.mismatches == (), status
    _only_runtime_is(engine, edited, "1.0.0")


def test_update_away_from_a_crash_looping_runtime(engine, profile, fake_images, docker_client):
    # The usual reason for an update: the runtime on the line is broken and restarts in a loop.
    # Renaming a container in its restart back-off fails in the engine ("sandbox ... not found"),
    # so the fix could never be installed.
    crashing = _derived_image(docker_client, fake_images["v1"], "helio-test/fake-runtime:crash-loop",
                              'CMD ["sh", "-c", "echo crashing; exit 3"]')
    broken = profile.model_copy(update={"image": crashing})
    try:
        engine.start(broken)
        wait_for(lambda: engine.runtime_status(broken).restart_loop, 30, what="a restart loop")
        report = engine.update(broken, fake_images["v2"])
        assert report.success and report.outcome == "updated", report.summary()
        _only_runtime_is(engine, report.profile, "2.0.0")
        # Rolling back to the crashing version fails its gate and puts 2.0.0 back.
        back = engine.rollback(report.profile)
        assert back.outcome == "rolled_back" and not back.success, back.summary()
        _only_runtime_is(engine, report.profile, "2.0.0")
    finally:
        for info in engine.containers(profile):
            docker_client.api.remove_container(info["Id"], force=True)


@pytest.mark.parametrize("stage", ["verify", "validate", "prepare", "stop", "start", "health"])
def test_cancel_at_every_stage_before_the_point_of_no_return(engine, running_v1, fake_images, stage):
    profile = running_v1
    before = engine._container(profile.runtime_container_name)["Id"]
    cancel = threading.Event()

    def progress(p: Progress) -> None:
        if p.stage == stage:
            cancel.set()

    report = engine.update(profile, fake_images["v2"], progress=progress, cancel=cancel)
    assert report.outcome == "cancelled" and not report.success, report.summary()
    assert report.profile.image == fake_images["v1"]
    _only_runtime_is(engine, profile, "1.0.0")
    if stage in ("verify", "validate"):  # before anything changed: the very same container
        assert engine._container(profile.runtime_container_name)["Id"] == before


def test_unusable_state_folder_is_a_clear_error_and_stop_still_works(docker_engine, profile, tmp_path):
    # The lock and the journal live in the state folder: if it cannot be written, say so (a raw
    # FileExistsError/PermissionError before), and never let that keep the line from being stopped.
    from helio_gui.engine import connect

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    good = connect(docker_engine.base_url, state_dir=tmp_path / "good")
    bad = connect(docker_engine.base_url, state_dir=blocker / "engine")
    try:
        good.start(profile)
        with pytest.raises(EngineError, match="state folder") as err:
            bad.start(profile)
        assert str(blocker) in str(err.value) and err.value.hint
        report = bad.update(profile, profile.image)
        assert report.outcome == "refused" and "state folder" in report.summary()
        assert bad.stop(profile).state == "exited"
    finally:
        good.remove(profile)
        good.close()
        bad.close()
