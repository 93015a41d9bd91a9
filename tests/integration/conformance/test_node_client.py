"""The Node client (clients/node) runs every conformance scenario (docs/client-contract.md)
through tests/integration/conformance/node_driver.js."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from loadtest.local_server import ServerProcess, free_port
from service.app import running_server
from tests.certificates import CertificateAuthority
from tests.helpers import loopback_config
from tests.integration.conformance.node_package import DRIVER, built_node_client
from tests.integration.conformance.scenarios import (
    SCENARIOS,
    check_answers,
    command_driver,
    frame_files,
    run_scenario,
)
from tests.replica_dns import NAME, REPLICAS
from tests.replicas import REPLICA_FLAGS, serving_one, start_replicas_at, wait_for_streams

ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module", autouse=True)
def node_client() -> Path:
    return built_node_client()


@pytest.mark.parametrize("name", SCENARIOS)
async def test_scenario(name: str, shared_server: ServerProcess, frames_folder: Path) -> None:
    await run_scenario(SCENARIOS[name], command_driver(DRIVER, ROOT), frames_folder, shared_server)


async def test_failover_behind_a_dns_name(dns_port: int, frames_folder: Path) -> None:
    # Two replicas behind one name (a headless Service's), resolved by the client through the
    # test's DNS server (grpc-js asks the target's DNS server with its alternative resolver
    # only); one drains mid-stream.
    port = free_port()
    servers = start_replicas_at(
        [(REPLICA_FLAGS, {"host": host, "port": port}) for host in REPLICAS[:2]]
    )
    scenario = SCENARIOS["drain"]
    target = f"dns://127.0.0.1:{dns_port}/{NAME.rstrip('.')}:{port}"
    spec = {**scenario.spec, "target": target, "jpegs": frame_files(frames_folder)}
    try:
        drive = command_driver(DRIVER, ROOT, env={"GRPC_NODE_USE_ALTERNATIVE_RESOLVER": "true"})
        driving = asyncio.create_task(drive(spec))
        await wait_for_streams(servers, 1)
        await asyncio.sleep(0.5)
        (await serving_one(servers)).process.send_signal(signal.SIGTERM)
        result = await driving
    finally:
        for server in servers:
            server.stop(timeout_s=15)
    scenario.check(result)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = CertificateAuthority("server CA"), CertificateAuthority("client CA")
    server, client = server_ca.issue("server", server=True), client_ca.issue("client", server=False)
    files = {
        "server_ca": server_ca.pem, "server_cert": server.certificate_pem,
        "server_key": server.key_pem, "client_ca": client_ca.pem,
        "client_cert": client.certificate_pem, "client_key": client.key_pem,
    }  # fmt: skip
    for name, data in files.items():
        (folder / f"{name}.pem").write_bytes(data)
    return {name: folder / f"{name}.pem" for name in files}


async def test_mutual_tls_with_a_bearer_token(pki: dict[str, Path], frames_folder: Path) -> None:
    config = loopback_config(
        models=("selfie-general",), auth_token="tls-token",
        tls_cert_file=str(pki["server_cert"]), tls_key_file=str(pki["server_key"]),
        tls_client_ca_file=str(pki["client_ca"]),
    )  # fmt: skip
    drive = command_driver(DRIVER, ROOT)
    async with running_server(config) as service:
        spec = {"target": service.target, "jpegs": frame_files(frames_folder), "frames": 10,
                "fps": 30, "token": "tls-token",
                "root_certificates": str(pki["server_ca"])}  # fmt: skip
        served = await drive({**spec, "client_certificate": str(pki["client_cert"]),
                              "client_key": str(pki["client_key"])})  # fmt: skip
        anonymous = await drive({**spec, "frames": 60, "give_up_after_s": 0.5})
    check_answers(served, 10)
    assert served["error"] is None and served["answers"][-1][1] == "OK"
    # No client certificate: the connection fails, which the client retries until it gives up.
    assert anonymous["error"]["code"] == "UNAVAILABLE", anonymous
    assert all(a[1] == "DROPPED" for a in anonymous["answers"])
