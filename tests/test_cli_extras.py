"""Charging from the command line with the `sql` extra alone: emails need nothing more;
a mobile number needs `phonenumbers` (the `http` extra), and the command says so."""

from __future__ import annotations

from pathlib import Path

from test_packaging import HTTP_EXTRA, assert_says_install, credits_without


def test_without_the_http_extra_emails_are_charged_and_mobiles_name_the_extra(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    for args in (["db", "upgrade"], ["subscribe", "acme", "boost"]):
        done = credits_without(HTTP_EXTRA, *args, "--db", url)
        assert done.returncode == 0, done.stderr
    emails = credits_without(
        HTTP_EXTRA, "unlock", "acme", "ann@corp.com", "--demo-verifier", "--db", url
    )
    assert emails.returncode == 0, emails.stderr
    assert "charged" in emails.stdout
    leads = tmp_path / "leads.csv"
    leads.write_text("email\nbob@corp.com\n", encoding="utf-8")
    from_file = credits_without(
        HTTP_EXTRA, "unlock", "acme", str(leads), "--demo-verifier", "--db", url
    )
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.splitlines()[1] == "bob@corp.com,2,charged"
    mobile = credits_without(
        HTTP_EXTRA, "unlock", "acme", "+44 7700 900123", "--demo-verifier", "--db", url
    )
    assert_says_install(mobile, "http")
    assert "reading mobile numbers" in mobile.stderr
