import pytest

from funnel_proxy import ConfigError
from funnel_proxy._secrets import parse_dotenv

CASES = [
    ("A=1", {"A": "1"}),
    ("A=1\nB=2\n", {"A": "1", "B": "2"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("\ufeffA=1", {"A": "1"}),
    ("# comment\n\n  # indented comment\nA=1", {"A": "1"}),
    ("export A=1", {"A": "1"}),
    ("export  A = 1 ", {"A": "1"}),
    ("exportA=1", {"exportA": "1"}),
    ("A=", {"A": ""}),
    ("A=  spaced value  ", {"A": "spaced value"}),
    ("A=value # comment", {"A": "value"}),
    ("A=value#not-a-comment", {"A": "value#not-a-comment"}),
    ("A=#comment-only", {"A": ""}),
    ("A='single $B \\n'", {"A": "single $B \\n"}),
    ("A='multi\nline'", {"A": "multi\nline"}),
    ('A="double\\nescape\\t\\"q\\" \\\\ \\$B \\u00e9"', {"A": 'double\nescape\t"q" \\ $B é'}),
    ('A="multi\nline"  # comment', {"A": "multi\nline"}),
    ('A="unknown \\x escape"', {"A": "unknown \\x escape"}),
    ('A="a # not a comment"', {"A": "a # not a comment"}),
    ("A=1\nB=$A-${A}", {"A": "1", "B": "1-1"}),
    ('A=1\nB="${A}x"', {"A": "1", "B": "1x"}),
    ("B=${MISSING}", {"B": ""}),
    ("B=${MISSING:-dflt}", {"B": "dflt"}),
    ("B=${MISSING:dflt}", {"B": "dflt"}),
    ("A=\nB=${A:-dflt}", {"A": "", "B": "dflt"}),
    ("B=${FROM_ENV}", {"B": "env"}),
    ("FROM_ENV=file\nB=$FROM_ENV", {"FROM_ENV": "file", "B": "file"}),
    ("B=cost $5 and $", {"B": "cost $5 and $"}),
    ("A=line \\\ncontinued", {"A": "line continued"}),
    ("A=1\nA=2", {"A": "2"}),
    ("my.key=1", {"my.key": "1"}),
    ("A=\"x\"\nB='y'", {"A": "x", "B": "y"}),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_dotenv_dialect(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text, environ={"FROM_ENV": "env"}) == expected


ERRORS = [
    ("A", 'x.env: line 1: expected "=" after "A"'),
    ("\n\n=1", "x.env: line 3: expected KEY=value (keys are letters, digits, _ and .)"),
    ("A=1\nB='open\nC=2", "x.env: line 2: unterminated single quote"),
    ('A="open', "x.env: line 1: unterminated double quote"),
    ('A="x" trailing', "x.env: line 1: unexpected text after the closing quote"),
    ('A="\\u12"', "x.env: line 1: invalid \\u escape (want four hex digits)"),
    ("A=${B", 'x.env: line 1: unterminated "${"'),
    ("A=${1B}", 'x.env: line 1: invalid variable name "1B"'),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_dotenv_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dotenv(text, source="x.env")
    assert str(caught.value) == message


def test_parse_dotenv_without_environ_sees_only_the_file() -> None:
    assert parse_dotenv("B=${HOME}") == {"B": ""}
