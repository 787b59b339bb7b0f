"""Country names as audit logs write them -> ISO 3166-1 alpha-2 codes (the ``country`` conversion).

The names are the tz database's iso3166.tab (public domain) plus the spellings sources use instead:
MaxMind's as Okta reports them ("United States", "South Korea"), ISO's formal names ("Korea, Republic
of"), and common short forms. Lookup ignores case, accents, punctuation, "&" vs "and" and "St" vs "Saint".
"""

from __future__ import annotations

import re
import unicodedata

_TABLE = """\
AD	Andorra
AE	United Arab Emirates
AF	Afghanistan
AG	Antigua & Barbuda
AI	Anguilla
AL	Albania
AM	Armenia
AO	Angola
AQ	Antarctica
AR	Argentina
AS	Samoa (American)	American Samoa
AT	Austria
AU	Australia
AW	Aruba
AX	Åland Islands
AZ	Azerbaijan
BA	Bosnia & Herzegovina
BB	Barbados
BD	Bangladesh
BE	Belgium
BF	Burkina Faso
BG	Bulgaria
BH	Bahrain
BI	Burundi
BJ	Benin
BL	St Barthelemy
BM	Bermuda
BN	Brunei	Brunei Darussalam
BO	Bolivia	Bolivia, Plurinational State of
BQ	Caribbean NL	Bonaire, Sint Eustatius, and Saba
BR	Brazil
BS	Bahamas	The Bahamas
BT	Bhutan
BV	Bouvet Island
BW	Botswana
BY	Belarus
BZ	Belize
CA	Canada
CC	Cocos (Keeling) Islands
CD	Congo (Dem. Rep.)	Democratic Republic of the Congo	DR Congo	Congo, The Democratic Republic of the
CF	Central African Rep.	Central African Republic
CG	Congo (Rep.)	Republic of the Congo	Congo
CH	Switzerland
CI	Côte d'Ivoire	Ivory Coast
CK	Cook Islands
CL	Chile
CM	Cameroon
CN	China
CO	Colombia
CR	Costa Rica
CU	Cuba
CV	Cape Verde	Cabo Verde
CW	Curaçao
CX	Christmas Island
CY	Cyprus
CZ	Czech Republic	Czechia
DE	Germany
DJ	Djibouti
DK	Denmark
DM	Dominica
DO	Dominican Republic
DZ	Algeria
EC	Ecuador
EE	Estonia
EG	Egypt
EH	Western Sahara
ER	Eritrea
ES	Spain
ET	Ethiopia
FI	Finland
FJ	Fiji
FK	Falkland Islands
FM	Micronesia	Federated States of Micronesia
FO	Faroe Islands
FR	France
GA	Gabon
GB	Britain (UK)	United Kingdom	Great Britain	UK
GD	Grenada
GE	Georgia
GF	French Guiana
GG	Guernsey
GH	Ghana
GI	Gibraltar
GL	Greenland
GM	Gambia	The Gambia
GN	Guinea
GP	Guadeloupe
GQ	Equatorial Guinea
GR	Greece
GS	South Georgia & the South Sandwich Islands
GT	Guatemala
GU	Guam
GW	Guinea-Bissau
GY	Guyana
HK	Hong Kong
HM	Heard Island & McDonald Islands
HN	Honduras
HR	Croatia
HT	Haiti
HU	Hungary
ID	Indonesia
IE	Ireland
IL	Israel
IM	Isle of Man
IN	India
IO	British Indian Ocean Territory
IQ	Iraq
IR	Iran	Iran, Islamic Republic of
IS	Iceland
IT	Italy
JE	Jersey
JM	Jamaica
JO	Jordan
JP	Japan
KE	Kenya
KG	Kyrgyzstan
KH	Cambodia
KI	Kiribati
KM	Comoros
KN	St Kitts & Nevis
KP	Korea (North)	North Korea
KR	Korea (South)	South Korea	Republic of Korea	Korea, Republic of
KW	Kuwait
KY	Cayman Islands
KZ	Kazakhstan
LA	Laos	Lao People's Democratic Republic
LB	Lebanon
LC	St Lucia
LI	Liechtenstein
LK	Sri Lanka
LR	Liberia
LS	Lesotho
LT	Lithuania
LU	Luxembourg
LV	Latvia
LY	Libya
MA	Morocco
MC	Monaco
MD	Moldova	Moldova, Republic of	Republic of Moldova
ME	Montenegro
MF	St Martin (French)	Saint Martin
MG	Madagascar
MH	Marshall Islands
MK	North Macedonia	Macedonia
ML	Mali
MM	Myanmar (Burma)	Myanmar	Burma
MN	Mongolia
MO	Macau	Macao
MP	Northern Mariana Islands
MQ	Martinique
MR	Mauritania
MS	Montserrat
MT	Malta
MU	Mauritius
MV	Maldives
MW	Malawi
MX	Mexico
MY	Malaysia
MZ	Mozambique
NA	Namibia
NC	New Caledonia
NE	Niger
NF	Norfolk Island
NG	Nigeria
NI	Nicaragua
NL	Netherlands	The Netherlands
NO	Norway
NP	Nepal
NR	Nauru
NU	Niue
NZ	New Zealand
OM	Oman
PA	Panama
PE	Peru
PF	French Polynesia
PG	Papua New Guinea
PH	Philippines
PK	Pakistan
PL	Poland
PM	St Pierre & Miquelon
PN	Pitcairn
PR	Puerto Rico
PS	Palestine	Palestine, State of	Palestinian Territory
PT	Portugal
PW	Palau
PY	Paraguay
QA	Qatar
RE	Réunion
RO	Romania
RS	Serbia
RU	Russia	Russian Federation
RW	Rwanda
SA	Saudi Arabia
SB	Solomon Islands
SC	Seychelles
SD	Sudan
SE	Sweden
SG	Singapore
SH	St Helena
SI	Slovenia
SJ	Svalbard & Jan Mayen
SK	Slovakia
SL	Sierra Leone
SM	San Marino
SN	Senegal
SO	Somalia
SR	Suriname
SS	South Sudan
ST	Sao Tome & Principe
SV	El Salvador
SX	St Maarten (Dutch)	Sint Maarten
SY	Syria	Syrian Arab Republic
SZ	Eswatini (Swaziland)	Eswatini	Swaziland
TC	Turks & Caicos Is	Turks and Caicos Islands
TD	Chad
TF	French S. Terr.	French Southern Territories
TG	Togo
TH	Thailand
TJ	Tajikistan
TK	Tokelau
TL	East Timor	Timor-Leste
TM	Turkmenistan
TN	Tunisia
TO	Tonga
TR	Turkey	Türkiye
TT	Trinidad & Tobago
TV	Tuvalu
TW	Taiwan	Taiwan, Province of China
TZ	Tanzania	Tanzania, United Republic of
UA	Ukraine
UG	Uganda
UM	US minor outlying islands	U.S. Minor Outlying Islands
US	United States	United States of America	USA
UY	Uruguay
UZ	Uzbekistan
VA	Vatican City	Holy See
VC	St Vincent
VE	Venezuela	Venezuela, Bolivarian Republic of
VG	Virgin Islands (UK)	British Virgin Islands
VI	Virgin Islands (US)	U.S. Virgin Islands	United States Virgin Islands
VN	Vietnam	Viet Nam
VU	Vanuatu
WF	Wallis & Futuna
WS	Samoa (western)	Samoa
YE	Yemen
YT	Mayotte
ZA	South Africa
ZM	Zambia
ZW	Zimbabwe
"""


def name_key(name: str) -> str:
    """The form a name is looked up in: lower case, no accents or punctuation, "and", "saint"."""
    text = re.sub("['\u2019`]", "", name)  # Cote d'Ivoire, Cote d\u2019Ivoire
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = text.replace("&", " and ")
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    text = re.sub(r"^the ", "", text)
    return re.sub(r"\bst\b", "saint", text)


def _build() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in _TABLE.splitlines():
        code, *names = line.split("\t")
        for name in names:
            table[name_key(name)] = code
    return table


COUNTRIES: dict[str, str] = _build()
CODES: frozenset[str] = frozenset(COUNTRIES.values())
