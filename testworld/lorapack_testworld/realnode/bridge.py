"""What lets the real node's pods reach the loopback-only control plane and S3 server.

The local control plane and the S3 server listen on 127.0.0.1 (of the tier's own network
namespace); pods have network namespaces of their own and reach the node address instead. This
module listens there (it exists only inside hack/realnode/in-netns.sh's namespace):
* the API: TLS terminated with a serving certificate the dev CA signs for the `kubernetes`
  Service's cluster IP (what in-cluster clients dial and verify), then a TLS connection to the
  API server; bytes are piped, so bearer tokens and watches pass as they are. The `kubernetes`
  Service's endpoints (the API server's reconciler is off in the dev cluster) point here;
* any plain TCP port (the S3 server): piped to the same port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lorapack_testworld.devcluster import DevCluster

__all__ = ["API_PORT", "Bridge"]

API_PORT = 6443


def _serving_cert(pki: Path, ips: list[str], out: Path) -> tuple[Path, Path]:
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    names += [
        x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc")
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "realnode-api-bridge")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "bridge.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "bridge.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out / "bridge.crt", out / "bridge.key"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Bridge:
    """The listeners on the node address; `close()` stops them."""

    def __init__(self, cluster: DevCluster, node_ip: str, workdir: Path) -> None:
        self.cluster = cluster
        self.node_ip = node_ip
        self.workdir = workdir
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        # Every open connection (both sides), closed by close(): the API server waits for its
        # clients to go before it stops.
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)  # type: ignore[arg-type]

    def expose_api(self) -> None:
        """Serve the API on node_ip:API_PORT and make the `kubernetes` Service point there."""
        svc = self.cluster.get_json("service", "kubernetes", "-n", "default")
        cluster_ip = svc["spec"]["clusterIP"]
        pki = self.cluster.workdir / "pki"
        cert, key = _serving_cert(pki, [cluster_ip, self.node_ip], self.workdir)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        upstream_ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        port = int(self.cluster.server.rsplit(":", 1)[1])

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                ur, uw = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=upstream_ctx, server_hostname="127.0.0.1"
                )
            except OSError:
                w.close()
                return
            await self._join(r, w, ur, uw)

        self._listen(handle, API_PORT, server_ctx)
        self.cluster.apply_objects([_api_endpoints(self.node_ip)])

    def expose_tcp(self, port: int) -> str:
        """Pipe node_ip:port to 127.0.0.1:port; returns "node_ip:port"."""

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                w.close()
                return
            await self._join(r, w, ur, uw)

        self._listen(handle, port, None)
        return f"{self.node_ip}:{port}"

    async def _join(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        ur: asyncio.StreamReader,
        uw: asyncio.StreamWriter,
    ) -> None:
        self._writers |= {w, uw}
        try:
            await asyncio.gather(_pipe(r, uw), _pipe(ur, w))
        finally:
            self._writers -= {w, uw}

    def _listen(self, handle: object, port: int, ctx: ssl.SSLContext | None) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(handle, self.node_ip, port, ssl=ctx)  # type: ignore[arg-type]

        server = self._run(start())
        assert isinstance(server, asyncio.Server)
        self._servers.append(server)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True), 5
                )
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


def _api_endpoints(node_ip: str) -> dict[str, object]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "lorapack-realnode",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}],
    }
