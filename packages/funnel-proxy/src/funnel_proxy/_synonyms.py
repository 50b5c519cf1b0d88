"""A small curated thesaurus of the words people use for what tools do.

A query that shares no word with the right tool ("rename" for ``move_file``, "euros" for
an exchange rate, "combine" for merge) is found through these groups: every word of a
group reaches the others at a reduced weight (see ``_search``). The groups are the
everyday vocabulary of tool catalogues (files, version control, messaging, calendars,
payments, weather, maps, databases, browsers), written as a person would say them; they
are stemmed when first used, so "renaming" and "renamed" reach them too.

A group is a set of near-synonyms, not a topic: "rain" sits with "weather" and
"forecast" because asking about rain is asking for a forecast, but "file" does not sit
with "directory".
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping
from typing import Final

from funnel_proxy._text import stem, tokens

__all__ = ["synonyms"]

_GROUPS: Final = """
create make new add generate build start open set-up register
delete remove erase drop destroy discard purge trash
update edit modify change alter patch amend revise
rename move relocate
copy duplicate clone fork
list enumerate show all browse
search find lookup look-up query seek locate discover
read get fetch retrieve view open load obtain inspect display
write save store put overwrite
download fetch pull grab
upload push publish
send post deliver submit transmit
reply respond answer
message chat dm post note
comment remark reply annotate
email mail e-mail inbox gmail
draft compose
directory folder dir
file document doc
image picture photo photograph png jpg jpeg screenshot
video clip movie youtube
audio sound music recording
transcript captions subtitles
text content body contents
merge combine join concatenate unite
split divide separate chop
compress zip gzip archive shrink
extract pull-out parse
convert transform translate change exchange
rotate turn flip
pdf pdfs
page pages
issue bug ticket defect problem
pull-request pr prs merge-request
repository repo repos project
branch branches
commit commits revision changeset
diff difference changes compare
stage add index
status state
log logs history
error exception crash failure fault
stack-trace traceback backtrace
container docker
image-tag tag version
weather forecast rain snow snowing raining temperature storm wind sunny humidity climate precipitation
alert warning advisory
time clock hour date now today
timezone zone tz
calendar schedule agenda
event meeting appointment call standup
free available availability slot
cancel delete remove
reschedule move update
money payment pay charge bill invoice billing
refund reimburse chargeback money-back
customer client buyer
balance funds
currency money euro euros dollar dollars usd eur gbp yen pound exchange forex
rate price cost
location place address venue spot
coordinates latitude longitude geocode lat lng
directions route navigate drive driving walk walking
distance far travel
elevation altitude height
restaurant food cafe bar shop store business
recipe cook cooking meal dish dinner lunch breakfast food
web internet online website site
url link address href
page webpage site
browser chrome puppeteer
click press tap
type fill enter input
screenshot capture snapshot
select choose pick dropdown
hover mouseover
javascript js script code
database db sql
table tables
query select sql
insert add write
row rows record records
schema columns structure describe
user users member members people person colleague
profile bio account
channel room
workspace team org organization
reaction emoji react
thread conversation
notion wiki page
knowledge memory graph
entity entities node nodes person thing
relation relations link relationship connect
observation observations fact facts note
remember store save memorize
forget delete remove
dataset datasets data catalog catalogue
government gov public open-data agency agencies
sum add plus total
echo repeat say
environment env variables
random simulate simulated
progress long-running
research investigate
logging log logs
toggle switch enable disable turn
help info information details
summary overview describe
"""


@functools.cache
def _table() -> Mapping[str, tuple[str, ...]]:
    # Dicts, not sets: the order stays as written, whatever the hash seed.
    table: defaultdict[str, dict[str, None]] = defaultdict(dict)
    for line in _GROUPS.strip().splitlines():
        # A hyphenated entry ("pull-request") is a phrase: its stems joined by spaces.
        group = dict.fromkeys(" ".join(stem(t) for t in tokens(word)) for word in line.split())
        for word in group:
            table[word].update((other, None) for other in group if other != word)
    return {word: tuple(others) for word, others in table.items()}


def synonyms(term: str) -> tuple[str, ...]:
    """The stems a query term reaches through the thesaurus, as written (never ``term``).

    A phrase is its stems joined by spaces (``pr`` → ``pull request``); the first
    phrase of a group is its usual meaning.

    Example:
        >>> synonyms(stem("rename"))
        ('move', 'reloc')
        >>> synonyms("pr")[:2]
        ('pull request', 'prs')
    """
    return _table().get(term, ())
