"""An unmodified azure-storage-blob application, pointed at a Skybridge `http` binding.

usage: azure_client.py ENDPOINT ACCOUNT SECRET STORAGE_ACCOUNT (full | one)

It signs with Shared Key as always, with its Skybridge account as the account name and the
base64 of its Skybridge secret as the account key; the URL addresses the target storage
account (path style, as Azurite serves it). `full` creates a container, uploads, lists and
downloads, and prints what it got as JSON; `one` makes one call and prints the outcome.
"""
import base64
import json
import sys

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

endpoint, account, secret, storage_account, what = sys.argv[1:6]
service = BlobServiceClient(
    f"{endpoint}/{storage_account}",
    credential={"account_name": account, "account_key": base64.b64encode(secret.encode()).decode()},
    retry_total=0,
    connection_timeout=10,
    read_timeout=30,
)

if what == "one":
    try:
        service.create_container("probe")
        print(json.dumps({"ok": True}))
    except HttpResponseError as e:
        print(json.dumps({
            "ok": False,
            "status": e.status_code,
            "code": e.error_code,
            "skybridge_error": e.response.headers.get("x-skybridge-error"),
        }))
    sys.exit(0)

container = service.create_container("reports")
body = b"quarterly numbers\n" * 5000
container.upload_blob("2026/q4.txt", body, overwrite=True)
listed = [b.name for b in container.list_blobs()]
got = container.download_blob("2026/q4.txt").readall()
print(json.dumps({
    "put_get_equal": got == body,
    "listed": listed,
    "containers": [c.name for c in service.list_containers()],
}))
