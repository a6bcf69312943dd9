"""Generated requests against the running API (Schemathesis over its own /openapi.json, real HTTP on a loopback
port): every operation, including /explain, /model and the admin routes with and without the admin token.

Checked on every answer: no 5xx, the status code is documented, the body matches the documented schema, the
content type and headers are documented ones, invalid input is refused with a 4xx, an admin route refuses a
request without the token or with a wrong one. Not checked: that every schema-valid request is accepted
(``positive_data_acceptance``): a text of spaces, an unknown version or label is schema-valid and rightly refused.

Bounded and seeded: ``MAX_EXAMPLES`` generated cases per operation on top of the schema's examples and the
coverage phase's boundary cases, derandomized, no example database; the counts are printed at the end
(``-s``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from tests.integration.test_serve import Server, registered_registry, serve_config

pytestmark = pytest.mark.slow

TOKEN = "generated-inputs-admin-token"
MAX_EXAMPLES = 50
SEED = 27
TRIED: Counter[tuple[str, str]] = Counter()  # (with or without the token, operation) -> cases sent


def served_config(project: Path, tiny_model_dir: Path) -> Any:
    return serve_config(project, tiny_model_dir, "serve.backend=torch-fp32", f"serve.admin_token={TOKEN}")


def openapi_schema() -> dict[str, Any]:
    """The schema the server below publishes (it depends on the config's limits, not on a project or model):
    made at collection, because Schemathesis's lazy loader (``from_fixture``) fails on pytest 9.2."""
    from pipeline.serving.app import create_app

    return create_app(served_config(Path("."), Path("."))).openapi()


SCHEMA = openapi_schema()
schema = schemathesis.openapi.from_dict(
    SCHEMA,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    ),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, learned_model_dir: Path) -> Iterator[str]:
    """The running API's URL, once its /openapi.json is checked to be the schema the cases come from."""
    store = registered_registry(tmp_path_factory.mktemp("schemathesis"), tiny_model_dir, learned_model_dir)
    with Server(served_config(store["project"], tiny_model_dir)) as running:
        assert httpx.get(f"{running.url}/openapi.json").json() == SCHEMA
        yield running.url
    print("\nSchemathesis cases sent:", sum(TRIED.values()))
    for (variant, operation), n in sorted(TRIED.items()):
        print(f"  {variant:>13}  {operation:<16} {n}")


@schema.parametrize()
def test_generated_requests_with_the_admin_token(case: Any, server: str) -> None:
    TRIED["with token", case.operation.label] += 1
    case.call_and_validate(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"})


@schema.parametrize()
def test_generated_requests_without_a_token(case: Any, server: str) -> None:
    TRIED["without token", case.operation.label] += 1
    case.call_and_validate(base_url=server)
