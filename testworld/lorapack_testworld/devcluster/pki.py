"""Throwaway certificates and kubeconfigs for the local control plane.

One ECDSA P-256 CA signs the API server's serving certificate (localhost / 127.0.0.1 only) and
every client certificate (admin in system:masters, the controller-manager and the scheduler under
their bootstrap RBAC identities); a second CA signs the aggregation layer's front-proxy client, as
kubeadm sets it up, and a separate key pair signs service-account tokens. Certificates
live a week: a dev cluster never outlives that. Called by `lorapack_testworld.devcluster.cluster`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientIdentity", "Pki", "write_kubeconfig"]

_VALIDITY = datetime.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    """A client certificate on disk: CN is the user name, O the groups."""

    user: str
    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class Pki:
    """Paths of the files `Pki.create` wrote."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_public: Path
    sa_private: Path
    kwok_serving_cert: Path
    """kwok's kubelet-like HTTPS server (logs, exec) on 127.0.0.1."""
    kwok_serving_key: Path
    front_proxy_ca: Path
    """CA of the aggregation layer's request-header client (kube-apiserver --requestheader-*)."""
    front_proxy_client: ClientIdentity
    admin: ClientIdentity
    controller_manager: ClientIdentity
    scheduler: ClientIdentity

    @classmethod
    def create(cls, directory: Path) -> Pki:
        """Generate the CAs, serving, client and service-account keys into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = _Ca.create(directory, "ca", "lorapack-devcluster-ca")
        front_proxy = _Ca.create(directory, "front-proxy-ca", "lorapack-devcluster-front-proxy")
        serving_cert, serving_key = ca.issue(directory, "apiserver", "kube-apiserver", server=True)
        kwok_cert, kwok_key = ca.issue(directory, "kwok", "kwok-kubelet", server=True)

        def client(ca_: _Ca, stem: str, user: str, groups: tuple[str, ...] = ()) -> ClientIdentity:
            cert, key = ca_.issue(directory, stem, user, groups)
            return ClientIdentity(user=user, cert=cert, key=key)

        sa_key = ec.generate_private_key(ec.SECP256R1())
        sa_private = _write_key(directory / "sa.key", sa_key)
        sa_public = directory / "sa.pub"
        sa_public.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(
            ca_cert=ca.cert_path,
            ca_key=ca.key_path,
            serving_cert=serving_cert,
            serving_key=serving_key,
            sa_public=sa_public,
            sa_private=sa_private,
            kwok_serving_cert=kwok_cert,
            kwok_serving_key=kwok_key,
            front_proxy_ca=front_proxy.cert_path,
            front_proxy_client=client(front_proxy, "front-proxy-client", "front-proxy-client"),
            admin=client(ca, "admin", "lorapack-admin", ("system:masters",)),
            # The bootstrap RBAC roles of kubeadm clusters are bound to these exact user names.
            controller_manager=client(ca, "controller-manager", "system:kube-controller-manager"),
            scheduler=client(ca, "scheduler", "system:kube-scheduler"),
        )


@dataclasses.dataclass(frozen=True)
class _Ca:
    key: ec.EllipticCurvePrivateKey
    name: x509.Name
    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path, stem: str, common_name: str) -> _Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(
            key=key,
            name=name,
            cert_path=_write_cert(directory / f"{stem}.crt", cert),
            key_path=_write_key(directory / f"{stem}.key", key),
        )

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server: bool = False,
    ) -> tuple[Path, Path]:
        """Sign a client (or, with `server`, a loopback serving) certificate; write it."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            # Only loopback names: every server here listens on 127.0.0.1 alone.
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return (
            _write_cert(directory / f"{stem}.crt", cert),
            _write_key(directory / f"{stem}.key", key),
        )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_kubeconfig(path: Path, server: str, ca_cert: Path, identity: ClientIdentity) -> Path:
    """Write a self-contained kubeconfig (certificates inlined) for `identity` at `server`."""

    def data(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lorapack-dev",
                "cluster": {"server": server, "certificate-authority-data": data(ca_cert)},
            }
        ],
        "users": [
            {
                "name": identity.user,
                "user": {
                    "client-certificate-data": data(identity.cert),
                    "client-key-data": data(identity.key),
                },
            }
        ],
        "contexts": [
            {
                "name": "lorapack-dev",
                "context": {"cluster": "lorapack-dev", "user": identity.user},
            }
        ],
        "current-context": "lorapack-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path
