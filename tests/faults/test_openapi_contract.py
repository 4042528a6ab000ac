"""Every mesh service publishes its true contract, and schemathesis `--checks all` holds it to it.

Each of the 8 services runs as a real process (cpu profile, a temp home).  The
document must be OpenAPI 3.1 with the shared error body on every error status;
/docs must be Swagger UI served from the service itself (the mesh runs offline);
and `st run --checks all` (schemathesis.toml applies: 422 is an accepted answer
to a schema-valid request only for rules JSON Schema cannot state) must pass
with no 5xx, a bounded number of examples per operation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from st_runner import SERVICES, running_service, st_run

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = "25"


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_passes_schemathesis_checks_all(name: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_service(name, home) as service:
        doc = service.client.get("/openapi.json").json()
        assert doc["openapi"].startswith("3.1")
        assert "/invoke" in doc["paths"] and "/health" in doc["paths"]
        invoke = doc["paths"]["/invoke"]["post"]
        body_ref = invoke["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert body_ref.split("/")[-1] in doc["components"]["schemas"]
        for status in ("413", "422", "500"):
            schema = invoke["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (status, schema)
        assert "401" not in invoke["responses"]  # no SPARKLE_TOKEN: nothing answers 401
        page = service.client.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text and "cdn" not in page.text.lower()
        asset = service.client.get("/docs/swagger-ui-bundle.js")
        assert asset.status_code == 200 and len(asset.content) > 100_000

        run = st_run(service.url, tmp_path, "--checks", "all", "--max-examples", EXAMPLES_PER_OPERATION)
        assert run.returncode == 0, run.output[-6000:]
        assert run.responses, "the hooks logged no response: st sent nothing?"
        assert not run.server_errors, run.server_errors[:10]
        assert service.client.get("/health").status_code == 200
