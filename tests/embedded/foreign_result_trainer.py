"""A stand-in trainer that exits 0 with a valid result for another run (its key is not the config's runKey); with
``--pack``, one such result per run of the pack."""

import json
import sys

from proxyrank.testing import make_result

if __name__ == "__main__":
    if "--pack" in sys.argv:
        with open(sys.argv[sys.argv.index("--pack") + 1]) as fh:
            configs = json.load(fh)["runs"]
    else:
        with open(sys.argv[sys.argv.index("--config") + 1]) as fh:
            configs = [json.load(fh)]
    for config in configs:
        result = make_result("r0000000000000000", 2.0, eval_sets=[s["name"] for s in config["evalSets"]])
        with open(config["output"], "w") as out:
            out.write(result.dumps())
    sys.exit(0)
