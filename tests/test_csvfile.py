"""Tests of ``dispatcher.csvfile``: the tenants a CSV file lists, read without a
database. ``tests/test_cli.py`` drives ``tenantctl import`` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.csvfile import BadFile, RowError, TenantFile, read_tenants
from dispatcher.rules import TenantRules

RULES = TenantRules()

DEEP_UNCLOSED = "[" * 100_000  # more than Python's recursion limit, and not JSON
DEEP_CLOSED = "[" * 5_000 + "]" * 5_000  # JSON, deeper than Python can parse
DEEP_PARSEABLE = "[" * 100 + "]" * 100  # parses, deeper than the config limit


def write_csv(path: Path, text: str) -> Path:
    """Write ``text`` as is: the test controls every line ending."""
    path.write_text(text, encoding="utf-8", newline="")
    return path


def read(tmp_path: Path, text: str, rules: TenantRules = RULES) -> TenantFile:
    return read_tenants(write_csv(tmp_path / "t.csv", text), rules)


def messages(listed: TenantFile) -> dict[int, str]:
    """``{line: message}`` of the file's bad rows."""
    assert all(error.file == listed.file for error in listed.errors)
    return {error.line: error.message for error in listed.errors}


def test_read_tenants(tmp_path: Path) -> None:
    listed = read(
        tmp_path,
        "slug,owner_email,owner_name,subdomain,path_prefix,domains,config\n"  # 1
        'acme,owner@acme.test,Ann Owner,acme,,shop.acme.test acme.test,"{""plan"": '
        '""pro"", ""seats"": 5}"\n'  # 2
        "\n"  # 3
        "Beta,Owner@Beta.Test,,beta,beta,,\n"  # 4
        "gamma,g@gamma.test,,,,  gamma.test  ,{}\n",  # 5
    )

    assert listed.errors == ()
    assert [row.line for row in listed.rows] == [2, 4, 5]
    acme, beta, gamma = (row.spec for row in listed.rows)
    assert acme == RULES.new_tenant(
        "acme",
        owner_email="owner@acme.test",
        owner_name="Ann Owner",
        subdomain="acme",
        domains=["shop.acme.test", "acme.test"],
        config={"plan": "pro", "seats": 5},
    )
    assert (beta.slug, beta.owner_email, beta.owner_name) == (
        "beta",
        "owner@beta.test",
        None,
    )
    assert (beta.subdomain, beta.path_prefix, beta.domains) == ("beta", "beta", ())
    assert dict(beta.config) == {}
    assert gamma.domains == ("gamma.test",)
    assert dict(gamma.config) == {}


def test_the_columns_may_come_in_any_order(tmp_path: Path) -> None:
    listed = read(tmp_path, "owner_email,slug\no@acme.test,acme\n")

    assert [(row.spec.slug, row.spec.owner_email) for row in listed.rows] == [
        ("acme", "o@acme.test")
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(
            "Bad_Slug,o@x.test,,",
            "slug 'Bad_Slug' must be 1-63 characters of a-z, 0-9 and '-', "
            "not starting or ending with '-'",
            id="slug",
        ),
        pytest.param(
            "bad-email,nobody,,",
            "e-mail 'nobody' must look like 'name@example.com'",
            id="e-mail",
        ),
        pytest.param(
            "reserved,o@x.test,www,",
            "subdomain 'www' is reserved; choose another name",
            id="reserved-subdomain",
        ),
        pytest.param(
            "bad-json,o@x.test,,{oops",
            "config '{oops' is not JSON: Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1)",
            id="config-not-json",
        ),
        pytest.param(
            "nan,o@x.test,,NaN",
            "config 'NaN' is not JSON: NaN is not JSON",
            id="config-nan",
        ),
        pytest.param(
            'not-object,o@x.test,,"[1, 2]"',
            "config '[1, 2]' must be a JSON object",
            id="config-not-an-object",
        ),
        pytest.param(
            "too-many,o@x.test,,,extra",
            "the row has more fields than the header",
            id="more-fields",
        ),
        pytest.param(
            "good,O@X.test,other,",
            "tenant 'good' is already on line 2",
            id="same-slug",
        ),
        pytest.param(
            "GOOD,o@x.test,other,",
            "tenant 'good' is already on line 2",
            id="same-slug-other-case",
        ),
    ],
)
def test_a_bad_row_names_its_line_and_rule(
    tmp_path: Path, row: str, message: str
) -> None:
    listed = read(
        tmp_path,
        f"slug,owner_email,subdomain,config\ngood,o@x.test,good,\n{row}\n"
        "after,o@x.test,,\n",
    )

    assert listed.errors == (RowError(listed.file, 3, message),)
    assert str(listed.errors[0]) == f"{listed.file}:3: {message}"
    assert [(row.line, row.spec.slug) for row in listed.rows] == [
        (2, "good"),
        (4, "after"),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_line_numbers_count_physical_lines(tmp_path: Path, newline: str) -> None:
    # A name may not hold a line break; a JSON config may.
    lines = [
        "slug,owner_email,config",  # 1
        'one,one@x.test,"{""a"":',  # 2
        '1}"',  # 3
        "",  # 4
        "Bad_One,o@x.test,",  # 5
        ",,",  # 6: no values at all, like a blank line
        'two,two@x.test,"{',  # 7
        '""b"": 2',  # 8
        '}"',  # 9
        "Bad_Two,o@x.test,",  # 10
        "",  # 11
    ]
    listed = read(tmp_path, newline.join(lines) + newline)

    errors = messages(listed)
    assert sorted(errors) == [5, 10]
    assert "'Bad_One'" in errors[5]
    assert "'Bad_Two'" in errors[10]
    # A row is numbered by the line it ends on.
    assert [(row.line, row.spec.slug) for row in listed.rows] == [
        (3, "one"),
        (9, "two"),
    ]
    assert [dict(row.spec.config) for row in listed.rows] == [{"a": 1}, {"b": 2}]


def test_a_utf8_file_with_a_bom(tmp_path: Path) -> None:
    file = tmp_path / "excel.csv"
    file.write_text(
        "slug,owner_email,owner_name\nacme,o@acme.test,Zoë Ünal\n",
        encoding="utf-8-sig",
    )
    assert file.read_bytes().startswith(b"\xef\xbb\xbf")

    listed = read_tenants(file, RULES)

    assert listed.errors == ()
    assert [row.spec.owner_name for row in listed.rows] == ["Zoë Ünal"]


def test_deeply_nested_json_is_a_bad_row(tmp_path: Path) -> None:
    listed = read(
        tmp_path,
        "slug,owner_email,config\n"
        f"deep,o@x.test,{DEEP_UNCLOSED}\n"
        f'closed,o@x.test,"{DEEP_CLOSED}"\n'
        f'parseable,o@x.test,"{{""k"": {DEEP_PARSEABLE}}}"\n'
        "good,o@x.test,\n",
    )

    errors = messages(listed)
    assert sorted(errors) == [2, 3, 4]
    assert all("nested" in error and len(error) < 300 for error in errors.values())
    assert [row.spec.slug for row in listed.rows] == ["good"]


def test_the_rules_are_the_callers(tmp_path: Path) -> None:
    text = "slug,owner_email,subdomain,domains\nacme,o@x.test,acme,shop.example.com\n"

    assert messages(read(tmp_path, text)) == {}
    assert messages(read(tmp_path, text, TenantRules(reserved={"acme"}))) == {
        2: "subdomain 'acme' is reserved; choose another name"
    }
    assert messages(read(tmp_path, text, TenantRules(base_domain="example.com"))) == {
        2: "host name 'shop.example.com' is under the base domain 'example.com'; "
        "use a subdomain instead"
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"slug,owner_email,colour\nacme,o@acme.test,red\n",
            "{file}: unknown column(s) 'colour'; use slug, owner_email, "
            "owner_name, subdomain, path_prefix, domains, config, data_server",
            id="unknown-column",
        ),
        pytest.param(
            b"slug,subdomain\nacme,acme\n",
            "{file}: the header row must name the column(s) owner_email",
            id="no-owner-email-column",
        ),
        pytest.param(
            b"owner_email\no@acme.test\n",
            "{file}: the header row must name the column(s) slug",
            id="no-slug-column",
        ),
        pytest.param(
            b"",
            "{file}: the header row must name the column(s) owner_email, slug",
            id="empty-file",
        ),
        pytest.param(
            b"slug,owner_email\nacme,o@acme.test\nb\xe9ta,o@beta.test\n",
            "{file} is not UTF-8 text: 'utf-8' codec can't decode byte 0xe9 in "
            "position 35: invalid continuation byte",
            id="latin-1",
        ),
        pytest.param(
            b"slug,owner_email,config\nacme,o@acme.test," + b"x" * 200_000 + b"\n",
            "{file} is not valid CSV: field larger than field limit (131072)",
            id="field-too-large",
        ),
        # The column named twice: csv.DictReader keeps the last of two
        # same-named fields, so a row would be read other than it looks.
        pytest.param(
            b"slug,owner_email,slug\nv0,v1,v2\n",
            "{file}: the header row names column(s) 'slug' more than once",
            id="slug-twice",
        ),
        pytest.param(
            b"slug,owner_email,config,config\nv0,v1,v2,v3\n",
            "{file}: the header row names column(s) 'config' more than once",
            id="config-twice",
        ),
        pytest.param(
            b"slug,domains,owner_email,domains,domains\nv0,v1,v2,v3,v4\n",
            "{file}: the header row names column(s) 'domains' more than once",
            id="three-times",
        ),
    ],
)
def test_a_bad_file_is_refused_whole(
    tmp_path: Path, content: bytes, message: str
) -> None:
    file = tmp_path / "tenants.csv"
    file.write_bytes(content)

    with pytest.raises(BadFile) as refused:
        read_tenants(file, RULES)

    assert str(refused.value) == message.format(file=file)
    assert isinstance(refused.value, ValueError)


def test_a_row_error_reads_as_file_line_message() -> None:
    error = RowError(Path("t.csv"), 7, "tenant 'acme' exists")

    assert str(error) == "t.csv:7: tenant 'acme' exists"


def test_too_many_domains_is_a_bad_row(tmp_path: Path) -> None:
    listed = read(
        tmp_path,
        "slug,owner_email,domains\n"
        "many,o@x.test,a.test b.test c.test\n"
        "good,o@x.test,a.test b.test\n",
        TenantRules(max_domains=2),
    )

    assert messages(listed) == {
        2: "tenant 'many' would have 3 custom domains; the limit is 2 "
        "(TenantRegistry's max_domains)"
    }
    assert [row.spec.slug for row in listed.rows] == ["good"]


# -- data_server: where a tenant's data lives (issue 11) --------------------------


def test_data_server_column(tmp_path: Path) -> None:
    listed = read(
        tmp_path,
        "slug,owner_email,data_server\nacme,o@acme.test,eu\nbeta,o@beta.test,\n",
    )

    assert listed.errors == ()
    assert [(row.spec.slug, row.spec.data_server) for row in listed.rows] == [
        ("acme", "eu"),
        ("beta", None),
    ]


def test_a_bad_data_server_names_its_line_and_rule(tmp_path: Path) -> None:
    listed = read(
        tmp_path,
        "slug,owner_email,data_server\nacme,o@acme.test,EU West\nbeta,o@b.test,us\n",
    )

    [error] = listed.errors
    assert error.line == 2
    assert "'EU West'" in error.message
    assert "^[a-z][a-z0-9_-]{0,62}$" in error.message
    assert [row.spec.slug for row in listed.rows] == ["beta"]
