"""Service manifests (DESIGN §4, "Service manifest"): what a valid one parses to, and that every
error names the file, the line and the key it is about.
"""

from __future__ import annotations

import pytest
from helpers import ROOT

from chit.errors import RefusedError
from chit.policy.manifest import Manifest, ManifestError, parse_manifest

# The example of DESIGN §4, verbatim.
DESIGN_EXAMPLE = """\
id = "image-store"                       # the service id: the first segment of its permissions
description = "Users' images"

[permissions]                            # resource:action = description; full name image-store:images:read
"images:read" = "Read an image and its metadata"
"images:write" = "Upload or replace an image"
"images:delete" = "Delete an image"

[roles]                                  # registered as image-store:viewer, image-store:owner
viewer = ["images:read"]
owner = ["images:read", "images:write", "images:delete"]

[needs]                                  # for the service's own account (client_credentials)
permissions = ["tagging:tags:read"]

[on_behalf]                              # what it may exercise for a user (exchange, chits)
permissions = ["tagging:tags:write"]
deferred = ["tagging:tags:write"]        # may be delegated for later, to an asynchronous job
"""


def refused(text: str, source: str = "svc.toml") -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, source)
    return caught.value


def assert_points_at(error: ManifestError, source: str, line: int, key: str) -> None:
    assert error.line == line, str(error)
    assert error.key == key, str(error)
    assert str(error).startswith(f"{source}:{line}: {key}: "), str(error)


# what a manifest means --------------------------------------------------------------------------


def test_the_design_example_parses_to_full_names() -> None:
    manifest = parse_manifest(DESIGN_EXAMPLE, "image-store.toml")
    assert manifest == Manifest(
        id="image-store",
        description="Users' images",
        permissions={
            "image-store:images:read": "Read an image and its metadata",
            "image-store:images:write": "Upload or replace an image",
            "image-store:images:delete": "Delete an image",
        },
        roles={
            "image-store:viewer": ("image-store:images:read",),
            "image-store:owner": ("image-store:images:delete", "image-store:images:read", "image-store:images:write"),
        },
        needs=("tagging:tags:read",),
        on_behalf=("tagging:tags:write",),
        deferred=("tagging:tags:write",),
    )


@pytest.mark.parametrize("name", ["image-store", "tagging"])
def test_the_photo_example_manifests_parse(name: str) -> None:
    path = ROOT / "examples" / "photos" / f"{name}.toml"
    manifest = parse_manifest(path.read_text(encoding="utf-8"), str(path))
    assert manifest.id == name
    assert manifest.permissions
    assert all(p.startswith(name + ":") for p in manifest.permissions)
    for role, members in manifest.roles.items():
        assert role.startswith(name + ":")
        assert set(members) <= set(manifest.permissions)
    assert not any(p.startswith(name + ":") for p in manifest.needs)


def test_a_minimal_manifest_has_empty_sections() -> None:
    manifest = parse_manifest('id = "bare"\n', "bare.toml")
    assert manifest == Manifest("bare", "", {}, {}, (), (), ())


def test_roles_may_name_members_by_their_full_name() -> None:
    text = 'id = "svc"\n[permissions]\n"a:read" = "Read"\n[roles]\nreader = ["svc:a:read", "a:read"]\n'
    assert parse_manifest(text).roles == {"svc:reader": ("svc:a:read",)}


def test_descriptions_are_trimmed_and_wildcards_of_others_are_allowed() -> None:
    text = (
        'id = "svc"\n[permissions]\n"a:read" = "  Read a  "\n'
        '[needs]\npermissions = ["other:*:read"]\n[on_behalf]\npermissions = ["other:things:*"]\n'
        'deferred = ["other:things:write"]\n'
    )
    manifest = parse_manifest(text)
    assert manifest.permissions == {"svc:a:read": "Read a"}
    assert manifest.needs == ("other:*:read",)
    assert manifest.deferred == ("other:things:write",)  # covered by the wider on_behalf permission


def test_a_manifest_error_is_a_refusal() -> None:
    assert issubclass(ManifestError, RefusedError)  # the CLI exits 1 with its one-line reason


# every error points at its line and key ----------------------------------------------------------


def test_unknown_top_level_key() -> None:
    error = refused('id = "svc"\ndescription = "Things"\n# permisions = 1 in a comment\npermisions = 1\n')
    assert_points_at(error, "svc.toml", 4, "permisions")
    assert "unknown key" in str(error)


@pytest.mark.parametrize("bad", ['"Image_Store"', '"-svc"', '""', '"' + "a" * 49 + '"', "42"])
def test_bad_service_id(bad: str) -> None:
    error = refused(f'description = "Things"\n\nid = {bad}\n')
    assert_points_at(error, "svc.toml", 3, "id")


def test_missing_service_id_names_the_key() -> None:
    error = refused('description = "Things"\n')
    assert error.key == "id"
    assert str(error).startswith("svc.toml: id: ")


def test_the_reserved_id_chit() -> None:
    error = refused('# the auth server\n\nid = "chit"\n')
    assert_points_at(error, "svc.toml", 3, "id")
    assert "reserved" in str(error)


@pytest.mark.parametrize("key", ["images", "svc:images:read", "Images:read", "images:", ":read", "a b:read"])
def test_permission_key_that_is_not_resource_action(key: str) -> None:
    error = refused(f'id = "svc"\n\n[permissions]\n"ok:read" = "Fine"\n"{key}" = "Broken"\n')
    assert_points_at(error, "svc.toml", 5, f"permissions.{key}")
    assert "resource:action" in str(error)


@pytest.mark.parametrize("value", ['""', '"   "', "3", '["x"]'])
def test_permission_without_a_description(value: str) -> None:
    error = refused(f'id = "svc"\n[permissions]\n"a:read" = "Read"\n"a:write" = {value}\n')
    assert_points_at(error, "svc.toml", 4, "permissions.a:write")
    assert "description" in str(error)


def test_role_naming_an_undefined_permission() -> None:
    text = 'id = "svc"\n[permissions]\n"a:read" = "Read"\n\n[roles]\nreader = ["a:read"]\nwriter = ["a:write"]\n'
    error = refused(text)
    assert_points_at(error, "svc.toml", 7, "roles.writer")
    assert "'a:write' is not defined under [permissions]" in str(error)


def test_role_naming_another_services_permission() -> None:
    text = (
        'id = "svc"\n[permissions]\n"a:read" = "Read"\n[roles]\nreader = ["a:read"]\n'
        'mixed = [\n  "a:read",\n  "other:a:read",\n]\n'
    )
    error = refused(text)
    assert_points_at(error, "svc.toml", 6, "roles.mixed")
    assert "'other:a:read' belongs to another service" in str(error)


def test_a_role_without_permissions_is_refused_naming_it() -> None:
    # it would grant nothing, and so be grantable by anyone
    text = 'id = "svc"\n[permissions]\n"a:read" = "Read"\n[roles]\nreader = ["a:read"]\nplaceholder = []\n'
    error = refused(text)
    assert_points_at(error, "svc.toml", 6, "roles.placeholder")
    assert str(error).endswith(": a role needs at least one permission")


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('id = "svc"\ndescription = "a\\u0000b"\n', 2, "description"),
        ('id = "svc"\n[permissions]\n"a:read" = "Read\\u0000"\n', 3, "permissions.a:read"),
        ('id = "svc"\n[permissions]\n"a:read" = """Read\n\\U00000000"""\n', 3, "permissions.a:read"),
    ],
    ids=["service", "permission", "multi-line"],
)
def test_a_nul_in_a_description_is_refused_naming_it(text: str, line: int, key: str) -> None:
    # PostgreSQL cannot store it; a raw NUL is refused by TOML itself, an escaped one here
    error = refused(text)
    assert_points_at(error, "svc.toml", line, key)
    assert str(error).endswith(": contains a NUL character")


def test_a_raw_nul_is_refused_by_toml_naming_its_line() -> None:
    error = refused('id = "svc"\ndescription = "a\x00b"\n')
    assert_points_at(error, "svc.toml", 2, "toml")


def test_a_description_may_hold_other_control_characters() -> None:
    text = 'id = "svc"\ndescription = """Two\nlines\tand a \\u001b"""\n'
    assert parse_manifest(text).description == "Two\nlines\tand a \x1b"


def test_bad_role_name() -> None:
    error = refused('id = "svc"\n[permissions]\n"a:read" = "Read"\n[roles]\n"Reader" = ["a:read"]\n')
    assert_points_at(error, "svc.toml", 5, "roles.Reader")


def test_needs_naming_the_services_own_permission() -> None:
    text = 'id = "svc"\n[permissions]\n"a:read" = "Read"\n\n[needs]\npermissions = ["other:b:read", "svc:a:read"]\n'
    error = refused(text)
    assert_points_at(error, "svc.toml", 6, "needs.permissions")
    assert "own permission" in str(error)


def test_needs_naming_a_malformed_permission() -> None:
    error = refused('id = "svc"\n[needs]\npermissions = ["other:Tags:read"]\n')
    assert_points_at(error, "svc.toml", 3, "needs.permissions")
    assert "'Tags'" in str(error)


def test_deferred_not_within_on_behalf() -> None:
    text = (
        'id = "svc"\n\n[on_behalf]\npermissions = ["other:tags:read"]\n'
        'deferred = ["other:tags:read", "other:tags:write"]\n'
    )
    error = refused(text)
    assert_points_at(error, "svc.toml", 5, "on_behalf.deferred")
    assert "'other:tags:write' is not among on_behalf.permissions" in str(error)


def test_on_behalf_naming_an_own_permission_that_is_not_defined() -> None:
    text = 'id = "svc"\n[permissions]\n"a:read" = "Read"\n[on_behalf]\npermissions = ["svc:a:write"]\n'
    error = refused(text)
    assert_points_at(error, "svc.toml", 5, "on_behalf.permissions")


@pytest.mark.parametrize(
    ("section", "line"),
    [("needs", 'deferred = ["other:a:read"]'), ("on_behalf", "permisions = []")],
)
def test_unknown_key_in_a_section(section: str, line: str) -> None:
    key = line.split(" ")[0]
    error = refused(f'id = "svc"\n[{section}]\npermissions = ["other:a:read"]\n{line}\n')
    assert_points_at(error, "svc.toml", 4, f"{section}.{key}")
    assert "unknown key" in str(error)


@pytest.mark.parametrize("section", ["permissions", "roles", "needs", "on_behalf"])
def test_a_section_that_is_not_a_table(section: str) -> None:
    error = refused(f'id = "svc"\ndescription = "Things"\n{section} = ["x"]\n')
    assert_points_at(error, "svc.toml", 3, section)


def test_toml_syntax_error_names_its_line() -> None:
    error = refused('id = "svc"\n[permissions]\n"a:read" = "Read"\n"a:write" = "unterminated\n')
    assert_points_at(error, "svc.toml", 4, "toml")


def test_toml_duplicate_key_names_its_line() -> None:
    error = refused('id = "svc"\n[permissions]\n"a:read" = "Read"\n\n"a:read" = "Again"\n')
    assert error.key == "toml"
    assert error.line == 5, str(error)


def test_an_error_inside_an_inline_table_points_at_its_line() -> None:
    text = 'id = "svc"\npermissions = { "a:read" = "Read" }\nroles = { reader = ["a:write"] }\n'
    error = refused(text)
    assert_points_at(error, "svc.toml", 3, "roles.reader")


def test_the_source_is_the_file_name_given() -> None:
    error = refused('id = "svc"\nbogus = 1\n', "/srv/repos/svc/chit.toml")
    assert str(error).startswith("/srv/repos/svc/chit.toml:2: bogus: ")


# canonical form ----------------------------------------------------------------------------------


def test_canonical_is_equal_for_reordered_but_equal_manifests() -> None:
    reordered = """\
[on_behalf]
deferred = ["tagging:tags:write"]
permissions = ["tagging:tags:write", "tagging:tags:write"]

[roles]
owner = ["images:delete", "image-store:images:write", "images:read"]
viewer = ["image-store:images:read"]

[needs]
permissions = ["tagging:tags:read"]

[permissions]
"images:delete" = "Delete an image"
"images:write" = "Upload or replace an image"
"images:read" = "  Read an image and its metadata"
"""
    text = 'description = "Users\' images"\nid = "image-store"\n' + reordered
    first, second = parse_manifest(DESIGN_EXAMPLE), parse_manifest(text)
    assert first.canonical() == second.canonical()
    assert first == second


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('description = "Users\' images"', 'description = "Users\' photos"'),
        ('"images:delete" = "Delete an image"', '"images:delete" = "Remove an image"'),
        ('viewer = ["images:read"]', 'viewer = ["images:read", "images:write"]'),
        ('permissions = ["tagging:tags:read"]', 'permissions = ["tagging:tags:*"]'),
        ('deferred = ["tagging:tags:write"]', "deferred = []"),
    ],
)
def test_canonical_differs_when_the_meaning_differs(old: str, new: str) -> None:
    changed = DESIGN_EXAMPLE.replace(old, new, 1)
    assert changed != DESIGN_EXAMPLE
    assert parse_manifest(changed).canonical() != parse_manifest(DESIGN_EXAMPLE).canonical()


@pytest.mark.parametrize(
    "header",
    ['[role]\nviewer = ["images:read"]', '[role.viewer]\npermissions = ["images:read"]', "[[role]]\nx = 1"],
)
def test_a_misspelt_section_names_its_line_and_the_closest_section(header: str) -> None:
    error = refused(f'id = "svc"\n\n[permissions]\n"images:read" = "Read"\n\n{header}\n')
    assert_points_at(error, "svc.toml", 6, "role")
    assert str(error) == (
        "svc.toml:6: role: unknown key; did you mean roles?"
        " a manifest has id, description, permissions, roles, needs, on_behalf"
    )
