"""Check the admin API's OpenAPI document with real validators, against a running controller.

Usage: openapi_check.py URL TOKEN_FILE

1. The document at URL/v1/openapi.json is a valid OpenAPI 3.1 document (openapi-spec-validator).
2. Every GET route of the document is called — path parameters filled from the list answers
   (the first decision, binding, catalog entry, platform, account) — and each real answer is
   validated against the document by openapi-core: status, media type and body schema. So are
   a 404 and a 400 (error bodies).

Prints JSON: {"validated": ["GET /v1/nodes 200", ...], "unfilled": [paths it had no id for]}.
Exits non-zero at the first answer the document does not describe.
"""

import json
import sys
import urllib.error
import urllib.request

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

url, token_file = sys.argv[1], sys.argv[2]
token = open(token_file).read().strip()


def call(path):
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers.get("content-type", ""), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), error.read()


status, _, body = call("/v1/openapi.json")
assert status == 200, f"/v1/openapi.json answered {status}"
spec = json.loads(body)
validate(spec)
api = OpenAPI.from_dict(spec)


def first(path, *keys):
    """A value out of the first item of a list answer, or None when the list is empty."""
    _, _, body = call(path)
    items = json.loads(body)
    if isinstance(items, dict):
        items = items["items"]
    if not items:
        return None
    value = items[0]
    for key in keys:
        value = value[key]
    return str(value)


fill = {
    "/v1/decisions/{id}": first("/v1/decisions", "id"),
    "/v1/connections/{id}": first("/v1/decisions", "id"),
    "/v1/bindings/{id}": first("/v1/bindings", "id"),
    "/v1/catalog/{id}": first("/v1/catalog", "id"),
    "/v1/accounts/{id}": first("/v1/accounts", "id"),
}
platform = first("/v1/platforms", "name")

validated, unfilled = [], []


def check(template, path):
    status, media, body = call(path)
    request = MockRequest(url, "get", path)
    response = MockResponse(body, status_code=status, content_type=media.split(";")[0])
    try:
        api.validate_response(request, response)
    except Exception as error:  # the validator's own exception, with the details in __cause__
        cause = getattr(error, "__cause__", None)
        why = f"{error!r} {cause!r}"
        sys.exit(f"GET {path} ({template}) answered {status}, which the document does not describe: "
                 f"{why[:3000]}\n{body[:2000]!r}")
    validated.append(f"GET {path} {status}")


for template, item in spec["paths"].items():
    if "get" not in item:
        continue
    media = next(iter(next(iter(item["get"]["responses"].values()))["content"]))
    if template == "/v1/events" or media not in ("application/json",):
        continue  # a stream, the page, the metrics: not JSON documents
    path = template
    if "{platform}" in path:
        path = path.replace("{platform}", platform) if platform else None
    if path and "{id}" in path:
        path = path.replace("{id}", fill[template]) if fill.get(template) else None
    if path is None:
        unfilled.append(template)
        continue
    check(template, path)

# Error answers are described too.
check("/v1/decisions/{id}", "/v1/decisions/999999999")
check("/v1/decisions/{id}", "/v1/decisions/not-a-number")

print(json.dumps({"validated": validated, "unfilled": unfilled}))
