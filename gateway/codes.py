"""Country and currency codes the gateway accepts."""

from __future__ import annotations

import string

import pycountry

# ISO 3166-1 reserves these alpha-2 codes for user assignment; payment data
# uses them for hidden or unknown countries (ZZ: unknown).
_USER_ASSIGNED_COUNTRIES = (
    {"AA", "ZZ"}
    | {f"Q{c}" for c in string.ascii_uppercase[string.ascii_uppercase.index("M") :]}
    | {f"X{c}" for c in string.ascii_uppercase}
)

COUNTRIES: frozenset[str] = frozenset(
    {c.alpha_2 for c in pycountry.countries} | _USER_ASSIGNED_COUNTRIES
)

# Rule: a currency is accepted when it is a current ISO 4217 code, or one of
# the codes below that card and exchange-rate feeds still carry: withdrawn
# ISO codes (legacy records) and widely used unofficial codes. Each is kept
# as sent, never mapped to another currency. Anything else is refused.
LEGACY_AND_UNOFFICIAL_CURRENCIES = frozenset(
    {
        "BYR",  # Belarusian ruble until 2016
        "LTL",  # Lithuanian litas until 2015
        "MRO",  # Mauritanian ouguiya until 2018
        "STD",  # Sao Tome and Principe dobra until 2018
        "VEF",  # Venezuelan bolivar fuerte until 2018
        "ZWD",  # Zimbabwean dollar until 2009
        "GGP",  # Guernsey pound
        "IMP",  # Isle of Man pound
        "JEP",  # Jersey pound
        "TVD",  # Tuvaluan dollar
        "NIS",  # Israeli new shekel, common non-ISO spelling of ILS
        "SPL",  # Seborga luigino
    }
)

CURRENCIES: frozenset[str] = (
    frozenset(c.alpha_3 for c in pycountry.currencies)
    | LEGACY_AND_UNOFFICIAL_CURRENCIES
)
