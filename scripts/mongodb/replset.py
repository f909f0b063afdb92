"""Initiates a single-node replica set on a fresh mongod and waits until it is primary.

Usage: replset.py PORT NAME [TIMEOUT_SECONDS]

Idempotent: a member that already belongs to a replica set is only waited for. Exits non-zero,
with the reason on stderr, when the node does not become primary in time.
"""

import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError


def main() -> int:
    port, name = int(sys.argv[1]), sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    deadline = time.monotonic() + timeout
    client = MongoClient(
        host="127.0.0.1",
        port=port,
        directConnection=True,
        serverSelectionTimeoutMS=2000,
    )
    last_error = "no answer yet"
    initiated = False
    while time.monotonic() < deadline:
        try:
            hello = client.admin.command("hello")
            if hello.get("isWritablePrimary"):
                return 0
            if not initiated and "setName" not in hello:
                config = {"_id": name, "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]}
                try:
                    client.admin.command("replSetInitiate", config)
                except OperationFailure as err:
                    # 23 = AlreadyInitialized: another caller won the race; just wait.
                    if err.code != 23:
                        raise
                initiated = True
            last_error = f"state: {hello.get('setName', 'no set')} not primary yet"
        except PyMongoError as err:
            last_error = str(err)
        time.sleep(0.2)
    print(f"mongod on port {port} did not become primary of {name}: {last_error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
