"""GET one image over http(s) from an untrusted URL: one attempt, redirects included.

Written on `http.client` rather than urllib so that every step can be held to the read's deadline and
checked: the host name is resolved here and the address connected to is the one checked, so neither
a DNS name nor a redirect reaches link-local or cloud metadata addresses; redirects stay on http(s) and
under `allowed_image_prefixes`; user info in the URL is sent as basic auth (to the same origin only).
Nothing the server sends ever goes into a message. Retries and the deadline are `retries.py`'s.
"""

from __future__ import annotations

import base64
import errno
import functools
import http.client
import ipaddress
import socket
import ssl
from typing import NamedTuple, Optional
from urllib.parse import quote, unquote, urljoin, urlsplit

from transforms import reasons
from transforms.inputs.locations import HTTP_SCHEMES, AllowedPrefixes, redact
from transforms.inputs.retries import Cancelled, ReadAttempts, TransientError
from transforms.reasons import InputError

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_STATUSES = (408, 425, 429)  # and every 5xx
_CHUNK = 1 << 16
_USER_AGENT = "longclip-beam"

# Never connected to, whatever the name, redirect or allowed prefix: link-local (where clouds serve instance
# metadata and credentials: 169.254.169.254, AWS's fd00:ec2::254, Alibaba's 100.100.100.200), and addresses
# that name no server (unspecified, multicast, reserved, broadcast).
NEVER_FETCHED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",
        "240.0.0.0/4",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def never_fetched(address: str) -> bool:
    """Whether `address` (an IP literal) is, or embeds an IPv4 address that is, in `NEVER_FETCHED`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone index
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [embedded for embedded in (ip.ipv4_mapped, ip.sixtofour) if embedded is not None]
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(candidate in network for candidate in candidates for network in NEVER_FETCHED)


class _Target(NamedTuple):
    scheme: str
    host: str  # as in the Host header (IDNA-encoded), without brackets
    port: int
    request_path: str  # path and query, percent-encoded where needed
    authorization: Optional[str]  # a basic-auth header from the URL's user info

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class _Answer(NamedTuple):
    status: int
    location: Optional[str]
    body: bytes


def get_image(url: str, *, max_bytes: int, attempts: ReadAttempts, allowed: AllowedPrefixes) -> bytes:
    """One attempt at GET `url` (already checked against `allowed`), following redirects.

    Raises `InputError` for what will not change (404, 403, refused locations), `TransientError` for what
    may (429, 5xx, resets, timeouts), `Cancelled` once the deadline has passed.
    """
    shown = redact(url)
    current = url
    authorization = None
    for hop in range(MAX_REDIRECTS + 1):
        target = _target(current)
        if hop == 0:
            authorization = target.authorization
        where = shown if hop == 0 else f"{shown} (redirected to {redact(current)})"
        try:
            try:
                answer = _get(target._replace(authorization=authorization), attempts, max_bytes, where)
            except (InputError, TransientError, Cancelled):
                raise
            except Exception as exc:  # network and protocol failures of this attempt
                attempts.raise_if_cancelled()
                raise _failure(exc, where, target.host) from None
        except TransientError as failure:
            if hop:
                failure.what += f" (redirected to {redact(current)})"
            raise
        if answer.status not in _REDIRECTS:
            return answer.body
        if hop == MAX_REDIRECTS:
            break
        following = urljoin(current, answer.location)
        if urlsplit(following).scheme.lower() not in HTTP_SCHEMES:
            raise InputError(
                reasons.IMAGE_NOT_ALLOWED, f"GET {where}: redirects to {redact(following)}; only http(s) is followed"
            )
        try:
            allowed.uri(following)
        except InputError as refused:
            raise InputError(refused.reason, f"GET {where}: redirected, but {refused.message}") from None
        if authorization and _target(following).origin != target.origin:
            authorization = None  # credentials are for the URL's own origin only
        current = following
    raise InputError(reasons.IMAGE_UNREADABLE, f"GET {shown}: more than {MAX_REDIRECTS} redirects (a redirect loop?)")


def _target(url: str) -> _Target:
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        host = (parts.hostname or "").encode("idna").decode("ascii")
        if ":" in host:  # an IPv6 literal, whose zone index may be percent-encoded (fe80::1%25eth0)
            host = unquote(host)
    except (ValueError, UnicodeError):
        raise InputError(reasons.IMAGE_UNREADABLE, f"{shown} is not a well-formed URL (host or port)") from None
    if not host:
        raise InputError(reasons.IMAGE_UNREADABLE, f"{shown} has no host")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    safe = "/%:@!$&'()*+,;=-._~?"
    path = quote(parts.path or "/", safe=safe) + (f"?{quote(parts.query, safe=safe)}" if parts.query else "")
    return _Target(parts.scheme.lower(), host, port, path, authorization)


def _get(target: _Target, attempts: ReadAttempts, max_bytes: int, where: str) -> _Answer:
    """Resolves, checks every address, connects, sends the request and reads the answer within the deadline."""
    addresses = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    attempts.raise_if_cancelled()
    refused = sorted({address[4][0] for address in addresses if never_fetched(address[4][0])})
    if refused:
        named = "" if refused == [target.host] else f"{target.host} resolves to "
        raise InputError(
            reasons.IMAGE_NOT_ALLOWED,
            f"GET {where}: {named}{', '.join(refused)} is a link-local or metadata address, never fetched",
        )
    sock = _connect(addresses, attempts)
    connection: Optional[http.client.HTTPConnection] = None
    try:
        if target.scheme == "https":
            sock = _tls_context().wrap_socket(sock, server_hostname=target.host)
            attempts.close_on_cancel(lambda: socket.socket.shutdown(sock, socket.SHUT_RDWR))
            connection = http.client.HTTPSConnection(target.host, target.port, context=_tls_context())
        else:
            connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = sock  # already connected to the checked address
        headers = {"User-Agent": _USER_AGENT, "Accept": "image/*, */*;q=0.5"}
        if target.authorization:
            headers["Authorization"] = target.authorization
        _hold_to_deadline(sock, attempts)
        connection.request("GET", target.request_path, headers=headers)
        _hold_to_deadline(sock, attempts)
        response = connection.getresponse()
        status = response.status
        if status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: HTTP {status} without a Location")
            return _Answer(status, location, b"")
        if status in (404, 410):
            raise InputError(reasons.IMAGE_NOT_FOUND, f"GET {where}: HTTP {status}")
        if status in _TRANSIENT_STATUSES or 500 <= status < 600:
            raise TransientError(f"HTTP {status}", retry_after=_retry_after(response))
        if not 200 <= status < 300:
            refused_credentials = " (the URL's credentials were refused)" if target.authorization else ""
            raise InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: HTTP {status}{refused_credentials}")
        return _Answer(status, None, _body(response, sock, attempts, max_bytes, where))
    finally:
        if connection is not None:
            connection.close()
        sock.close()


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """The system's trusted CAs, loaded once; certificates and host names are verified."""
    return ssl.create_default_context()


def _connect(addresses: list, attempts: ReadAttempts) -> socket.socket:
    """A socket connected to the first of `addresses` that answers; each try bounded by the deadline."""
    failure: Optional[OSError] = None
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        attempts.close_on_cancel(lambda sock=sock: sock.shutdown(socket.SHUT_RDWR))
        try:
            _hold_to_deadline(sock, attempts)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            attempts.raise_if_cancelled()
            failure = exc
    raise failure or OSError(errno.EHOSTUNREACH, "no address")


def _body(response: http.client.HTTPResponse, sock, attempts: ReadAttempts, max_bytes: int, where: str) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InputError(reasons.IMAGE_TOO_LARGE, f"GET {where}: {declared} bytes, over the {max_bytes}-byte limit")
    chunks, size = [], 0
    while size <= max_bytes:
        _hold_to_deadline(sock, attempts)
        chunk = response.read1(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > max_bytes:
        raise InputError(reasons.IMAGE_TOO_LARGE, f"GET {where}: over the {max_bytes}-byte limit")
    return b"".join(chunks)


def _hold_to_deadline(sock: socket.socket, attempts: ReadAttempts) -> None:
    """Each blocking step may take what is left of the deadline, and no more."""
    attempts.raise_if_cancelled()
    remaining = attempts.remaining()
    if remaining <= 0:
        raise TimeoutError()
    sock.settimeout(remaining)


def _retry_after(response: http.client.HTTPResponse) -> Optional[float]:
    value = (response.getheader("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None


def _failure(exc: Exception, where: str, host: str) -> Exception:
    """What a network or protocol error of one attempt means: retry it (`TransientError`), or not."""
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return TransientError(f"looking up {host} failed for now")
        return InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: the host name {host} does not resolve")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: TLS certificate not trusted ({exc.verify_message})")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return TransientError("no answer in time", timed_out=True)
    if isinstance(exc, http.client.IncompleteRead):
        return TransientError("the connection closed before the whole image arrived")
    if isinstance(exc, http.client.RemoteDisconnected):
        return TransientError("the server closed the connection without answering")
    if isinstance(exc, ConnectionRefusedError):
        return TransientError("connection refused")
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return TransientError("the connection was reset")
    if isinstance(exc, ssl.SSLError):
        return InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: TLS failed ({exc.reason or 'handshake'})")
    if isinstance(exc, http.client.HTTPException):
        return InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: the answer is not valid HTTP ({type(exc).__name__})")
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return TransientError(f"network error ({name})")
    return InputError(reasons.IMAGE_UNREADABLE, f"GET {where}: {type(exc).__name__}")
