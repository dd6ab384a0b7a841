"""Log in to a vCenter/ESXi with pyvmomi, trusting its certificate the way the site says.

Every failure becomes a :class:`shared.errors.SourceError` (or AuthenticationError) whose
message names the site and says what to do: wrong credentials, unreachable host, a
certificate that is not trusted (with the thumbprint the host presented, so an
administrator can pin it after checking it out of band).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl
from pyVmomi.Security import ThumbprintMismatchException

from shared.domain.vsphere import VCenterTls
from shared.errors import AuthenticationError, SourceError

CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Endpoint:
    """What a node needs to log in: the site's connection with its password resolved."""

    site_id: str
    url: str
    username: str
    password: str = field(repr=False)
    tls: VCenterTls = field(default_factory=VCenterTls)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/sdk"


class ThumbprintMismatchError(ssl.SSLError):
    """The peer's certificate is not the pinned one."""


class PinnedContext(ssl.SSLContext):
    """Trusts exactly one certificate: every connection's peer certificate must hash to the
    pinned thumbprint (SHA-1/256/512 by its length), checked right after the handshake."""

    pinned: str = ""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        der = sock.getpeercert(binary_form=True) or b""
        algorithm = {40: "sha1", 64: "sha256", 128: "sha512"}[len(self.pinned)]
        actual = hashlib.new(algorithm, der).hexdigest()
        if actual != self.pinned:
            sock.close()
            raise ThumbprintMismatchError(f"expected {self.pinned}, the host presented {actual}")
        return sock


def ssl_context(tls: VCenterTls) -> ssl.SSLContext:
    """Verification on (system CAs + the site's ``ca_pem``, host name checked), unless a
    thumbprint is pinned (that exact certificate, on every connection) or ``insecure``."""
    if tls.thumbprint:
        pinned = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        pinned.check_hostname = False
        pinned.verify_mode = ssl.CERT_NONE
        pinned.pinned = tls.thumbprint
        return pinned
    if tls.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()
    if tls.ca_pem:
        ctx.load_verify_locations(cadata=tls.ca_pem)
    return ctx


def presented_thumbprint(host: str, port: int, timeout: float = 10.0) -> str:
    """SHA-256 of the certificate the host presents (to help an administrator pin it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True) or b""
    return hashlib.sha256(der).hexdigest()


class Session:
    """A logged-in service instance; ``close`` logs out."""

    def __init__(self, endpoint: Endpoint, si: Any) -> None:
        self.endpoint = endpoint
        self.si = si
        self.content = si.RetrieveContent()

    @property
    def cookie(self) -> str:
        """The SOAP session cookie, for datastore HTTP reads under the same login."""
        return str(self.si._stub.cookie)

    def vms(self) -> Iterator[Any]:
        """Every VM of the vCenter (a container view, destroyed once the walk ends)."""
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.VirtualMachine], True)
        try:
            yield from view.view
        finally:
            view.Destroy()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            Disconnect(self.si)


def connect(endpoint: Endpoint) -> Session:
    where = f"site {endpoint.site_id}: vCenter {endpoint.url}"
    tls = endpoint.tls
    try:
        si = SmartConnect(
            host=endpoint.host, port=endpoint.port, path=endpoint.path, user=endpoint.username,
            pwd=endpoint.password, sslContext=ssl_context(tls), disableSslCertValidation=tls.insecure,
            httpConnectionTimeout=CONNECT_TIMEOUT_S,
        )  # fmt: skip
    except vim.fault.InvalidLogin as exc:
        raise AuthenticationError(
            f"{where} rejected the user name or password for {endpoint.username!r}", site_id=endpoint.site_id
        ) from exc
    except (ThumbprintMismatchException, ThumbprintMismatchError) as exc:
        raise SourceError(
            f"{where}: the certificate does not match the pinned thumbprint ({exc})", site_id=endpoint.site_id
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        hint = ""
        with contextlib.suppress(OSError):
            hint = f"; it presented SHA-256 {presented_thumbprint(endpoint.host, endpoint.port)}"
        raise SourceError(
            f"{where}: certificate not trusted ({exc.verify_message}){hint}. Add its CA to the site, "
            "or pin the thumbprint after checking it",
            site_id=endpoint.site_id,
        ) from exc
    except (ssl.SSLError, OSError) as exc:
        raise SourceError(f"{where} is unreachable: {exc}", site_id=endpoint.site_id) from exc
    except (vmodl.MethodFault, vim.fault.VimFault) as exc:
        raise SourceError(f"{where} refused the login: {fault_message(exc)}", site_id=endpoint.site_id) from exc
    return Session(endpoint, si)


def fault_message(exc: BaseException) -> str:
    """A vSphere fault's own message (``msg`` / localized message), else its type."""
    msg = getattr(exc, "msg", None) or getattr(exc, "localizedMessage", None)
    return str(msg) if msg else type(exc).__name__
