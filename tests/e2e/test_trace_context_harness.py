"""The W3C trace-context harness, unchanged, against asgikit's tracing under uvicorn.

The harness (tests/e2e/w3c_trace_context, W3C 3-clause BSD) sends requests with every
kind of ``traceparent`` and ``tracestate`` to a test service, which calls the harness
back with the context it propagates; the harness checks what arrives. Strict level 2
and trace-context level 2, as the harness runs by default and with ``SPEC_LEVEL=2``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._processes import free_port, stop, wait_until_answering
from tests.e2e.servers import HOST, ROOT

pytest.importorskip("aiohttp", reason="the W3C harness needs aiohttp (the dev extra)")

HARNESS = Path(__file__).with_name("w3c_trace_context")
STARTUP_TIMEOUT = 30.0


def test_the_w3c_trace_context_harness_passes_every_case(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HARNESS)])}
    log = tmp_path / "service.log"
    with log.open("wb") as output:
        service = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service:app", "--host", HOST, "--port", f"{port}"],
            cwd=HARNESS,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_answering(f"http://{HOST}:{port}/", service, log, STARTUP_TIMEOUT)
        harness_port = free_port()
        harness = subprocess.run(
            [sys.executable, "test.py", f"http://{HOST}:{port}/test"],
            cwd=HARNESS,
            env={
                **env,
                "HARNESS_HOST": HOST,
                "HARNESS_PORT": str(harness_port),
                "SPEC_LEVEL": "2",
                "STRICT_LEVEL": "2",
            },
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop(service, 10.0)
    report = harness.stderr
    ran = re.search(r"^Ran (\d+) tests?", report, re.MULTILINE)
    assert ran is not None, report[-3000:]
    failed = re.findall(r"^(?:FAIL|ERROR): (test_\w+)", report, re.MULTILINE)
    assert failed == [], report[-5000:]
    assert int(ran.group(1)) == 41
    assert harness.returncode == 0
