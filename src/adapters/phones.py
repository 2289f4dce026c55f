"""Phone numbers at the boundary: national formats into E.164 with `phonenumbers` (R12).

The core accepts only international form (`Contact.mobile("+44...")`); a caller that
writes "020 7946 0958" means a number of its own region, which only the boundary knows.
`parse_phone` is that translation. It refuses garbage with `MalformedContact`, so an API
answers 4xx and nothing is charged or stored.

Deliberately lenient about *validity*: a number is accepted when its length is possible
for its country. Whether it is a real, reachable mobile line is the verifier's question
(R11), answered in real time; the library's number-range metadata lags behind new
allocations, and refusing a real number at the boundary would hide it from verification.
"""

from __future__ import annotations

import phonenumbers

from credits_domain import Contact, InvalidRequest, MalformedContact

# phonenumbers itself refuses longer input; the bound here keeps error messages short.
MAX_PHONE_INPUT_LENGTH = 64


def check_region(region: object) -> str:
    """An ISO 3166-1 alpha-2 region code phonenumbers knows, upper-cased; raises
    InvalidRequest for anything else."""
    code = region.upper() if isinstance(region, str) else region
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidRequest(
            f"a region is an ISO 3166-1 alpha-2 code known to phonenumbers "
            f"('GB', 'US'), got {region!r}"
        )
    return str(code)


def parse_phone(raw: str, default_region: str | None) -> Contact:
    """A mobile `Contact` in E.164 from international or national notation.

    `default_region` is an ISO 3166-1 alpha-2 code ("GB", "US"): the region a number
    without a leading "+" (or international prefix) belongs to; None accepts only
    numbers in international form. An unknown region is a caller's mistake and raises
    `InvalidRequest`; an unreadable number raises `MalformedContact`.

    The trunk prefix some write after the country code, "+44 (0) 7700 900123", is
    dropped: it is the same datum as "+44 7700 900123" (R12).
    """
    region = None if default_region is None else check_region(default_region)
    if not isinstance(raw, str):
        raise MalformedContact("mobile", raw, "not a string")
    text = raw.strip()
    if not text:
        raise MalformedContact("mobile", raw, "empty")
    if len(text) > MAX_PHONE_INPUT_LENGTH:
        raise MalformedContact("mobile", raw, f"longer than {MAX_PHONE_INPUT_LENGTH} characters")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        national = not text.startswith("+")
        if region is None and national and exc.error_type == exc.INVALID_COUNTRY_CODE:
            raise MalformedContact(
                "mobile",
                raw,
                "no country code: write it in international form (+44 ...) or give the "
                "region of national numbers",
            ) from exc
        raise MalformedContact("mobile", raw, f"not a phone number ({exc})") from exc
    if number.extension:
        # E.164 has no extensions: two extensions of one line would collapse into one
        # datum (R12) and neither reaches a mobile handset.
        raise MalformedContact("mobile", raw, "extensions are not mobile numbers")
    if not phonenumbers.is_possible_number(number):
        where = phonenumbers.region_code_for_number(number) or region
        raise MalformedContact("mobile", raw, f"not a possible number for region {where}")
    return Contact.mobile(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
