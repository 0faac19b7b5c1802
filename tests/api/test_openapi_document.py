"""The OpenAPI document is valid OpenAPI 3.1, describes exactly the API's routes, and its human-readable
page comes from our own origin (no CDN, no script)."""
from __future__ import annotations

import json
import re

from openapi_spec_validator import validate

from app.api import response_models
from app.api.openapi import spec
from tests.api.apiclient import DELETE_50, documented, events, paused
from tests.fake_openai import Turn


def test_the_document_is_valid_openapi():
    validate(spec())


def test_the_document_describes_every_route_and_no_other(app):
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, operations in spec()["paths"].items() for method in operations}
    assert routes - {("/openapi.json", "get"), ("/docs", "get")} == documented


def test_it_is_served_with_its_page(api):
    served = api.get("/openapi.json")
    assert served.status_code == 200 and served.get_json() == spec()
    page = api.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for operation in (op for ops in spec()["paths"].values() for op in ops.values()):
        assert f'id="{operation["operationId"]}"' in html
    assert "<script" not in html and "style=" not in html, "nothing inline: the CSP forbids it"
    assert not re.search(r'(src|href)="(https?:)?//', html), "every asset from our own origin"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert api.get(re.search(r'href="(/static/[^"]+\.css)"', html).group(1)).status_code == 200


def test_real_answers_are_exactly_what_the_models_say(api, fake_model):
    """The models forbid fields they do not list: a field added to an answer but not to its model fails
    here (and in the fuzz test), so the document cannot fall behind the answers."""
    fake_model.script(Turn(tool_calls=[DELETE_50]), Turn(text="Deleted."))
    run = paused(api, session_id="doc")
    response_models.Run.model_validate(run)
    stream = events(api.continue_(run["run_id"], documented(run["tools"][0]), session_id="doc"))
    assert stream[-1][0] == "RunCompleted"
    for name, data in stream:
        response_models.RunEvent.model_validate({"event": name, "data": json.dumps(data)})
        response_models.EventData.model_validate(data)
    response_models.Run.model_validate(api.get(f"/agents/data_manager/runs/{run['run_id']}").get_json())
    response_models.SessionPage.model_validate(api.get("/sessions").get_json())
    response_models.SessionDetail.model_validate(api.get("/sessions/doc").get_json())
    response_models.SessionDetail.model_validate(api.post("/sessions/doc/rename", json={"session_name": "x"}).get_json())
    for agent in api.get("/agents").get_json():
        response_models.Agent.model_validate(agent)
    response_models.Error.model_validate(api.get("/sessions/nope").get_json())
