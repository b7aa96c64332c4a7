#!/usr/bin/env python3
"""Evaluate Sluice's flags locally with the official Python UnleashClient (Unleash's yggdrasil engine),
fetching /api/client/features from a running `sluice serve`. Driven by crates/sluice/tests/clients.rs.

usage: unleash_parity.py URL TOKEN CONTEXTS_JSON FLAG [FLAG ...]
  URL            e.g. http://127.0.0.1:4242/api
  CONTEXTS_JSON  a JSON array of {"userId", "sessionId", "properties"}
Prints one JSON object per (context, flag): {"userId", "flag", "enabled", "variant"}.
"""
import json
import sys
from typing import Any, Optional

from UnleashClient import UnleashClient
from UnleashClient.cache import BaseCache
from UnleashClient.utils import InstanceAllowType


class MemoryCache(BaseCache):
    """No disk cache: a failed fetch must not fall back to features from an earlier run."""

    def __init__(self) -> None:
        self._d: dict = {}

    def set(self, key: str, value: Any):
        self._d[key] = value

    def mset(self, data: dict):
        self._d.update(data)

    def get(self, key: str, default: Optional[Any] = None):
        return self._d.get(key, default)

    def exists(self, key: str):
        return key in self._d

    def destroy(self):
        self._d.clear()


def main() -> int:
    url, token, contexts_path, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    with open(contexts_path, encoding="utf-8") as f:
        contexts = json.load(f)
    client = UnleashClient(
        url=url,
        app_name="sluice-parity-test",
        instance_id="parity-1",
        custom_headers={"Authorization": token},
        refresh_interval=3600,
        metrics_interval=1,
        disable_metrics=False,
        disable_registration=False,
        request_timeout=10,
        request_retries=0,
        cache=MemoryCache(),
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )
    try:
        client.initialize_client()  # one blocking fetch
        known = client.feature_definitions()
        missing = [f for f in flags if f not in known]
        if missing:
            print(f"features not loaded: missing {missing}, known {sorted(known)}", file=sys.stderr)
            return 1
        out = sys.stdout
        for ctx in contexts:
            for flag in flags:
                variant = client.get_variant(flag, ctx)
                out.write(json.dumps({
                    "userId": ctx["userId"],
                    "flag": flag,
                    "enabled": client.is_enabled(flag, ctx),
                    "variant": variant["name"],
                    "feature_enabled": variant.get("feature_enabled"),
                }) + "\n")
        out.flush()
        return 0
    finally:
        client.destroy()  # sends the last metrics bucket: the server must accept it


if __name__ == "__main__":
    sys.exit(main())
