"""HTTP images from untrusted URLs, against real servers on loopback: what is followed, sent and refused."""

import ssl
import time
import uuid
from urllib.parse import quote

import pytest

from tests.support.http_servers import BASIC_PASSWORD, BASIC_USER, SECRET_BODY, ImageServer, self_signed_certificate
from transforms import reasons
from transforms.inputs import http_get
from transforms.inputs.fetch import read_image_bytes
from transforms.inputs.http_get import MAX_REDIRECTS, never_fetched
from transforms.inputs.locations import AllowedPrefixes
from transforms.reasons import InputError


def _failure(url: str, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        read_image_bytes(url, timeout_secs=kwargs.pop("timeout_secs", 3), **kwargs)
    assert SECRET_BODY not in str(caught.value), "nothing the server sends may reach a message"
    return caught.value


@pytest.mark.parametrize(
    "address, refused",
    [
        ("169.254.169.254", True),
        ("169.254.0.1", True),
        ("100.100.100.200", True),
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("fd00:ec2::254", True),
        ("::ffff:169.254.169.254", True),
        ("64:ff9b::a9fe:a9fe", True),
        ("2002:a9fe:a9fe::1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("224.0.0.1", True),
        ("255.255.255.255", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.10", False),
        ("::1", False),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
    ],
)
def test_link_local_and_metadata_addresses_are_never_fetched(address, refused):
    assert never_fetched(address) == refused


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "2852039166",  # the same address as one number: the resolver makes it 169.254.169.254
        "0xa9fea9fe",
        "[::ffff:169.254.169.254]",
        "[fe80::1%25lo]",
    ],
)
def test_metadata_addresses_are_refused_by_the_address_they_resolve_to(host):
    started = time.monotonic()
    failure = _failure(f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token")
    assert failure.reason == reasons.IMAGE_NOT_ALLOWED and "never fetched" in failure.message
    assert time.monotonic() - started < 2, "refused before any connection is tried"


def test_redirects_are_followed_up_to_a_limit(image_server):
    assert len(read_image_bytes(f"{image_server.url}/chain/{MAX_REDIRECTS}/rgb.png")) > 0
    failure = _failure(f"{image_server.url}/chain/{MAX_REDIRECTS + 1}/rgb.png")
    assert failure.reason == reasons.IMAGE_UNREADABLE and f"more than {MAX_REDIRECTS} redirects" in failure.message
    before = image_server.count("/loop")  # the server is shared: other tests follow the loop too
    assert _failure(f"{image_server.url}/loop").reason == reasons.IMAGE_UNREADABLE
    assert image_server.count("/loop") - before == MAX_REDIRECTS + 1, "a redirect loop is not retried"


@pytest.mark.parametrize(
    "target", ["ftp://127.0.0.1/a.png", "file:///etc/passwd", "gs://bucket/a.png", "data:image/png;base64,AAAA"]
)
def test_redirects_stay_on_http(image_server, target):
    failure = _failure(f"{image_server.url}/redirect?to={quote(target, safe='')}")
    assert failure.reason == reasons.IMAGE_NOT_ALLOWED and "only http(s) is followed" in failure.message


def test_redirects_to_metadata_addresses_are_refused(image_server):
    for target in ("http://169.254.169.254/latest/meta-data/", "http://2852039166/", "http://[fd00:ec2::254]/"):
        failure = _failure(f"{image_server.url}/redirect?to={quote(target, safe='')}")
        assert failure.reason == reasons.IMAGE_NOT_ALLOWED and "never fetched" in failure.message, target


def test_redirects_are_checked_against_the_allowed_prefixes(image_server):
    allowed = AllowedPrefixes(f"{image_server.url}/img/, {image_server.url}/redirect")
    assert len(read_image_bytes(f"{image_server.url}/redirect?to=/img/rgb.png", allowed=allowed)) > 0
    elsewhere = f"/chain/0/rgb.png?k={uuid.uuid4().hex}"
    for target in (
        elsewhere,  # same host, other folder
        f"http://localhost:{image_server.port}/img/rgb.png",  # same server, other host name
        f"http://127.0.0.1:{image_server.port + 1}/img/rgb.png",  # other port
        "/img/../chain/0/rgb.png",
    ):
        failure = _failure(f"{image_server.url}/redirect?to={quote(target, safe='')}", allowed=allowed)
        assert failure.reason == reasons.IMAGE_NOT_ALLOWED, target
    assert image_server.count(elsewhere) == 0, "the refused redirect is never requested"


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(image_server):
    user_info = f"{BASIC_USER}:{quote(BASIC_PASSWORD, safe='')}"
    url = f"http://{user_info}@127.0.0.1:{image_server.port}/private/rgb.png"
    assert len(read_image_bytes(url)) > 0
    failure = _failure(f"http://{BASIC_USER}:wrong-SECRET@127.0.0.1:{image_server.port}/private/rgb.png")
    assert failure.reason == reasons.IMAGE_UNREADABLE
    assert "HTTP 401 (the URL's credentials were refused)" in str(failure)
    assert "SECRET" not in str(failure) and BASIC_USER not in str(failure)
    anonymous = _failure(f"{image_server.url}/private/rgb.png")
    assert anonymous.reason == reasons.IMAGE_UNREADABLE and "HTTP 401" in anonymous.message


def test_credentials_are_not_sent_to_another_origin_after_a_redirect(image_server):
    user_info = f"{BASIC_USER}:{quote(BASIC_PASSWORD, safe='')}"
    other_origin = quote(f"http://localhost:{image_server.port}/img/rgb.png?from={uuid.uuid4().hex}", safe="")
    read_image_bytes(f"http://{user_info}@127.0.0.1:{image_server.port}/redirect?to={other_origin}")
    same_origin = quote(f"/private/rgb.png?from={uuid.uuid4().hex}", safe="")
    read_image_bytes(f"http://{user_info}@127.0.0.1:{image_server.port}/redirect?to={same_origin}")
    sent = {request.path.split("?")[0]: request.authorization for request in image_server.requests[-4:]}
    assert sent["/img/rgb.png"] is None and sent["/private/rgb.png"] is not None


def test_signed_url_tokens_never_reach_a_message(image_server):
    failure = _failure(f"{image_server.url}/status/404?X-Goog-Signature=deadbeef&X-Goog-Credential=sa%40p.iam")
    assert failure.reason == reasons.IMAGE_NOT_FOUND
    assert "deadbeef" not in failure.message and "sa%40p" not in failure.message
    assert "X-Goog-Signature=***" in failure.message


@pytest.mark.parametrize(
    "path, code",
    [
        ("/status/404", reasons.IMAGE_NOT_FOUND),
        ("/status/410", reasons.IMAGE_NOT_FOUND),
        ("/status/403", reasons.IMAGE_UNREADABLE),
        ("/status/400", reasons.IMAGE_UNREADABLE),
        ("/huge-declared", reasons.IMAGE_TOO_LARGE),
        ("/huge-undeclared", reasons.IMAGE_TOO_LARGE),
    ],
)
def test_permanent_answers_are_not_retried(image_server, path, code):
    before = image_server.count(path)
    assert _failure(image_server.url + path, max_bytes=20_000).reason == code
    assert image_server.count(path) == before + 1


def test_non_ascii_paths_and_hosts_are_encoded_not_refused(image_server):
    assert image_server.count("/img/caf%C3%A9.png") == 0
    assert _failure(f"{image_server.url}/img/café.png").reason == reasons.IMAGE_NOT_FOUND
    assert image_server.count("/img/caf%C3%A9.png") == 1


@pytest.mark.parametrize(
    "url, text",
    [
        ("http:///a.png", "has no host"),
        ("http://host:99999/a.png", "not a well-formed URL"),
        ("http://no-such-host.invalid/a.png", "does not resolve"),
    ],
)
def test_malformed_or_unresolvable_urls_say_so(url, text):
    failure = _failure(url)
    assert failure.reason == reasons.IMAGE_UNREADABLE and text in failure.message


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, good_images):
    """An https server on loopback whose self-signed certificate names `localhost` only."""
    certificate, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server = ImageServer({"rgb.png": good_images["rgb.png"].read_bytes()}, tls=context)
    try:
        yield server, certificate
    finally:
        server.close()


@pytest.fixture
def trusting(monkeypatch):
    """Makes the system's trusted certificates the given file (OpenSSL reads SSL_CERT_FILE)."""

    def trust(certificate):
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
        http_get._tls_context.cache_clear()

    yield trust
    http_get._tls_context.cache_clear()


def test_https_verifies_the_certificate_and_the_host_name(tls_server, trusting, good_images):
    server, certificate = tls_server
    untrusted = _failure(f"https://localhost:{server.port}/img/rgb.png")
    assert untrusted.reason == reasons.IMAGE_UNREADABLE and "TLS certificate not trusted" in untrusted.message
    trusting(certificate)
    assert read_image_bytes(f"https://localhost:{server.port}/img/rgb.png") == good_images["rgb.png"].read_bytes()
    other_name = _failure(f"https://127.0.0.1:{server.port}/img/rgb.png")  # the certificate names localhost only
    assert other_name.reason == reasons.IMAGE_UNREADABLE and "TLS certificate not trusted" in other_name.message
