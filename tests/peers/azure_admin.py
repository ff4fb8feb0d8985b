"""Change what an Azurite storage account has, as its owner would (azure-storage-blob with the
account's own key).

usage: azure_admin.py ENDPOINT ACCOUNT KEY COMMAND [ARG...]

  create-containers PREFIX N   create containers PREFIX-0 … PREFIX-(N-1)
  delete-container NAME        delete one

Prints one JSON line: what it did.
"""
import json
import sys

from azure.storage.blob import BlobServiceClient

endpoint, account, key, command, *args = sys.argv[1:]
service = BlobServiceClient(f"{endpoint}/{account}", credential={"account_name": account, "account_key": key})

if command == "create-containers":
    prefix, n = args[0], int(args[1])
    names = [f"{prefix}-{i}" for i in range(n)]
    for name in names:
        service.create_container(name)
    print(json.dumps({"created": names}))
elif command == "delete-container":
    service.delete_container(args[0])
    print(json.dumps({"deleted": args[0]}))
else:
    sys.exit(f"unknown command {command}")
