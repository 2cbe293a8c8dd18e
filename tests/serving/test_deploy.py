"""The deployment files say what the service needs: no Docker engine here, so their structure is
checked (compose wiring, healthchecks, non-root images) rather than a build."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT


def test_compose_starts_the_api_after_a_healthy_redis():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("api", "api-gpu"):
        api = services[name]
        assert api["depends_on"]["redis"]["condition"] == "service_healthy"
        assert api["environment"]["NMT_REDIS_URL"] == "redis://redis:6379/0"
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_images_run_the_service_as_a_non_root_user_with_a_healthcheck():
    for name in ("Dockerfile", "Dockerfile.gpu"):
        lines = (ROOT / "deploy" / name).read_text().splitlines()
        instructions = [line.split()[0] for line in lines if line and not line.startswith((" ", "#"))]
        assert "USER" in instructions and "HEALTHCHECK" in instructions
        assert lines[[i for i, line in enumerate(lines) if line.startswith("USER")][0]].split()[1] == "nmt"
        assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in lines
    cpu = (ROOT / "deploy" / "Dockerfile").read_text()
    assert cpu.count("FROM ") == 2  # multi-stage
