"""render.yaml against Render's Blueprint specification and against what settings.py needs in production."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.urls import resolve

from email_service.api.operations import WebHealthView
from tests.production.blueprint import Blueprint, BlueprintError, Service
from tests.production.conftest import ROOT, clean_environment

# Render's service types today: `redis` is the old name of `keyvalue`, still read but not written.
SERVICE_TYPES = {"web", "worker", "pserv", "cron", "keyvalue"}
PLANS = {
    "service": {"free", "starter", "standard", "pro", "pro plus", "pro max", "pro ultra"},
    "keyvalue": {"free", "starter", "standard", "pro", "pro plus"},
}
DATABASE_PLAN = re.compile(r"^(free|(basic|pro|accelerated)-\d+(mb|gb))$")
MAXMEMORY_POLICIES = {"noeviction", "allkeys-lfu", "allkeys-lru", "allkeys-random", "volatile-lfu", "volatile-lru"}
OPERATOR = {
    "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "oreestats-web.onrender.com",
    "PUBLIC_BASE_URL": "https://oreestats-web.onrender.com",
    "GOOGLE_CLIENT_ID": "123-abc.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": "GOCSPX-blueprint-test",
}


@pytest.fixture(scope="module")
def blueprint() -> Blueprint:
    return Blueprint.load()


def environment_of(blueprint: Blueprint, service: Service, venv: Path) -> dict[str, str]:
    env = blueprint.environment(
        service,
        database_url="postgres://oreestats:secret@dpg-example-a:5432/oreestats",
        redis_url="redis://red-example:6379",
        operator=OPERATOR,
    )
    return {**clean_environment(venv), **env}


def test_every_service_is_of_a_type_and_plan_render_knows(blueprint):
    assert blueprint.services
    for service in blueprint.services:
        assert service.type in SERVICE_TYPES, f"{service.name}: type {service.type!r}"
        plans = PLANS["keyvalue" if service.type == "keyvalue" else "service"]
        assert service.spec.get("plan") in plans, f"{service.name}: plan {service.spec.get('plan')!r}"
        if service.type != "keyvalue":
            assert service.spec.get("runtime") == "python", service.name
            service.command("buildCommand")
            service.command("startCommand")
    for database in blueprint.databases:
        assert DATABASE_PLAN.match(database["plan"]), database


def test_the_key_value_instance_is_private_and_never_evicts(blueprint):
    (store,) = blueprint.of_type("keyvalue")
    assert store.spec["ipAllowList"] == []  # required by Render; empty: the private network only
    assert store.spec["maxmemoryPolicy"] in MAXMEMORY_POLICIES
    assert store.spec["maxmemoryPolicy"] == "noeviction"  # broker messages and unread hits
    assert store.spec["plan"] != "free"  # the free plan keeps nothing on disk


def test_the_web_health_check_is_the_route_that_survives_a_dead_worker(blueprint):
    (web,) = blueprint.of_type("web")
    path = web.spec["healthCheckPath"]
    assert "?" not in path
    assert resolve(path).func.view_class is WebHealthView


def test_migrations_run_once_per_deploy_before_the_web_takes_traffic(blueprint):
    (web,) = blueprint.of_type("web")
    assert web.command("preDeployCommand") == ["python", "manage.py", "migrate", "--no-input"]
    assert "migrate" not in (ROOT / "build.sh").read_text()
    for service in blueprint.of_type("worker"):
        assert "preDeployCommand" not in service.spec, f"{service.name} would race the web's migration"


def test_there_is_exactly_one_beat(blueprint):
    beats = [service for service in blueprint.services if "beat" in service.spec.get("startCommand", "")]
    assert len(beats) == 1
    assert beats[0].spec.get("numInstances") == 1


def test_every_wiring_resolves_and_every_secret_is_generated_or_asked_for(blueprint, tmp_path):
    for service in blueprint.services:
        if service.type == "keyvalue":
            continue
        env = environment_of(blueprint, service, tmp_path)
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")
    group = {entry["key"]: entry for entry in blueprint.groups["oreestats-settings"]}
    for secret in ("SECRET_KEY", "JWT_SECRET_KEY", "OREE_API_KEY"):
        assert group[secret].get("generateValue") is True, secret
    asked = {key for key, entry in group.items() if entry.get("sync") is False}
    assert asked == set(OPERATOR)
    with pytest.raises(BlueprintError, match="sync: false"):
        blueprint.environment(blueprint.service("oreestats-web"), database_url="", redis_url="", operator={})


def test_every_variable_the_blueprint_sets_is_one_the_app_reads(blueprint):
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    platform = {"PYTHON_VERSION"}  # read by Render itself
    for service in blueprint.services:
        for entry in service.env_entries:
            if "key" in entry:
                assert entry["key"] in documented | platform, f"{service.name}: {entry['key']} (a typo?)"
    for entry in blueprint.groups["oreestats-settings"]:
        assert entry["key"] in documented | platform, f"group: {entry['key']} (a typo?)"


@pytest.mark.slow
def test_each_service_starts_its_settings_from_the_blueprint_alone_and_passes_the_deploy_checks(
    blueprint, production_venv
):
    """settings.py refuses to start without a variable it needs in production: each service's set must do."""
    for service in blueprint.services:
        if service.type == "keyvalue":
            continue
        env = environment_of(blueprint, service, production_venv)
        done = subprocess.run(
            ["python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{service.name}:\n{done.stdout}\n{done.stderr}"
        executable = service.command("startCommand")[0]
        assert os.access(production_venv / "bin" / executable, os.X_OK), f"{service.name}: no {executable}"
    assert os.access(ROOT / "build.sh", os.X_OK)
