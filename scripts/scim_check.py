#!/usr/bin/env python3
"""Run the scim2-tester compliance suite against one SCIM base URL.

Usage: scim_check.py BASE_URL TOKEN [TAG[,TAG...]]

BASE_URL is an org's SCIM root, e.g. http://127.0.0.1:8080/scim/v2/default, and TOKEN that
org's SCIM bearer token. The optional third argument keeps only the checks carrying one of
the given scim2-tester tags (discovery, crud, crud:create, crud:read, crud:update,
crud:delete, misc, ...).

Prints one line per ERROR or CRITICAL result ("STATUS resource_type title - reason"), then
the count of results per status as a dict on the last line. Exits 1 when any result is ERROR
or CRITICAL or when no check ran, else 0.

Needs the PyPI packages scim2-tester and scim2-client with its httpx2 engine
(`pip install 'scim2-tester[httpx2]'`); scripts/scim-compliance.sh --setup installs them.
"""

import collections
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

FAILING = (Status.ERROR, Status.CRITICAL)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    url, token = argv[1], argv[2]
    tags = {t for t in argv[3].split(",") if t} if len(argv) > 3 else None
    http = Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )
    with http:
        # Discovery (ServiceProviderConfig, ResourceTypes, Schemas) runs inside check_server.
        results = check_server(SyncSCIMClient(http), include_tags=tags)
    counts = collections.Counter(r.status for r in results)
    bad = [r for r in results if r.status in FAILING]
    for r in bad:
        print(r.status.name, r.resource_type, r.title, "-", r.reason)
    print({s.name: counts[s] for s in Status if counts[s]})
    if not results:
        print("no check ran", file=sys.stderr)
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
