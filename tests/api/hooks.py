"""Schemathesis hooks for scripts/api-fuzz: a check that no write succeeds for a viewer or an sdk token."""
import os

import schemathesis

# What an sdk token may send: evaluations, Unleash SDK registrations and counts, built-in metrics.
SDK_MAY_POST = ("/ofrep/v1/", "/api/client/", "/api/v1/metrics")
# Not writes: logging in and out of the dashboard sets or clears a cookie in the browser only.
NOT_WRITES = ("/ui/login", "/ui/logout")


@schemathesis.check
def no_write_for_a_reader(ctx, response, case):
    role = os.environ.get("SLUICE_FUZZ_ROLE")
    if role not in ("viewer", "sdk") or case.method.upper() in ("GET", "HEAD", "OPTIONS"):
        return None
    path = case.formatted_path
    if path.startswith(NOT_WRITES) or (path.startswith(SDK_MAY_POST) and role == "sdk"):
        return None
    if path.startswith("/ofrep/v1/") and role == "viewer":
        return None  # refused (403) anyway; an evaluation writes nothing
    if 200 <= response.status_code < 300:
        raise AssertionError(f"a {role} token changed something: {case.method} {path} answered {response.status_code}")
    return None
