"""render.yaml read as Render reads it: services, their commands, and the environment each one gets."""

from __future__ import annotations

import base64
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = ROOT / "render.yaml"


class BlueprintError(AssertionError):
    """render.yaml says something Render would refuse, or that the app cannot start with."""


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    spec: dict[str, Any]

    def command(self, key: str) -> list[str]:
        """A command as an argv (Render runs pre-deploy and start commands without a shell)."""
        text = self.spec.get(key)
        if not text:
            raise BlueprintError(f"service {self.name} has no {key}")
        return shlex.split(str(text))

    @property
    def env_entries(self) -> list[dict[str, Any]]:
        return list(self.spec.get("envVars") or [])


@dataclass
class Blueprint:
    raw: dict[str, Any]
    # Render generates a `generateValue` once per group or service; every service of the group shares it.
    generated: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = BLUEPRINT) -> Blueprint:
        return cls(yaml.safe_load(path.read_text()))

    @property
    def services(self) -> list[Service]:
        return [Service(name=s["name"], type=s["type"], spec=s) for s in self.raw.get("services") or []]

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise BlueprintError(f"render.yaml has no service {name!r}")

    def of_type(self, kind: str) -> list[Service]:
        return [service for service in self.services if service.type == kind]

    @property
    def databases(self) -> list[dict[str, Any]]:
        return list(self.raw.get("databases") or [])

    @property
    def groups(self) -> dict[str, list[dict[str, Any]]]:
        return {group["name"]: list(group.get("envVars") or []) for group in self.raw.get("envVarGroups") or []}

    def environment(
        self,
        service: Service,
        *,
        database_url: str,
        redis_url: str,
        operator: dict[str, str],
    ) -> dict[str, str]:
        """What `service` runs with: its groups' and its own variables, resolved as Render resolves them.

        `operator` holds what the operator types into the dashboard for `sync: false` variables;
        one missing there is an error, as a deploy that never got it would fail.
        """
        resolved: dict[str, str] = {}
        for entry in service.env_entries:
            if "fromGroup" in entry:
                group = entry["fromGroup"]
                if group not in self.groups:
                    raise BlueprintError(f"service {service.name} uses unknown env group {group!r}")
                for item in self.groups[group]:
                    resolved[item["key"]] = self._value(item, f"group:{group}", database_url, redis_url, operator)
            else:
                resolved[entry["key"]] = self._value(entry, service.name, database_url, redis_url, operator)
        return resolved

    def _value(
        self, entry: dict[str, Any], scope: str, database_url: str, redis_url: str, operator: dict[str, str]
    ) -> str:
        key = entry.get("key")
        if not key:
            raise BlueprintError(f"an env var entry in {scope} has no key: {entry}")
        sources = [name for name in ("value", "generateValue", "sync", "fromDatabase", "fromService") if name in entry]
        if len(sources) != 1:
            raise BlueprintError(f"{key} in {scope} needs exactly one source, has {sources}")
        if "value" in entry:
            return str(entry["value"])
        if entry.get("generateValue"):
            # As Render generates one: 256 random bits, base64-encoded (44 characters).
            return self.generated.setdefault(f"{scope}:{key}", base64.b64encode(secrets.token_bytes(32)).decode())
        if entry.get("sync") is False:
            if key not in operator:
                raise BlueprintError(f"{key} is `sync: false`: the operator must set it, and the test gave no value")
            return operator[key]
        if "fromDatabase" in entry:
            source = entry["fromDatabase"]
            if source.get("name") not in {db["name"] for db in self.databases}:
                raise BlueprintError(f"{key} reads unknown database {source.get('name')!r}")
            if source.get("property") != "connectionString":
                raise BlueprintError(f"{key} reads database property {source.get('property')!r}")
            return database_url
        source = entry["fromService"]
        target = self.service(source.get("name", ""))
        if target.type != source.get("type"):
            raise BlueprintError(f"{key} names {target.name} as a {source.get('type')}, it is a {target.type}")
        if target.type != "keyvalue" or source.get("property") != "connectionString":
            raise BlueprintError(f"{key}: only a Key Value connectionString is wired here, not {source}")
        return redis_url
