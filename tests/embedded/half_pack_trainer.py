"""A stand-in trainer whose packs die half-way: with ``--pack`` it writes the first run's result and exits 1 (the
other runs unfinished); with ``--config`` (a run alone) it writes the run's result and exits 0."""

import json
import sys

from proxyrank.testing import make_result


def _finish(config: dict) -> None:
    sets = [s["name"] for s in config["evalSets"]]
    result = make_result(config["runKey"], 2.0 + config["learningRate"], eval_sets=sets, seconds=3.0)
    with open(config["output"], "w") as out:
        out.write(result.dumps())


if __name__ == "__main__":
    if "--pack" in sys.argv:
        with open(sys.argv[sys.argv.index("--pack") + 1]) as fh:
            runs = json.load(fh)["runs"]
        _finish(runs[0])
        print("the pack died after its first run", file=sys.stderr, flush=True)
        sys.exit(1)
    with open(sys.argv[sys.argv.index("--config") + 1]) as fh:
        _finish(json.load(fh))
    sys.exit(0)
