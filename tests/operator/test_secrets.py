"""``spec.trainer.env`` values go into the trainer's pods and nowhere else: not the status, Events, logs or /metrics."""

from __future__ import annotations

import json
import logging

import kmock
import pytest
from prometheus_client import generate_latest

from proxyrank.launchers.base import REDACTED, env_secrets, redact
from proxyrank.metrics import build_registry
from proxyrank.testing.cluster import Fault, is_request, wait_for
from tests.operator.conftest import NAMESPACE, Cluster, comparison

CANARY = "SECRET-CANARY-123"


def _echo_the_manifest(request: kmock.Request) -> str:
    """A 422 worded as the API server words one: the invalid field and its value, and here the whole object too."""
    job = request.data
    env = job["spec"]["tasks"][0]["template"]["spec"]["containers"][0]["env"]
    i, var = next((i, v) for i, v in enumerate(env) if v.get("name") == "API_TOKEN")
    return (f'Job.batch.volcano.sh "{job["metadata"]["name"]}" is invalid: spec.tasks[0].template.spec.'
            f'containers[0].env[{i}].value: Invalid value: "{var["value"]}": must not look like a token; '
            f'object: {json.dumps(job)}')


def test_an_env_value_reaches_the_pods_and_no_status_event_log_or_metric(cluster: Cluster,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    obj = comparison(runRetries=1)
    obj["spec"]["trainer"]["env"] = {"API_TOKEN": CANARY, "HF_HOME": "/cache/hf"}
    with cluster.operator() as runner:
        fault = cluster.kube.fail(Fault(lambda r: is_request(r, "POST", "jobs"), status=422, times=1,
                                        message=_echo_the_manifest))
        uid = cluster.create(obj)["metadata"]["uid"]
        cluster.wait_phase("Succeeded")
        wait_for(lambda: cluster.kube.events("Completed"), timeout=5, what="the Completed event")
        metrics = generate_latest(build_registry(cluster.handlers.STATE.snapshot_list)).decode()
    assert fault.served == 1, "the rejected create never happened: the test proves nothing"
    assert CANARY in json.dumps(cluster.kube.jobs(NAMESPACE, uid)[0]["spec"])  # where it belongs
    retried = [e["message"] for e in cluster.kube.events("RunRetried")]
    assert len(retried) == 1 and "422" in retried[0] and f'Invalid value: "{REDACTED}"' in retried[0], retried
    status = (cluster.get() or {})["status"]
    places = {
        "status": json.dumps(status),
        "events": json.dumps(cluster.kube.events()),
        "log records": "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records),
        "operator output": runner.output,
        "metrics": metrics,
    }
    for where, text in places.items():
        assert CANARY not in text, f"the env value leaked into the {where}"
    assert "comparison_reliable" in metrics and len(caplog.records) > 100  # the places were not empty


def test_redaction_covers_the_values_as_is_json_escaped_and_as_echoed_by_the_api_server() -> None:
    secrets = env_secrets({"A": "s3cr3t-\"quoted\"", "B": "plain-secret", "SHORT": "1", "EMPTY": ""})
    assert secrets == ('s3cr3t-"quoted"', "plain-secret")
    text = ('env[0].value: Invalid value: "unknown-to-us": bad; body {"value": "s3cr3t-\\"quoted\\""} '
            'and plain-secret, exit code 1')
    assert redact(text, secrets) == (f'env[0].value: Invalid value: "{REDACTED}": bad; body {{"value": "{REDACTED}"}} '
                                     f"and {REDACTED}, exit code 1")
    assert env_secrets([{"name": "A", "value": "list-form"}, {"name": "B", "valueFrom": {}}]) == ("list-form",)
    assert env_secrets(None) == ()


def test_the_log_has_no_line_per_child_event_but_keeps_the_others(cluster: Cluster,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Kopf logs "Indexer '<id>' succeeded." after every index handler call; for the children's index handlers that is a
    line per event of every job and pod, so the operator drops those (and only those)."""
    caplog.set_level(logging.INFO)
    with cluster.operator():
        cluster.create(comparison())
        cluster.wait_phase("Succeeded")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("kopf")]
    succeeded = [line for line in lines if line.endswith(" succeeded.")]
    assert succeeded, "no handler reported success: the test proves nothing"
    assert not [line for line in succeeded if "'children/index-" in line], succeeded


def test_the_quiet_filter_drops_only_successes_of_the_named_handlers() -> None:
    from proxyrank.kopf_support import QuietHandlers

    quiet = QuietHandlers(["children/index-"])

    def passes(message: str, level: int = logging.INFO) -> bool:
        return quiet.filter(logging.LogRecord("kopf.objects", level, __file__, 1, message, (), None))

    assert not passes("Indexer 'children/index-pods' succeeded.")
    assert not passes("Handler 'children/index-pods' succeeded.")
    assert passes("Handler 'children/index-pods' failed with an exception and will try again in 1 seconds: x",
                  logging.ERROR)
    assert passes("Handler 'create_fn' succeeded.")
    assert passes("Handler 'children/deleted-pods' succeeded.")
