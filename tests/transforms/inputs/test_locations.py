"""Image locations: joined to the image root, `file://` made local, confined by allowed prefixes, redacted."""

import pytest

from transforms import reasons
from transforms.inputs.fetch import read_image_bytes
from transforms.inputs.locations import AllowedPrefixes, local_path, redact, resolve_image_location
from transforms.reasons import InputError


def _refused(check, location) -> str:
    with pytest.raises(InputError) as caught:
        check(location)
    assert caught.value.reason == reasons.IMAGE_NOT_ALLOWED
    return caught.value.message


@pytest.mark.parametrize(
    "location, root, expected",
    [
        ("a.png", None, "a.png"),
        ("a.png", "/data", "/data/a.png"),
        ("/abs/a.png", "/data", "/abs/a.png"),
        ("a.png", "gs://bucket/images", "gs://bucket/images/a.png"),
        ("a.png", "gs://bucket/images/", "gs://bucket/images/a.png"),
        ("a.png", "file:///data", "file:///data/a.png"),
        ("https://host/a.png", "/data", "https://host/a.png"),
        ("  a.png ", "/data", "/data/a.png"),
    ],
)
def test_relative_locations_join_the_image_root(location, root, expected):
    assert resolve_image_location(location, root) == expected


def test_file_uris_are_local_paths():
    assert local_path("file:///data/my%20images/a.png") == "/data/my images/a.png"
    assert local_path("file://localhost/data/a.png") == "/data/a.png"
    assert local_path("relative/a.png") == "relative/a.png"
    assert local_path("gs://bucket/a.png") is None
    with pytest.raises(ValueError, match="names a file on host 'fileserver'; file:// URIs are local"):
        local_path("file://fileserver/share/a.png")
    with pytest.raises(InputError) as caught:  # an image there is a record's failure, with its reason
        read_image_bytes("file://fileserver/share/a.png")
    assert caught.value.reason == reasons.IMAGE_UNREADABLE and "file:// URIs are local" in caught.value.message


@pytest.mark.parametrize(
    "location, shown",
    [
        ("http://user:hunter2@host/a.png", "http://***@host/a.png"),
        ("https://token@host:8443/a.png", "https://***@host:8443/a.png"),
        (
            "https://storage.googleapis.com/b/a.png?X-Goog-Algorithm=GOOG4&X-Goog-Signature=abc123&X-Goog-Expires=900",
            "https://storage.googleapis.com/b/a.png?X-Goog-Algorithm=***&X-Goog-Signature=***&X-Goog-Expires=***",
        ),
        ("https://host/a.png?sv=2020&sig=s3cr3t#frag", "https://host/a.png?sv=***&sig=***"),
        ("https://host/a.png?rawtoken", "https://host/a.png?***"),
        ("gs://bucket/a.png", "gs://bucket/a.png"),
        ("/local/a.png", "/local/a.png"),
        ("http://[::1/a.png", "http://(malformed URI)"),
    ],
)
def test_redact_hides_credentials_and_signed_url_tokens(location, shown):
    assert redact(location) == shown


def test_nothing_is_confined_without_prefixes(tmp_path):
    anywhere = AllowedPrefixes(None)
    assert anywhere.local("../x.png") == "../x.png"
    anywhere.uri("ftp://anything/x.png")


def test_local_folders_confine_after_dot_dot_and_symlinks_are_resolved(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (allowed / "escape.png").symlink_to(outside / "secret.png")
    (allowed / "escape_dir").symlink_to(outside)
    (allowed / "inside.png").symlink_to(allowed / "sub")
    prefixes = AllowedPrefixes(str(allowed))
    assert prefixes.local(str(allowed / "sub" / "a.png")) == str(allowed / "sub" / "a.png")
    assert prefixes.local(str(allowed / "sub" / ".." / "a.png")) == str(allowed / "a.png")
    assert prefixes.local(str(allowed / "inside.png")) == str(allowed / "sub"), "links inside stay allowed"
    for escape in (
        allowed / ".." / "outside" / "secret.png",
        allowed / "escape.png",
        allowed / "escape_dir" / "secret.png",
        outside / "secret.png",
        tmp_path / "allowed-not" / "x.png",  # a sibling whose name starts like the folder
        "/etc/passwd",
    ):
        assert "outside allowed_image_prefixes" in _refused(prefixes.local, str(escape))


def test_a_missing_and_an_existing_file_outside_are_refused_alike(tmp_path):
    (tmp_path / "allowed").mkdir()
    (tmp_path / "file_a.png").write_bytes(b"x")
    prefixes = AllowedPrefixes(str(tmp_path / "allowed"))
    exists = _refused(prefixes.local, str(tmp_path / "file_a.png"))
    missing = _refused(prefixes.local, str(tmp_path / "file_b.png"))
    assert exists.replace("file_a", "NAME") == missing.replace("file_b", "NAME")


def test_relative_and_file_uri_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    prefixes = AllowedPrefixes("images, file:///srv/photos")
    assert prefixes.local("images/a.png") == str(tmp_path / "images" / "a.png")
    assert prefixes.local("/srv/photos/b.png") == "/srv/photos/b.png"
    _refused(prefixes.local, "a.png")


def test_uri_prefixes_are_folders_on_one_host_and_port():
    prefixes = AllowedPrefixes("https://cdn.example.com/images, http://127.0.0.1:8080/, gs://bucket/pics/, s3://")
    for allowed in (
        "https://cdn.example.com/images/a.png",
        "https://CDN.example.com:443/images/sub/a.png",
        "https://user:pw@cdn.example.com/images/a.png?sig=1",
        "https://cdn.example.com/imag%65s/a.png",  # servers decode it to /images/a.png
        "http://127.0.0.1:8080/anything.png",
        "gs://bucket/pics/a.png",
        "s3://any-bucket/a.png",
    ):
        prefixes.uri(allowed)
    for refused in (
        "https://cdn.example.com/images-private/a.png",
        "https://cdn.example.com.evil.net/images/a.png",
        "https://cdn.example.com:8443/images/a.png",
        "http://cdn.example.com/images/a.png",
        "http://127.0.0.1:8081/a.png",
        "http://127.0.0.1/a.png",
        "gs://bucket/other/a.png",
        "gs://bucket-2/pics/a.png",
        "ftp://cdn.example.com/images/a.png",
    ):
        assert "outside allowed_image_prefixes" in _refused(prefixes.uri, refused), refused


@pytest.mark.parametrize(
    "uri",
    [
        "https://cdn.example.com/images/../private/a.png",
        "https://cdn.example.com/images/%2e%2e/private/a.png",
        "https://cdn.example.com/images/..%2fprivate/a.png",
        "https://cdn.example.com/images/..\\private/a.png",
        "https://cdn.example.com/images/./a.png",
        "gs://bucket/pics/../other/a.png",
    ],
)
def test_dot_segments_never_pass_a_uri_prefix(uri):
    assert "'.' or '..'" in _refused(AllowedPrefixes("https://cdn.example.com/images, gs://bucket/pics").uri, uri)


def test_messages_about_refused_uris_are_redacted():
    message = _refused(AllowedPrefixes("gs://").uri, "https://user:hunter2@host/a.png?token=s3cr3t")
    assert "hunter2" not in message and "s3cr3t" not in message and "user" not in message
