"""A user's sitecustomize (on PYTHONPATH), run by dapper-trio's, which hides it.

With ``TREE_DOOMED`` set it kills the child actor called ``doomed`` before
it can connect to its parent: a child that dies half-way through starting.
Every process it runs in says so in ``TREE_SITE_RAN`` (for its children).
"""

import json
import os

os.environ["TREE_SITE_RAN"] = "yes"
_config = os.environ.get("DAPPER_TRIO_ACTOR")
if (
    os.environ.get("TREE_DOOMED")
    and _config
    and json.loads(_config)["name"] == "doomed"
):
    os._exit(3)
